//! One AdmissionReview in, one out: the webhook's answer, without sockets.
//!
//! [`read`] takes the body the API server posted and returns what [`crate::inject`]
//! needs: the review's `uid`, the namespace and the pod **as raw JSON**. The envelope
//! is checked with kube's `AdmissionReview` types, but the pod is taken out before
//! that, because a typed round trip would drop the fields the types do not know and
//! the patch must be made against exactly what the API server holds.
//!
//! [`answer`] writes the AdmissionReview the API server expects back, with the patch
//! base64-encoded (standard alphabet, padded) and `patchType: JSONPatch`: the API
//! server's `patch` is a Go `[]byte`, which JSON carries as base64. It is built here
//! rather than with kube's `AdmissionResponse`: kube-core 4.0.0 (what Cargo.lock
//! has) holds `patch` as a `Vec<u8>` without a base64 serializer, so it writes an
//! array of numbers, which the API server refuses. The unit tests below pin both.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde_json::{Value, json};

use crate::Patch;
use crate::error::MalformedReview;

/// The body size the webhook accepts: the API server's own limit on an object (3 MiB)
/// plus room for the review around it. A larger body is refused with HTTP 413.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024 + 64 * 1024;

/// The key of the audit annotation that records why a pod was skipped. The API server
/// prefixes it with the webhook entry's name (`injector.trellis.io/skip-reason`,
/// `opt-in.injector.trellis.io/skip-reason`); it accepts only keys without a `/` of
/// their own.
pub const SKIP_REASON_AUDIT_KEY: &str = "skip-reason";

/// What the webhook needs from a review.
#[derive(Debug)]
pub struct PodReview {
    /// Copied into the answer: the API server matches answers to requests by it.
    pub uid: String,
    /// The namespace the pod is created in (the review's; a new pod's own
    /// `metadata.namespace` may be empty).
    pub namespace: String,
    /// The pod's name or `generateName`, for logs only.
    pub name: String,
    /// Only a creation is injected; anything else is allowed untouched.
    pub is_create: bool,
    /// Whether the API server will persist nothing (`kubectl --dry-run=server`), for
    /// logs: the answer is the same, as `sideEffects: None` promises.
    pub dry_run: bool,
    /// The pod exactly as posted.
    pub pod: Value,
}

/// Reads an AdmissionReview v1 for a Pod.
pub fn read(body: &[u8]) -> Result<PodReview, MalformedReview> {
    let mut review: Value = serde_json::from_slice(body).map_err(MalformedReview::NotJson)?;
    let field = |name: &str| {
        review
            .get(name)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let (kind, api_version) = (field("kind"), field("apiVersion"));
    if kind != "AdmissionReview" || api_version != "admission.k8s.io/v1" {
        return Err(MalformedReview::WrongType { kind, api_version });
    }
    let Some(request) = review.get_mut("request").filter(|r| !r.is_null()) else {
        return Err(MalformedReview::NoRequest);
    };
    // The pod leaves the review before kube's types see it, so they cannot drop any
    // of its fields; the old object (of an update) is not needed at all.
    let pod = request.get_mut("object").map(Value::take);
    if let Some(old) = request.get_mut("oldObject") {
        old.take();
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review).map_err(MalformedReview::InvalidRequest)?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| MalformedReview::NoRequest)?;

    let gvk = &request.kind;
    if (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) != ("", "v1", "Pod") {
        let group = if gvk.group.is_empty() {
            "core"
        } else {
            &gvk.group
        };
        return Err(MalformedReview::NotAPod(format!(
            "{group}/{} {}",
            gvk.version, gvk.kind
        )));
    }
    let pod = match pod {
        Some(pod @ Value::Object(_)) => pod,
        None | Some(Value::Null) => return Err(MalformedReview::NoPodObject("missing")),
        Some(Value::Array(_)) => return Err(MalformedReview::NoPodObject("a list")),
        Some(_) => return Err(MalformedReview::NoPodObject("a scalar")),
    };
    if pod.get("kind").is_some_and(|kind| kind != "Pod") {
        return Err(MalformedReview::NotAPod(format!(
            "object of kind {}",
            pod["kind"]
        )));
    }
    let namespace = request
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .or_else(|| {
            pod.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
                .map(str::to_owned)
        })
        .ok_or(MalformedReview::NoNamespace)?;
    let name = ["/metadata/name", "/metadata/generateName"]
        .iter()
        .find_map(|p| {
            pod.pointer(p)
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
        })
        .unwrap_or(&request.name)
        .to_owned();
    Ok(PodReview {
        uid: request.uid,
        namespace,
        name,
        is_create: request.operation == Operation::Create && request.sub_resource.is_none(),
        dry_run: request.dry_run,
        pod,
    })
}

/// What the webhook decided for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed, with the patch that meshes it.
    Inject(Patch),
    /// Allowed untouched; `label` is the reason's fixed name.
    Skip { label: &'static str },
    /// Refused (HTTP status 400 in the review): the message names the annotation or
    /// label and its value.
    Reject(String),
}

impl Decision {
    /// The `outcome` and `reason` labels of `injector_admissions_total`.
    pub fn labels(&self) -> (&'static str, &'static str) {
        match self {
            Decision::Inject(_) => ("injected", ""),
            Decision::Skip { label } => ("skipped", label),
            Decision::Reject(_) => ("rejected", ""),
        }
    }
}

/// The AdmissionReview answering the review `uid`, in the documented v1 form.
pub fn answer(uid: &str, decision: &Decision) -> Value {
    let response = match decision {
        Decision::Inject(patch) => {
            // A Patch is a list of plain operations: serializing it cannot fail, and
            // should it, an empty list is the safe answer (the pod unchanged).
            let bytes = serde_json::to_vec(patch).unwrap_or_else(|_| b"[]".to_vec());
            json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": BASE64.encode(bytes),
            })
        }
        Decision::Skip { label } => json!({
            "uid": uid,
            "allowed": true,
            "auditAnnotations": { SKIP_REASON_AUDIT_KEY: label },
        }),
        Decision::Reject(message) => json!({
            "uid": uid,
            "allowed": false,
            "status": {
                "status": "Failure",
                "code": 400,
                "reason": "BadRequest",
                "message": message,
            },
        }),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object,
                "oldObject": null,
                "dryRun": false,
            }
        })
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "checkout-", "x-unknown": {"kept": true}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        })
    }

    fn bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    #[test]
    fn a_pod_review_yields_the_raw_pod_and_its_namespace() {
        let read = read(&bytes(&review(pod()))).unwrap();
        assert_eq!(read.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(read.namespace, "shop");
        assert_eq!(read.name, "checkout-");
        assert!(read.is_create);
        // Untouched by any typed round trip: the unknown metadata field is still there.
        assert_eq!(read.pod, pod());
    }

    #[test]
    fn an_update_is_read_but_not_a_creation() {
        let mut update = review(pod());
        update["request"]["operation"] = json!("UPDATE");
        update["request"]["oldObject"] = pod();
        assert!(!read(&bytes(&update)).unwrap().is_create);
    }

    #[test]
    fn malformed_reviews_say_what_is_wrong() {
        let cases = [
            (b"{not json".to_vec(), "not JSON"),
            (
                bytes(&json!({"kind": "Pod", "apiVersion": "v1"})),
                "expected kind AdmissionReview",
            ),
            (
                bytes(
                    &json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1"}),
                ),
                "admission.k8s.io/v1beta1",
            ),
            (
                bytes(&json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"})),
                "no request",
            ),
            (
                bytes(&{
                    let mut r = review(pod());
                    r["request"]["kind"] =
                        json!({"group": "apps", "version": "v1", "kind": "Deployment"});
                    r
                }),
                "apps/v1 Deployment, not a v1 Pod",
            ),
            (bytes(&review(Value::Null)), "object is missing"),
            (bytes(&review(json!([1, 2]))), "object is a list"),
            (
                bytes(&review(json!({"kind": "Service", "spec": {}}))),
                "object of kind \"Service\"",
            ),
            (
                bytes(&{
                    let mut r = review(pod());
                    r["request"]["namespace"] = json!("");
                    r
                }),
                "no namespace",
            ),
            (
                bytes(&{
                    let mut r = review(pod());
                    r["request"]["uid"] = json!(7);
                    r
                }),
                "request is not valid",
            ),
        ];
        for (body, expected) in cases {
            let error = read(&body).expect_err(expected).to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn an_injection_answer_carries_the_patch_as_base64_json_patch() {
        let patch: Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}
        ]))
        .unwrap();
        let answer = answer("u-1", &Decision::Inject(patch.clone()));
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let encoded = response["patch"].as_str().expect("a base64 string");
        let decoded: Patch = serde_json::from_slice(&BASE64.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded, patch);
        assert!(response.get("status").is_none());
    }

    #[test]
    fn a_skip_is_allowed_without_a_patch_and_audited() {
        let answer = answer("u-2", &Decision::Skip { label: "opted-out" });
        assert_eq!(
            answer["response"],
            json!({"uid": "u-2", "allowed": true, "auditAnnotations": {"skip-reason": "opted-out"}})
        );
    }

    #[test]
    fn a_rejection_is_a_400_with_the_message() {
        let answer = answer("u-3", &Decision::Reject("annotation x=\"y\": bad".into()));
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 400);
        assert_eq!(
            answer["response"]["status"]["message"],
            "annotation x=\"y\": bad"
        );
        assert!(answer["response"].get("patch").is_none());
    }

    /// Why [`answer`] does not use kube's `AdmissionResponse`: its `patch` is a list of
    /// numbers, which the API server refuses. Should kube change that, this fails, and
    /// kube's type could be used instead.
    #[test]
    fn kube_serializes_a_patch_as_numbers_not_base64() {
        let request: AdmissionRequest<DynamicObject> = {
            let mut r = review(Value::Null);
            r["request"]["object"] = Value::Null;
            let review: AdmissionReview<DynamicObject> = serde_json::from_value(r).unwrap();
            review.try_into().unwrap()
        };
        let response = kube::core::admission::AdmissionResponse::from(&request)
            .with_patch(Patch(Vec::new()))
            .unwrap();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json["patch"],
            json!([91, 93]),
            "kube's form changed: {json}"
        );
    }
}
