//! The injector's mesh config as the chart renders it (the ConfigMap
//! `trellis-mesh-config`), by Helm and by `meshctl install` alike: every documented
//! `injector.meshConfig` value renders a config the injector loads, the values the
//! chart fills in from shared ones are refused there rather than written twice, and a
//! pod injected with the rendered config can start in the mesh.

mod support;

use std::collections::BTreeMap;

use support::chart::{
    Pems, assert_same_objects, assert_valid, helm_template, meshctl_install, objects, succeeded,
    tools,
};
use support::text;
use trellis_injector::{MeshConfig, Outcome, Request, inject};

/// The mesh config inside a rendered stream, as the injector loads it.
fn mesh_config(stream: &str) -> (serde_yaml_ng::Value, Result<MeshConfig, String>) {
    let (_, config_map) = objects(stream)
        .into_iter()
        .find(|(key, _)| key == "ConfigMap trellis-system/trellis-mesh-config")
        .expect("the ConfigMap trellis-mesh-config");
    // objects() has parsed the YAML inside the ConfigMap.
    let yaml = config_map["data"]["mesh-config.yaml"].clone();
    let loaded = MeshConfig::from_yaml(&serde_yaml_ng::to_string(&yaml).unwrap())
        .map_err(|error| error.to_string());
    (yaml, loaded)
}

#[test]
fn a_pod_injected_with_the_installed_mesh_config_carries_the_trust_anchors() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("anchors");
    let anchors = std::fs::read_to_string(pems.dir.join("anchors.pem")).unwrap();
    let helm = succeeded("helm template", helm_template(&tools, &pems.flags(&[])));
    let meshctl = succeeded("meshctl install", meshctl_install(&pems.flags(&[])));
    for (who, stream) in [("helm", &helm), ("meshctl", &meshctl)] {
        let (_, config_map) = objects(stream)
            .into_iter()
            .find(|(key, _)| key == "ConfigMap trellis-system/trellis-mesh-config")
            .unwrap_or_else(|| panic!("{who}: no trellis-mesh-config"));
        // objects() has parsed the YAML inside the ConfigMap.
        let mesh_config = &config_map["data"]["mesh-config.yaml"];
        assert_eq!(
            mesh_config["trustAnchorsPem"].as_str(),
            Some(anchors.as_str()),
            "{who}: the injector's mesh config must carry identity.trustAnchorsPEM"
        );
        let config = MeshConfig::from_yaml(&serde_yaml_ng::to_string(mesh_config).unwrap())
            .unwrap_or_else(|error| panic!("{who}: {error}"));

        // A pod created in a namespace that was only labelled: its proxy has the
        // anchors in its environment, and mounts nothing that namespace lacks.
        let pod = serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        });
        let labels = BTreeMap::from([("trellis.io/inject".to_owned(), "enabled".to_owned())]);
        let request = Request::Admission {
            namespace: "shop",
            namespace_labels: &labels,
        };
        let Outcome::Injected { patch, .. } = inject(&pod, &request, &config).unwrap() else {
            panic!("{who}: the pod was not injected");
        };
        let mut meshed = pod.clone();
        json_patch::patch(&mut meshed, &patch).unwrap();
        let proxy = &meshed["spec"]["initContainers"][1];
        assert_eq!(proxy["name"], "trellis-proxy");
        let env = proxy["env"].as_array().unwrap();
        assert!(
            env.contains(
                &serde_json::json!({"name": "TRELLIS_TRUST_ANCHORS_PEM", "value": anchors})
            ),
            "{who}: {env:?}"
        );
        let volumes = meshed["spec"]["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .all(|volume| volume.get("configMap").is_none()),
            "{who}: {volumes:?}"
        );
    }
}

#[test]
fn values_the_chart_fills_in_are_refused_under_mesh_config_by_helm_and_meshctl() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("refused");
    for (field, instead) in [
        ("trustDomain", "set trustDomain (top level) instead"),
        ("identityAudience", "set identity.tokenAudience instead"),
        ("trustAnchorsPem", "set identity.trustAnchorsPEM instead"),
        (
            "controllerAddr",
            "the chart sets it to its controller's Service",
        ),
    ] {
        let mut flags = pems.flags(&[]);
        flags.extend(["--set".to_owned(), format!("injector.meshConfig.{field}=x")]);
        for (who, output) in [
            ("helm", helm_template(&tools, &flags)),
            ("meshctl", meshctl_install(&flags)),
        ] {
            assert!(!output.status.success(), "{who} rendered {field} twice");
            let stderr = text(&output.stderr);
            let expected = format!("injector.meshConfig.{field}: {instead}");
            assert!(stderr.contains(&expected), "{who}: {stderr}");
        }
    }
}

#[test]
fn every_documented_mesh_config_value_renders_a_config_the_injector_loads() {
    let Some(tools) = tools() else { return };
    let pems = Pems::new("documented");
    // The values.yaml fields left commented out, and those set to non-defaults.
    std::fs::write(
        pems.dir.join("mesh.yaml"),
        "injector:\n  meshConfig:\n    sidecar: classic\n    \
         classicHoldCommand: [/bin/sh, -c, \"sleep 1\"]\n    \
         controllerIdentity: spiffe://example.org/ns/trellis-system/sa/trellis-controller\n    \
         proxyResources: {cpuLimit: \"1\"}\n    skipInboundPorts: \"25,8000-8100\"\n    \
         skipOutboundCidrs: 10.96.0.1/32\n",
    )
    .unwrap();
    std::fs::write(
        pems.dir.join("configmap-anchors.yaml"),
        "injector:\n  meshConfig:\n    trustAnchorsConfigMap: mesh-roots\n    trustAnchorsKey: roots.pem\n",
    )
    .unwrap();
    let cases = [
        ("the defaults", None),
        ("every other documented field", Some("mesh.yaml")),
        (
            "the anchors from a ConfigMap",
            Some("configmap-anchors.yaml"),
        ),
    ];
    for (case, file) in cases {
        let mut flags = pems.flags(&[]);
        if let Some(file) = file {
            flags.extend(["-f".to_owned(), pems.path(file)]);
        }
        let helm = succeeded(case, helm_template(&tools, &flags));
        let meshctl = succeeded(case, meshctl_install(&flags));
        assert_same_objects(&helm, &meshctl, case);
        assert_valid(&tools, case, &helm);
        let (yaml, loaded) = mesh_config(&helm);
        let config = loaded.unwrap_or_else(|error| panic!("{case}: {error}\n{yaml:?}"));
        match file {
            None => assert!(config.trust_anchors_pem.is_some()),
            Some("mesh.yaml") => {
                assert_eq!(config.proxy_resources.cpu_limit.as_deref(), Some("1"));
                assert!(config.controller_identity.is_some());
            }
            Some(_) => {
                // The proxies mount the operator's ConfigMap instead of inline anchors.
                assert_eq!(config.trust_anchors_pem, None, "{case}");
                assert_eq!(config.trust_anchors_config_map, "mesh-roots");
                assert_eq!(config.trust_anchors_key, "roots.pem");
            }
        }
    }
}
