//! `meshctl install`: the manifests of `charts/trellis`, rendered without Helm.
//!
//! The chart is the one source of truth. Its files are compiled into meshctl (the list
//! below; a test fails when a file of the chart is missing from it), and its templates
//! are written in a small subset of Helm's template language ([`template`]) that this
//! module renders exactly as `helm template` does, with the same values: the chart's
//! `values.yaml`, then `-f` files, `--set` and `--set-file`, layered as Helm layers
//! them ([`values`]). A test renders the chart both ways and compares the objects.
//!
//! What `meshctl install` adds to `helm template`: the Namespace object (there is no
//! `--create-namespace` for `kubectl apply`), and, where none is given, generated TLS
//! material ([`certs`]) so that one command installs a mesh to try.
//!
//! # Layout
//! - `chart.rs`: the embedded chart, rendering it, and the command.
//! - `template.rs`: the template subset, parsed and rendered.
//! - `values.rs`: values files, `--set`, Helm's merge and printing rules.
//! - `certs.rs`: the generated mesh CA and webhook certificate.
//! - `error.rs`: [`ChartError`].
//!
//! The command's flags are declared here rather than in `main.rs` because they are
//! Helm's flags (`-f`, `--set`, `--set-file`) and must mean what they mean there.

mod certs;
mod error;
mod template;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

pub use self::error::ChartError;
use self::template::Template;
pub use self::values::Value;

/// The namespace the mesh is installed into: the controller's identity
/// (`spiffe://<trust-domain>/ns/trellis-system/sa/trellis-controller`) names it.
pub const NAMESPACE: &str = "trellis-system";

/// The release name Helm is told in the README (`helm install trellis …`); the
/// templates do not use it, but it is part of what they may see.
pub const RELEASE: &str = "trellis";

/// One file of the chart, compiled in.
#[derive(Debug, Clone, Copy)]
pub struct ChartFile {
    /// The path inside `charts/trellis/`.
    pub path: &'static str,
    pub text: &'static str,
}

macro_rules! chart_file {
    ($path:literal) => {
        ChartFile {
            path: $path,
            text: include_str!(concat!("../../charts/trellis/", $path)),
        }
    };
}

pub const CHART_YAML: ChartFile = chart_file!("Chart.yaml");
pub const VALUES_YAML: ChartFile = chart_file!("values.yaml");

/// The CRDs, printed first and verbatim (Helm does not template `crds/` either).
pub const CRDS: &[ChartFile] = &[
    chart_file!("crds/authorizationpolicies.trellis.io.yaml"),
    chart_file!("crds/routes.trellis.io.yaml"),
];

/// The templates, in name order (Helm's order too, before it sorts by kind).
pub const TEMPLATES: &[ChartFile] = &[
    chart_file!("templates/00-namespace.yaml"),
    chart_file!("templates/10-identity.yaml"),
    chart_file!("templates/20-controller-rbac.yaml"),
    chart_file!("templates/21-controller.yaml"),
    chart_file!("templates/30-injector.yaml"),
    chart_file!("templates/31-injector-webhook.yaml"),
];

/// The flags of `meshctl install`.
#[derive(Debug, Default, clap::Args)]
pub struct InstallArgs {
    /// A values file, as `helm install -f` (repeatable; later files win).
    #[arg(
        short = 'f',
        long = "values",
        value_name = "FILE",
        env = "TRELLIS_INSTALL_VALUES",
        value_delimiter = ','
    )]
    pub values: Vec<PathBuf>,
    /// One value, as `helm install --set`: `a.b=c`, several separated by commas
    /// (repeatable; applied after the values files).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// One value read from a file, as `helm install --set-file`, e.g.
    /// `identity.trustAnchorsPEM=ca.crt` (repeatable; applied last).
    #[arg(long = "set-file", value_name = "KEY=PATH")]
    pub set_file: Vec<String>,
    /// Never generate TLS material: a certificate or key not given is an error, as
    /// with Helm.
    #[arg(long, env = "TRELLIS_INSTALL_NO_GENERATE_CERTS")]
    pub no_generate_certs: bool,
}

/// One rendered document, with the file it came from (`trellis/templates/…`).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub source: String,
    pub text: String,
}

/// `meshctl install`: writes the manifests to `out` for `kubectl apply -f -`, and what
/// it generated (if anything) to `notes`.
pub fn install(
    args: &InstallArgs,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), ChartError> {
    let mut values = values(args)?;
    let generated = if args.no_generate_certs {
        Vec::new()
    } else {
        generate_missing(&mut values, NAMESPACE)?
    };
    let manifests = render(&values, NAMESPACE)?;
    let write = ChartError::Write;
    for manifest in &manifests {
        write!(
            out,
            "---\n# Source: {}\n{}\n",
            manifest.source, manifest.text
        )
        .map_err(write)?;
    }
    for what in generated {
        writeln!(
            notes,
            "meshctl install: generated {what}, for trying Trellis only (its root key is not kept; see the README)"
        )
        .map_err(write)?;
    }
    Ok(())
}

/// The values `meshctl install` renders with: the chart's defaults, meshctl's own
/// (`namespace.create: true`), then the user's, as Helm layers them: `-f` files in
/// order, then `--set`, then `--set-file`.
pub fn values(args: &InstallArgs) -> Result<Value, ChartError> {
    let mut values = Value::from_yaml(VALUES_YAML.text, "charts/trellis/values.yaml")?;
    values.set(&["namespace".into(), "create".into()], Value::Bool(true));
    let mut user = Value::Map(BTreeMap::new());
    for path in &args.values {
        let text = std::fs::read_to_string(path).map_err(|error| ChartError::Read {
            path: path.clone(),
            error,
        })?;
        user.overlay(Value::from_yaml(&text, &path.display().to_string())?);
    }
    for argument in &args.set {
        for (path, value) in values::parse_set(argument)? {
            user.set(&path, value);
        }
    }
    for argument in &args.set_file {
        let (key, path) = argument
            .split_once('=')
            .ok_or_else(|| ChartError::InvalidSet {
                argument: argument.clone(),
                reason: "--set-file takes KEY=PATH".into(),
            })?;
        let text = std::fs::read_to_string(path).map_err(|error| ChartError::Read {
            path: path.into(),
            error,
        })?;
        user.set(&values::parse_key(key, argument)?, Value::String(text));
    }
    values.coalesce(user);
    Ok(values)
}

/// Renders the chart: the CRDs, then every template's documents, with `values` as
/// `.Values` and `namespace` as `.Release.Namespace`.
pub fn render(values: &Value, namespace: &str) -> Result<Vec<Manifest>, ChartError> {
    let root = root(values.clone(), namespace)?;
    let mut manifests: Vec<Manifest> = CRDS
        .iter()
        .map(|crd| Manifest {
            source: format!("trellis/{}", crd.path),
            // Verbatim, final newline included, as `helm template --include-crds`.
            text: crd.text.to_owned(),
        })
        .collect();
    let mut objects = Vec::new();
    for file in TEMPLATES {
        let rendered = Template::parse(file.path, file.text)?.render(&root)?;
        objects.extend(documents(&rendered).map(|text| Manifest {
            source: format!("trellis/{}", file.path),
            text: text.to_owned(),
        }));
    }
    // Helm's install order, stable within a kind, so that the output reads as
    // `helm template`'s does and `kubectl apply` creates what others refer to first.
    objects.sort_by_key(|manifest| install_rank(&manifest.text));
    manifests.extend(objects);
    Ok(manifests)
}

/// Helm's `InstallOrder` of kinds; kinds it does not list go last.
const INSTALL_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn install_rank(document: &str) -> usize {
    // The top-level `kind:` line; templates write it plainly, as Helm's sorter reads it.
    let kind = document
        .lines()
        .find_map(|line| line.strip_prefix("kind:"))
        .map(|kind| kind.trim().trim_matches(['"', '\'']));
    kind.and_then(|kind| INSTALL_ORDER.iter().position(|known| *known == kind))
        .unwrap_or(INSTALL_ORDER.len())
}

/// `.` of the templates: `.Values`, `.Release` and `.Chart`, as Helm names them.
fn root(values: Value, namespace: &str) -> Result<Value, ChartError> {
    let chart = Value::from_yaml(CHART_YAML.text, "charts/trellis/Chart.yaml")?;
    let field = |key: &str| chart.get(&[key]).cloned().unwrap_or(Value::Null);
    let map = |entries: Vec<(&str, Value)>| {
        Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    };
    Ok(map(vec![
        ("Values", values),
        (
            "Release",
            map(vec![
                ("Name", Value::String(RELEASE.into())),
                ("Namespace", Value::String(namespace.into())),
            ]),
        ),
        (
            "Chart",
            map(vec![
                ("Name", field("name")),
                ("Version", field("version")),
                ("AppVersion", field("appVersion")),
            ]),
        ),
    ]))
}

/// The YAML documents of a rendered template, split at `---` lines as Helm splits
/// them, without the empty ones (a template whose `if` was false).
fn documents(rendered: &str) -> impl Iterator<Item = &str> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in rendered.split_inclusive('\n') {
        let content = line.trim_end();
        if content == "---" || content.starts_with("--- ") {
            documents.push(&rendered[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(&rendered[start..]);
    documents
        .into_iter()
        .map(str::trim)
        .filter(|document| !document.is_empty())
}

/// The values paths of one set of TLS material that is given whole or not at all.
struct TlsGroup {
    name: &'static str,
    paths: [&'static str; 3],
}

const MESH_CA: TlsGroup = TlsGroup {
    name: "identity.trustAnchorsPEM, identity.issuer.certPEM and identity.issuer.keyPEM",
    paths: [
        "identity.trustAnchorsPEM",
        "identity.issuer.certPEM",
        "identity.issuer.keyPEM",
    ],
};

const WEBHOOK_TLS: TlsGroup = TlsGroup {
    name: "injector.webhook.caBundlePEM, injector.tls.certPEM and injector.tls.keyPEM",
    paths: [
        "injector.webhook.caBundlePEM",
        "injector.tls.certPEM",
        "injector.tls.keyPEM",
    ],
};

/// Fills in the TLS material that is not given, a whole group at a time, and says
/// what it generated. A group given in part is an error: a generated issuer cannot
/// belong to the operator's root, nor a generated key to their certificate.
fn generate_missing(values: &mut Value, namespace: &str) -> Result<Vec<&'static str>, ChartError> {
    let mut generated = Vec::new();
    // With an external issuer the root is the operator's too: nothing to generate.
    let external = values
        .get(&["identity", "issuer", "external"])
        .is_some_and(Value::is_truthy);
    if !external && needs_generating(values, &MESH_CA)? {
        let ca = certs::mesh_ca()?;
        set_group(
            values,
            &MESH_CA,
            [ca.trust_anchors_pem, ca.issuer_cert_pem, ca.issuer_key_pem],
        );
        generated.push("a mesh root CA and issuer");
    }
    if needs_generating(values, &WEBHOOK_TLS)? {
        let tls = certs::webhook_tls(namespace)?;
        set_group(
            values,
            &WEBHOOK_TLS,
            [tls.ca_bundle_pem, tls.cert_pem, tls.key_pem],
        );
        generated.push("a webhook CA and the injector's serving certificate");
    }
    Ok(generated)
}

fn needs_generating(values: &Value, group: &TlsGroup) -> Result<bool, ChartError> {
    let is_set = |path: &str| {
        let path: Vec<&str> = path.split('.').collect();
        values.get(&path).is_some_and(|value| !value.is_unset())
    };
    let given = group.paths.iter().find(|path| is_set(path));
    let missing = group.paths.iter().find(|path| !is_set(path));
    match (given, missing) {
        (None, _) => Ok(true),
        (Some(_), None) => Ok(false),
        (Some(given), Some(missing)) => Err(ChartError::PartialTls {
            given,
            missing,
            group: group.name,
        }),
    }
}

fn set_group(values: &mut Value, group: &TlsGroup, pems: [String; 3]) {
    for (path, pem) in group.paths.iter().zip(pems) {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        values.set(&path, Value::String(pem));
    }
}
