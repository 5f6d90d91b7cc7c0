//! The fuzz-filled Kubernetes v1.33.0 objects (`testdata/v1.33.0/`): every field set,
//! many with odd values. Whatever the injector does not understand it must carry
//! through untouched.

mod support;

use serde_json::{Value, json};
use support::{apply, assert_superset, names, typed};
use trellis_injector::{
    MeshConfig, Outcome, PROXY_CONTAINER, PROXY_INIT_CONTAINER, Request, SidecarMode, SkipReason,
    inject,
};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/testdata/v1.33.0/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture pod, which the fuzzer gave `hostNetwork: true`, as an ordinary pod.
fn fixture_pod() -> Value {
    let mut pod = fixture("core.v1.Pod.json");
    pod["spec"]["hostNetwork"] = json!(false);
    pod
}

fn injected(pod: &Value, config: &MeshConfig) -> Value {
    match inject(pod, &Request::Explicit { namespace: None }, config).expect("injectable") {
        Outcome::Injected { patch, .. } => apply(pod, &patch),
        Outcome::Skipped(reason) => panic!("skipped: {reason}"),
    }
}

#[test]
fn the_fuzzed_pod_keeps_every_field_and_becomes_a_valid_meshed_pod() {
    let pem = rcgen::generate_simple_self_signed(vec!["mesh-root.test".into()])
        .unwrap()
        .cert
        .pem();
    let modes = [SidecarMode::Native, SidecarMode::Classic]
        .into_iter()
        .flat_map(|sidecar| [(sidecar, None), (sidecar, Some(pem.clone()))]);
    for (sidecar, trust_anchors_pem) in modes {
        let config = MeshConfig {
            sidecar,
            trust_anchors_pem,
            ..MeshConfig::default()
        };
        let pod = fixture_pod();
        let patched = injected(&pod, &config);
        assert_superset(&pod, &patched);
        assert_eq!(
            patched["metadata"]["annotations"]["annotationsKey"],
            "annotationsValue"
        );
        match sidecar {
            SidecarMode::Native => {
                assert_eq!(
                    names(&patched, "initContainers"),
                    [PROXY_INIT_CONTAINER, PROXY_CONTAINER, "nameValue"]
                );
                assert_eq!(names(&patched, "containers"), ["nameValue"]);
            }
            SidecarMode::Classic => {
                assert_eq!(
                    names(&patched, "initContainers"),
                    [PROXY_INIT_CONTAINER, "nameValue"]
                );
                assert_eq!(
                    names(&patched, "containers"),
                    [PROXY_CONTAINER, "nameValue"]
                );
            }
        }
        let typed = typed(&patched);
        let spec = typed.spec.expect("spec");
        assert_eq!(
            spec.init_containers.expect("init")[0].name,
            PROXY_INIT_CONTAINER
        );
        // Injecting the result again changes nothing.
        let again = inject(&patched, &Request::Explicit { namespace: None }, &config).unwrap();
        assert_eq!(again, Outcome::Skipped(SkipReason::AlreadyInjected));
        assert_eq!(apply(&patched, &again.patch()), patched);
    }
}

#[test]
fn the_fuzzed_pod_as_sent_is_host_network_and_is_left_alone() {
    let pod = fixture("core.v1.Pod.json");
    assert_eq!(
        inject(
            &pod,
            &Request::Explicit { namespace: None },
            &MeshConfig::default()
        )
        .unwrap(),
        Outcome::Skipped(SkipReason::HostNetwork)
    );
}

#[test]
fn the_fuzzed_deployment_template_keeps_every_field() {
    let mut deployment = fixture("apps.v1.Deployment.json");
    deployment["spec"]["template"]["spec"]["hostNetwork"] = json!(false);
    let original = deployment.clone();
    let template = &deployment["spec"]["template"];
    let Outcome::Injected { patch, .. } = inject(
        template,
        &Request::Explicit { namespace: None },
        &MeshConfig::default(),
    )
    .unwrap() else {
        panic!("the template was not injected");
    };
    let patched_template = apply(template, &patch);
    deployment["spec"]["template"] = patched_template.clone();

    assert_superset(&original, &deployment);
    assert_eq!(
        names(&patched_template, "initContainers"),
        [PROXY_INIT_CONTAINER, PROXY_CONTAINER, "nameValue"]
    );
    let typed: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(deployment.clone()).expect("a valid Deployment");
    let template_spec = typed
        .spec
        .expect("spec")
        .template
        .spec
        .expect("template spec");
    assert_eq!(
        template_spec.init_containers.expect("init")[1].name,
        PROXY_CONTAINER
    );

    let again = inject(
        &patched_template,
        &Request::Explicit { namespace: None },
        &MeshConfig::default(),
    )
    .unwrap();
    assert_eq!(again, Outcome::Skipped(SkipReason::AlreadyInjected));
}

#[test]
fn the_superset_check_notices_a_lost_field_a_changed_value_and_a_reordered_list() {
    let pod = fixture_pod();
    let check = |mutate: &dyn Fn(&mut Value)| {
        let mut changed = pod.clone();
        mutate(&mut changed);
        std::panic::catch_unwind(|| assert_superset(&pod, &changed)).is_err()
    };
    assert!(check(&|p| {
        p["spec"]["initContainers"][0]
            .as_object_mut()
            .unwrap()
            .remove("workingDir");
    }));
    assert!(check(
        &|p| p["metadata"]["annotations"]["annotationsKey"] = json!("other")
    ));
    assert!(check(&|p| p["spec"]["containers"][0]["args"] = json!([])));
    assert!(!check(&|_| {}));
    // Lists may gain elements anywhere, but keep theirs in order.
    let list = json!({"l": [1, 2]});
    assert_superset(&list, &json!({"l": [0, 1, 9, 2]}));
    let reordered = std::panic::catch_unwind(|| assert_superset(&list, &json!({"l": [2, 1]})));
    assert!(reordered.is_err());
}
