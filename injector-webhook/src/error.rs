//! What can go wrong in the injector: a pod it must refuse, and a mesh config it cannot
//! use. Both name the exact annotation or field and its value, because the message ends
//! up in `kubectl apply`'s output or the injector's log, in front of whoever must fix it.

/// Why a pod is refused rather than injected: injecting it would produce a pod that
/// cannot work, so the API server is told not to create it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("annotation {annotation}={value:?}: {reason}")]
    InvalidAnnotation {
        annotation: &'static str,
        value: String,
        reason: String,
    },

    #[error("label {label}={value:?}: {reason}")]
    InvalidLabel {
        label: &'static str,
        value: String,
        reason: String,
    },

    #[error("not a pod: {0}")]
    NotAPod(String),

    #[error(
        "the pod already has a {kind} named {name:?} but is not injected: rename it, or remove the {kind} the injector would add"
    )]
    NameTaken { kind: &'static str, name: String },
}

/// A mesh config (`MeshConfig`) that cannot be used, with the field and its value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("mesh config is not valid YAML for a MeshConfig: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),

    #[error("mesh config field {field}={value:?}: {reason}")]
    InvalidField {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// A request to `POST /inject` that is not an AdmissionReview the webhook can answer:
/// the API server never sends one, so it is answered with HTTP 400 and this text (a
/// review answer needs a `uid`, which such a request may not have).
#[derive(Debug, thiserror::Error)]
pub enum MalformedReview {
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),

    #[error(
        "expected kind AdmissionReview, apiVersion admission.k8s.io/v1; got kind {kind:?}, apiVersion {api_version:?} (is the webhook configured with admissionReviewVersions: [v1]?)"
    )]
    WrongType { kind: String, api_version: String },

    #[error("the AdmissionReview has no request")]
    NoRequest,

    #[error("the AdmissionReview's request is not valid: {0}")]
    InvalidRequest(serde_json::Error),

    #[error(
        "the request is for a {0}, not a v1 Pod (is the webhook's rule for pods only, with matchPolicy: Equivalent?)"
    )]
    NotAPod(String),

    #[error("the request's object is {0}, not a Pod object")]
    NoPodObject(&'static str),

    #[error("the request names no namespace, and neither does the pod")]
    NoNamespace,
}

/// The webhook's serving certificate and key, which cannot be used; at start-up this
/// stops the server, on a reload the previous pair stays in force.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },

    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: std::path::PathBuf },

    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: std::path::PathBuf },

    #[error("{path} is not valid PEM: {error}")]
    Pem {
        path: std::path::PathBuf,
        error: std::io::Error,
    },

    #[error(
        "the key in {key} cannot serve the certificate in {cert}: {error} (were both files of one Secret updated together?)"
    )]
    Mismatch {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        error: rustls::Error,
    },
}
