//! The TCP congestion control of connections that never leave the pod: the app and
//! its sidecar talking over loopback, or either of them calling the pod's own address.
//!
//! Linux gives a new connection the congestion control its route names (`congctl`),
//! or else the namespace's default; a process may still choose its own. Where that
//! default is BBR, every connection is paced: a burst that would leave faster than
//! BBR's estimate of the path waits for a high-resolution timer. Across a network
//! that is BBR's point; over loopback, where no queue can build, it only costs a timer
//! per burst and caps the rate. On our benchmark VM four connections on a loopback
//! carried 1 MiB answers at 4.7–4.9 GB/s under BBR and 7.3–8.7 under Reno, and two
//! meshed hops 0.87–0.90 against 1.06–1.19 GB/s
//! (`bench/results/2026-12-05-local-routes/`).
//!
//! So proxy-init names an algorithm (`--local-congestion-control`, Reno by default)
//! on every route of the pod's `local` table: one per address of the pod, loopback
//! among them. Reno is built into every kernel, may be chosen without privilege, and
//! never paces; where no packet is lost, as on loopback, every algorithm's window just
//! grows. Routes to other hosts are untouched, so the connections between sidecars
//! keep the node's choice. `keep` leaves the routes alone.
//!
//! IPv4 local routes are replaced in place. The kernel's IPv6 local routes have
//! metric 0, which no route made over netlink can have (0 there means the default,
//! 1024), so each gets a twin at metric 1024 with the algorithm, and the kernel's is
//! then deleted so that the twin is the one used; `ip -batch` stops at the first
//! failure, so a route is never deleted unless its twin exists.
//!
//! The redirect rules decide whether traffic is meshed; this only how fast the pod's
//! loopback runs. A failure here is therefore reported as a warning by `main` and
//! never leaves a pod stuck in `Init`.

use serde::Deserialize;
use tracing::info;

use crate::backend::{Pass, kernel_has_ipv6};
use crate::cidr::Family;
use crate::command::{Binary, one_line};
use crate::error::{Error, env_of};

/// What `--local-congestion-control` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCongestion {
    /// Leave the local routes as they are.
    Keep,
    /// Name this algorithm on every local route.
    Algorithm(String),
}

/// The flag, named in errors.
pub const FLAG: &str = "--local-congestion-control";

/// The kernel's limit on an algorithm's name (`TCP_CA_NAME_MAX`, less the NUL).
const NAME_MAX: usize = 15;

impl Default for LocalCongestion {
    fn default() -> Self {
        LocalCongestion::Algorithm("reno".to_owned())
    }
}

impl LocalCongestion {
    /// Parses the flag's value: `keep`, or an algorithm's name. Whether this kernel
    /// has the algorithm is for `ip` to say when it is applied.
    pub fn for_flag(value: &str) -> Result<Self, Error> {
        if value == "keep" {
            return Ok(LocalCongestion::Keep);
        }
        let valid = !value.is_empty()
            && value.len() <= NAME_MAX
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(LocalCongestion::Algorithm(value.to_owned()))
        } else {
            Err(Error::InvalidCongestionControl {
                flag: FLAG,
                env: env_of(FLAG),
                value: value.to_owned(),
            })
        }
    }

    fn algorithm(&self) -> Option<&str> {
        match self {
            LocalCongestion::Keep => None,
            LocalCongestion::Algorithm(name) => Some(name),
        }
    }
}

/// One route of the `local` table, as `ip -json route show table local type local`
/// prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct LocalRoute {
    dst: String,
    dev: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    prefsrc: Option<String>,
    #[serde(default)]
    metric: Option<u32>,
    #[serde(default)]
    metrics: Vec<RouteMetric>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct RouteMetric {
    #[serde(default)]
    congestion: Option<String>,
}

impl LocalRoute {
    /// The algorithm the route names, if any (`congctl lock NAME` prints as
    /// `lock NAME`).
    fn congestion(&self) -> Option<&str> {
        self.metrics
            .iter()
            .find_map(|m| m.congestion.as_deref())
            .map(|name| name.strip_prefix("lock ").unwrap_or(name))
    }

    fn family(&self) -> Family {
        if self.dst.contains(':') {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// Every value is one word of `ip`'s own output; anything else would change the
    /// meaning of the batch line it is written into.
    fn is_plain(&self) -> bool {
        let plain = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
        [&self.dst, &self.dev].into_iter().all(|s| plain(s))
            && [&self.protocol, &self.scope, &self.prefsrc]
                .into_iter()
                .flatten()
                .all(|s| plain(s))
    }

    /// `route replace` of this route at `metric`, naming `congctl` if given.
    fn replace(&self, metric: Option<u32>, congctl: Option<&str>) -> String {
        let mut line = format!("route replace {}", self.selector(metric));
        if let Some(src) = &self.prefsrc {
            line += &format!(" src {src}");
        }
        if let Some(scope) = &self.scope {
            line += &format!(" scope {scope}");
        }
        if let Some(name) = congctl {
            line += &format!(" congctl {name}");
        }
        line
    }

    /// What identifies the route: destination, device, protocol, metric, table.
    fn selector(&self, metric: Option<u32>) -> String {
        let mut words = format!("local {} dev {}", self.dst, self.dev);
        if let Some(protocol) = &self.protocol {
            words += &format!(" proto {protocol}");
        }
        if let Some(metric) = metric {
            words += &format!(" metric {metric}");
        }
        words + " table local"
    }
}

/// The metric an IPv6 route gets when netlink is asked for 0.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// The `ip -batch` document that gives every route in `routes` the algorithm `want`
/// names, or with [`LocalCongestion::Keep`] nothing. Routes that already name it are
/// left alone, so a second run writes an empty document.
fn render_install(routes: &[LocalRoute], want: &LocalCongestion) -> String {
    let Some(algorithm) = want.algorithm() else {
        return String::new();
    };
    let mut document = String::new();
    for route in routes
        .iter()
        .filter(|r| r.is_plain() && r.congestion() != Some(algorithm))
    {
        match (route.family(), route.metric) {
            (Family::V6, Some(0)) => {
                document += &route.replace(Some(IPV6_DEFAULT_METRIC), Some(algorithm));
                document += "\n";
                document += &format!("route del {}\n", route.selector(Some(0)));
            }
            (_, metric) => {
                document += &route.replace(metric, Some(algorithm));
                document += "\n";
            }
        }
    }
    document
}

/// The `ip -batch` document that takes the algorithm `want` names off every route
/// that names it (`--cleanup`). An IPv6 route keeps the metric it was given.
fn render_cleanup(routes: &[LocalRoute], want: &LocalCongestion) -> String {
    let Some(algorithm) = want.algorithm() else {
        return String::new();
    };
    routes
        .iter()
        .filter(|r| r.is_plain() && r.congestion() == Some(algorithm))
        .map(|route| route.replace(route.metric, None) + "\n")
        .collect()
}

/// Why the local routes could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Ip(#[from] Error),
    #[error("cannot read the output of `{command}`: {source}")]
    Listing {
        command: String,
        source: serde_json::Error,
    },
    #[error("`{binary} -batch -` stopped at a change ({status}): {detail}")]
    Rejected {
        binary: String,
        status: std::process::ExitStatus,
        detail: String,
    },
}

/// The `ip` program, which reads and changes routes.
#[derive(Debug, Clone)]
pub struct Ip {
    binary: Binary,
}

impl Ip {
    pub fn new(path: impl Into<std::path::PathBuf>) -> Ip {
        Ip {
            binary: Binary::new(path, "--ip", "iproute2"),
        }
    }

    /// Names `want`'s algorithm on the pod's local routes (IPv6 too unless `ipv6` is
    /// off or the kernel has none), or with `cleanup` takes it off them; with
    /// `dry_run`, returns the document as a pass to print instead of applying it.
    pub fn set_local_routes(
        &self,
        want: &LocalCongestion,
        ipv6: bool,
        cleanup: bool,
        dry_run: bool,
    ) -> Result<Option<Pass>, RouteError> {
        if *want == LocalCongestion::Keep {
            return Ok(None);
        }
        let mut routes = self.local_routes(Family::V4)?;
        if ipv6 && kernel_has_ipv6() {
            routes.extend(self.local_routes(Family::V6)?);
        }
        let document = if cleanup {
            render_cleanup(&routes, want)
        } else {
            render_install(&routes, want)
        };
        if dry_run {
            return Ok(Some(Pass {
                command: format!("{} -batch -", self.binary.name()),
                document,
            }));
        }
        self.apply(&document)?;
        info!(
            congestion = ?want,
            routes = routes.len(),
            changes = document.lines().count(),
            cleanup,
            "local routes"
        );
        Ok(None)
    }

    /// The routes of the `local` table of `family`.
    fn local_routes(&self, family: Family) -> Result<Vec<LocalRoute>, RouteError> {
        let family_flag = match family {
            Family::V4 => "-4",
            Family::V6 => "-6",
        };
        let args = [
            "-json",
            family_flag,
            "route",
            "show",
            "table",
            "local",
            "type",
            "local",
        ];
        let listing = self.binary.read(&args)?;
        // `ip -json` prints nothing at all, not `[]`, for an empty table on some
        // versions.
        if listing.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&listing).map_err(|source| RouteError::Listing {
            command: format!("{} {}", self.binary.name(), args.join(" ")),
            source,
        })
    }

    /// Applies `document` with `ip -batch -`, which stops at the first failure.
    fn apply(&self, document: &str) -> Result<(), RouteError> {
        if document.is_empty() {
            return Ok(());
        }
        let output = self.binary.run(&["-batch", "-"], Some(document))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(RouteError::Rejected {
                binary: self.binary.name(),
                status: output.status,
                detail: one_line(&output.stderr),
            })
        }
    }
}

#[cfg(test)]
mod tests;
