//! The mesh config: everything the injector needs to know about the mesh that a pod
//! does not say (images, the controller's address, the trust domain, defaults).
//!
//! One YAML document, read by the admission webhook (rendered by the chart) and by
//! `meshctl inject --config`. Every field has a default, so an empty document (or none
//! at all) is the stock mesh; unknown fields are refused, so a misspelt one is an error
//! rather than a silently ignored setting. [`MeshConfig::check`] reports every bad value
//! with its field name.

use serde::{Deserialize, Serialize};
use trellis_identity::TrustAnchors;

use crate::error::ConfigError;
use crate::values::{CidrList, CongestionControl, PortList, quantity};

/// The version of this injector, recorded on every pod it injects and the default tag
/// of both images, so that the injector and the proxies it adds are released together.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the injected pod is configured, mesh-wide. YAML fields are camelCase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct MeshConfig {
    /// The proxy's image (default: `ghcr.io/trellis-mesh/trellis-proxy:<VERSION>`).
    pub proxy_image: Image,
    /// proxy-init's image (default: `ghcr.io/trellis-mesh/trellis-proxy-init:<VERSION>`).
    pub proxy_init_image: Image,
    /// The controller's identity service, host:port, as the proxy dials it
    /// (`TRELLIS_CONTROLLER_ADDR`) (default: `trellis-controller.trellis-system.svc:8086`).
    pub controller_addr: String,
    /// The SPIFFE ID the controller must present (`TRELLIS_CONTROLLER_IDENTITY`)
    /// (default: none, so the proxy derives the trust domain's
    /// `trellis-system/trellis-controller`).
    pub controller_identity: Option<String>,
    /// The mesh's trust domain: the proxy's `TRELLIS_TRUST_DOMAIN` and the host of the
    /// SPIFFE ID it requests (default: `cluster.local`).
    pub trust_domain: String,
    /// The audience of the projected ServiceAccount token the proxy sends with its CSR;
    /// must equal the controller's `--token-audience`, so that the token is useless to
    /// anything else (default: `identity.trellis.io`).
    pub identity_audience: String,
    /// How long that token lives; the kubelet refreshes it at 80 % and the proxy re-reads
    /// it at every renewal. The API server's minimum is 600 (default: 86400).
    pub token_expiration_seconds: u32,
    /// The mesh's trust anchors, a PEM bundle of root certificates, given to every
    /// proxy in its environment (`TRELLIS_TRUST_ANCHORS_PEM`), so that labelling a
    /// namespace is all it takes to mesh it (the chart sets it from
    /// `identity.trustAnchorsPEM`). When set, the two fields below are not used
    /// (default: none).
    pub trust_anchors_pem: Option<String>,
    /// Without `trustAnchorsPem`: the ConfigMap in the pod's own namespace holding the
    /// trust anchors, mounted into the proxy, for operators who distribute that
    /// ConfigMap to every meshed namespace themselves (default: `trellis-trust-anchors`).
    pub trust_anchors_config_map: String,
    /// The key of the PEM bundle in that ConfigMap (default: `ca.crt`).
    pub trust_anchors_key: String,
    /// How the proxy runs beside the app (default: `native`).
    pub sidecar: SidecarMode,
    /// With `sidecar: classic`, the proxy container's postStart command, which must
    /// return only once the proxy is ready: the kubelet starts the app container only
    /// after it returns, and kills the proxy if it fails (default: a `/bin/sh` loop
    /// polling `/ready` on the admin port with `wget`, for at most 120 s).
    pub classic_hold_command: Option<Vec<String>>,
    /// The UID the proxy runs as; proxy-init exempts this UID's traffic, so it must be
    /// one no app container uses, and never 0 (default: 2102).
    pub proxy_uid: u32,
    /// The CPU scheduling policy of the proxy's threads (`TRELLIS_SCHEDULING`),
    /// overridable per pod by annotation: `normal`, the kernel's default; `batch`,
    /// which costs less CPU per request on nodes with idle CPUs and lengthens the
    /// tail when every CPU is busy (`bench/results/2026-12-05-scheduling/`); or
    /// `auto`, which moves between the two by how idle the node's CPUs are
    /// (`bench/results/2026-12-05-auto-scheduling/`) (default: `auto`).
    pub proxy_scheduling: ProxyScheduling,
    /// The TCP congestion control proxy-init names on the routes to the pod's own
    /// addresses, where the app and its proxy talk over loopback
    /// (`--local-congestion-control`), overridable per pod by annotation: an
    /// algorithm the nodes' kernels have, or `keep` for the node's default. Reno never
    /// paces, as a node default of BBR does (default: `reno`).
    pub local_congestion_control: CongestionControl,
    /// The proxy's ports.
    pub ports: Ports,
    /// The proxy container's resources, each overridable per pod by annotation
    /// (default: requests 100m CPU and 64Mi memory, a 256Mi memory limit).
    pub proxy_resources: Resources,
    /// proxy-init's resources (default: requests 10m CPU and 16Mi memory, limits 100m
    /// CPU and 64Mi memory).
    pub proxy_init_resources: Resources,
    /// Inbound ports that bypass the proxy in every pod, e.g. `"25,8000-8100"`; a pod's
    /// `trellis.io/skip-inbound-ports` adds to them (default: none).
    pub skip_inbound_ports: String,
    /// Outbound ports that bypass the proxy in every pod; a pod's
    /// `trellis.io/skip-outbound-ports` adds to them (default: none).
    pub skip_outbound_ports: String,
    /// Outbound networks that bypass the proxy in every pod, e.g. the API server's;
    /// a pod's `trellis.io/skip-outbound-cidrs` adds to them (default: none).
    pub skip_outbound_cidrs: String,
}

/// A container image, as `repository:tag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    /// `ghcr.io/trellis-mesh/trellis-proxy`.
    pub repository: String,
    /// `0.1.0`; a digest (`sha256:…`) is written as `repository@sha256:…`.
    pub tag: String,
    /// The container's `imagePullPolicy` (default: `IfNotPresent`).
    #[serde(default = "if_not_present")]
    pub pull_policy: String,
}

/// The proxy's listeners, as proxy-init redirects to them and the proxy binds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Ports {
    /// Inbound TCP to the pod is redirected here (default: 4143).
    pub inbound: u16,
    /// Outbound TCP from the app is redirected here; bound on loopback only (default: 4140).
    pub outbound: u16,
    /// `/ready`, `/live`, `/metrics`; never redirected, so probes reach it (default: 4191).
    pub admin: u16,
}

/// Requests and limits of one container; absent ones are not set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Resources {
    /// What the scheduler reserves: `100m`.
    pub cpu_request: Option<String>,
    /// Where the container is throttled; often left out, as throttling a proxy adds
    /// latency to every request of the app.
    pub cpu_limit: Option<String>,
    /// What the scheduler reserves: `64Mi`.
    pub memory_request: Option<String>,
    /// Where the container is killed.
    pub memory_limit: Option<String>,
}

/// How the proxy runs beside the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarMode {
    /// A Kubernetes native sidecar (an init container with `restartPolicy: Always`,
    /// Kubernetes 1.29 and later): the app starts once the proxy's startup probe
    /// passes, the proxy outlives the app at shutdown, and Jobs complete.
    #[default]
    Native,
    /// A plain first container held by a postStart hook until the proxy is ready, for
    /// clusters before 1.29. A Job's pod never completes while its proxy runs.
    Classic,
}

impl SidecarMode {
    /// `native` / `classic`: the annotation and YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarMode::Native => "native",
            SidecarMode::Classic => "classic",
        }
    }
}

/// `trellis-proxy --scheduling`: how the kernel schedules the proxy's threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyScheduling {
    /// `SCHED_OTHER`, the kernel's default.
    Normal,
    /// `SCHED_BATCH`: a woken proxy thread never preempts the running thread.
    Batch,
    /// `batch` while the proxy's CPUs have idle time, `normal` while they have almost
    /// none.
    #[default]
    Auto,
}

impl ProxyScheduling {
    /// `normal` / `batch` / `auto`: the annotation, YAML and flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheduling::Normal => "normal",
            ProxyScheduling::Batch => "batch",
            ProxyScheduling::Auto => "auto",
        }
    }
}

impl Default for MeshConfig {
    fn default() -> MeshConfig {
        MeshConfig {
            proxy_image: Image::trellis("trellis-proxy"),
            proxy_init_image: Image::trellis("trellis-proxy-init"),
            controller_addr: "trellis-controller.trellis-system.svc:8086".into(),
            controller_identity: None,
            trust_domain: "cluster.local".into(),
            identity_audience: "identity.trellis.io".into(),
            token_expiration_seconds: 86_400,
            trust_anchors_pem: None,
            trust_anchors_config_map: "trellis-trust-anchors".into(),
            trust_anchors_key: "ca.crt".into(),
            sidecar: SidecarMode::Native,
            classic_hold_command: None,
            proxy_uid: 2102,
            proxy_scheduling: ProxyScheduling::Auto,
            local_congestion_control: CongestionControl::default(),
            ports: Ports::default(),
            proxy_resources: Resources {
                cpu_request: Some("100m".into()),
                cpu_limit: None,
                memory_request: Some("64Mi".into()),
                memory_limit: Some("256Mi".into()),
            },
            proxy_init_resources: Resources {
                cpu_request: Some("10m".into()),
                cpu_limit: Some("100m".into()),
                memory_request: Some("16Mi".into()),
                memory_limit: Some("64Mi".into()),
            },
            skip_inbound_ports: String::new(),
            skip_outbound_ports: String::new(),
            skip_outbound_cidrs: String::new(),
        }
    }
}

impl Default for Ports {
    fn default() -> Ports {
        Ports {
            inbound: 4143,
            outbound: 4140,
            admin: 4191,
        }
    }
}

impl Image {
    fn trellis(name: &str) -> Image {
        Image {
            repository: format!("ghcr.io/trellis-mesh/{name}"),
            tag: VERSION.into(),
            pull_policy: if_not_present(),
        }
    }

    /// The image reference a container names.
    pub fn reference(&self) -> String {
        if self.tag.starts_with("sha256:") {
            format!("{}@{}", self.repository, self.tag)
        } else {
            format!("{}:{}", self.repository, self.tag)
        }
    }
}

fn if_not_present() -> String {
    "IfNotPresent".into()
}

impl MeshConfig {
    /// Reads and checks a mesh config; an empty document is the default config.
    pub fn from_yaml(text: &str) -> Result<MeshConfig, ConfigError> {
        let config = if text.trim().is_empty() {
            MeshConfig::default()
        } else {
            serde_yaml_ng::from_str(text)?
        };
        config.check()?;
        Ok(config)
    }

    /// The first bad value, with its field name. Checked once, at load, so that
    /// injection itself only has the pod's annotations left to doubt.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field, value: &dyn std::fmt::Display, reason: &str| {
            Err(ConfigError::InvalidField {
                field,
                value: value.to_string(),
                reason: reason.to_owned(),
            })
        };
        for (field, image) in [
            ("proxyImage", &self.proxy_image),
            ("proxyInitImage", &self.proxy_init_image),
        ] {
            if image.repository.is_empty() || image.tag.is_empty() {
                return bad(field, &image.reference(), "needs a repository and a tag");
            }
            if !["Always", "IfNotPresent", "Never"].contains(&image.pull_policy.as_str()) {
                return bad(
                    field,
                    &image.pull_policy,
                    "pullPolicy must be Always, IfNotPresent or Never",
                );
            }
        }
        let required = [
            ("controllerAddr", &self.controller_addr),
            ("trustDomain", &self.trust_domain),
            ("identityAudience", &self.identity_audience),
            ("trustAnchorsConfigMap", &self.trust_anchors_config_map),
            ("trustAnchorsKey", &self.trust_anchors_key),
        ];
        for (field, value) in required {
            if value.trim().is_empty() {
                return bad(field, value, "must not be empty");
            }
        }
        if let Some(pem) = &self.trust_anchors_pem
            && let Err(reason) = check_certificates(pem)
        {
            // The first line says which text it was; the whole bundle would not help.
            let first_line = pem.trim_start().lines().next().unwrap_or_default();
            return bad("trustAnchorsPem", &first_line, &reason);
        }
        if !self.controller_addr.contains(':') {
            return bad(
                "controllerAddr",
                &self.controller_addr,
                "must be host:port, such as trellis-controller.trellis-system.svc:8086",
            );
        }
        if self.token_expiration_seconds < 600 {
            return bad(
                "tokenExpirationSeconds",
                &self.token_expiration_seconds,
                "the API server's minimum is 600",
            );
        }
        if self.proxy_uid == 0 {
            return bad(
                "proxyUid",
                &self.proxy_uid,
                "0 would exempt every root process from the mesh",
            );
        }
        if self
            .classic_hold_command
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            return bad(
                "classicHoldCommand",
                &"[]",
                "needs a command, or leave it out",
            );
        }
        let Ports {
            inbound,
            outbound,
            admin,
        } = self.ports;
        for (field, port) in [
            ("ports.inbound", inbound),
            ("ports.outbound", outbound),
            ("ports.admin", admin),
        ] {
            if port == 0 {
                return bad(field, &port, "must be 1-65535");
            }
        }
        if inbound == outbound || inbound == admin || outbound == admin {
            return bad(
                "ports",
                &format!("{inbound}/{outbound}/{admin}"),
                "inbound, outbound and admin must differ",
            );
        }
        check_resources("proxyResources", &self.proxy_resources)?;
        check_resources("proxyInitResources", &self.proxy_init_resources)?;
        for (field, value) in [
            ("skipInboundPorts", &self.skip_inbound_ports),
            ("skipOutboundPorts", &self.skip_outbound_ports),
        ] {
            if let Err(reason) = PortList::parse(value) {
                return bad(field, value, &reason);
            }
        }
        if let Err(reason) = CidrList::parse(&self.skip_outbound_cidrs) {
            return bad("skipOutboundCidrs", &self.skip_outbound_cidrs, &reason);
        }
        Ok(())
    }
}

/// The check the proxy makes of `TRELLIS_TRUST_ANCHORS_PEM` at start-up, made here so
/// that a bad bundle stops the injector rather than every pod it injects.
fn check_certificates(pem: &str) -> Result<(), String> {
    TrustAnchors::from_pem(pem.as_bytes())
        .map(drop)
        .map_err(|e| format!("{e} (give the PEM text itself, BEGIN and END lines included)"))
}

fn check_resources(field: &'static str, resources: &Resources) -> Result<(), ConfigError> {
    let pairs = [
        ("cpu", &resources.cpu_request, &resources.cpu_limit),
        ("memory", &resources.memory_request, &resources.memory_limit),
    ];
    for (name, request, limit) in pairs {
        let mut values = [None, None];
        for (slot, value) in values.iter_mut().zip([request, limit]) {
            if let Some(value) = value {
                let parsed = quantity(value).map_err(|reason| ConfigError::InvalidField {
                    field,
                    value: value.clone(),
                    reason,
                })?;
                *slot = Some(parsed);
            }
        }
        if let [Some(request), Some(limit)] = values
            && request > limit
        {
            return Err(ConfigError::InvalidField {
                field,
                value: format!("{name} request {request} > limit {limit}"),
                reason: "a request may not exceed its limit".into(),
            });
        }
    }
    Ok(())
}
