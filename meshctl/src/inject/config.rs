//! Where `meshctl inject` gets its mesh config, so that it makes the pod the webhook of
//! an installed mesh makes.
//!
//! The webhook reads the chart's ConfigMap `trellis-mesh-config`, whose mesh config
//! carries the mesh's trust anchors (`trustAnchorsPem`) into every proxy. meshctl reads
//! that same ConfigMap, as `kubectl get configmap -o yaml` prints it, or the mesh
//! config YAML inside it, and `--trust-anchors` can supply (or replace) the anchors.
//! With neither, it refuses: the built-in defaults have no anchors, so each proxy
//! would mount a ConfigMap `trellis-trust-anchors` from its own namespace that no
//! install creates, and the pod would never start.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;
use trellis_injector::MeshConfig;

use super::InjectError;

/// The chart's ConfigMap of the injector's mesh config, and its key.
pub const CONFIG_MAP: &str = "trellis-mesh-config";
pub const CONFIG_MAP_KEY: &str = "mesh-config.yaml";

/// The mesh config from `--mesh-config` and `--trust-anchors`, and a warning for
/// stderr when the pods will need something the mesh config cannot give them.
pub fn read(
    mesh_config: Option<&Path>,
    trust_anchors: Option<&Path>,
) -> Result<(MeshConfig, Option<String>), InjectError> {
    if mesh_config.is_none() && trust_anchors.is_none() {
        return Err(InjectError::NoMeshConfig);
    }
    let mut config = match mesh_config {
        Some(path) => from_file(path)?,
        None => MeshConfig::default(),
    };
    if let Some(path) = trust_anchors {
        config.trust_anchors_pem = Some(read_text(path)?);
        config.check().map_err(|error| InjectError::Config {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    }
    let warning = config.trust_anchors_pem.is_none().then(|| {
        format!(
            "meshctl inject: the mesh config has no trustAnchorsPem, so every injected proxy \
             mounts the ConfigMap {} (key {}) of its pod's namespace, which must exist there; \
             give --trust-anchors FILE to put the anchors into the pods instead",
            config.trust_anchors_config_map, config.trust_anchors_key
        )
    });
    Ok((config, warning))
}

/// A ConfigMap holding the mesh config (`kind: ConfigMap`, YAML or JSON), or the mesh
/// config itself.
fn from_file(path: &Path) -> Result<MeshConfig, InjectError> {
    let text = read_text(path)?;
    let bad = |reason: String| InjectError::Config {
        path: path.to_owned(),
        reason,
    };
    let document: Yaml = serde_yaml_ng::from_str(&text).map_err(|error| bad(error.to_string()))?;
    let mesh_yaml = if document.get("kind").and_then(Yaml::as_str) == Some("ConfigMap") {
        document
            .get("data")
            .and_then(|data| data.get(CONFIG_MAP_KEY))
            .and_then(Yaml::as_str)
            .ok_or_else(|| {
                bad(format!(
                    "the ConfigMap has no data key {CONFIG_MAP_KEY}; is it {CONFIG_MAP} (kubectl get \
                     configmap {CONFIG_MAP} -n trellis-system -o yaml)?"
                ))
            })?
            .to_owned()
    } else {
        text
    };
    MeshConfig::from_yaml(&mesh_yaml).map_err(|error| bad(error.to_string()))
}

fn read_text(path: &Path) -> Result<String, InjectError> {
    std::fs::read_to_string(path).map_err(|error| InjectError::Read {
        path: PathBuf::from(path),
        error,
    })
}
