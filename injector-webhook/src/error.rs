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
