//! What a `trellis-bench run` measures: which scenarios, which workloads at which
//! loads, for how long and how often. The three modes differ only in these numbers,
//! so a quick CI smoke run goes through exactly the code a full run does.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::ScenarioKind;

/// How thorough a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every scenario and workload once, for about a second: proves it all works.
    Quick,
    /// Three repeats of 10 s, the worst dropped.
    Standard,
    /// Five repeats of 10 s after a longer warm-up, the worst dropped.
    Full,
}

/// The shape of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Small HTTP/1.1 requests (13-byte answers) on 16 kept-alive connections.
    Http1,
    /// gRPC unary calls over h2c, 2 connections × 8 streams.
    Grpc,
    /// One HTTP/1.1 request per fresh app connection to the backend's HTTP port: what
    /// accepting a connection costs a proxy. Between two Trellis sidecars the request
    /// rides their pooled HTTP/2 mTLS connection, so no handshake is involved.
    NewConnection,
    /// One HTTP/1.1 request per fresh app connection to the backend's opaque port
    /// ([`crate::scenario::ports::BACKEND_OPAQUE`]): every app connection becomes a
    /// connection of its own between the hops, a new mTLS connection between two
    /// Trellis sidecars. The handshake cost.
    NewMtlsConnection,
    /// 1 MiB answers on 4 connections: throughput.
    Bulk,
    /// 1,000 connections that each made one request and then stay open: memory.
    Idle,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Http1,
        Workload::Grpc,
        Workload::NewConnection,
        Workload::NewMtlsConnection,
        Workload::Bulk,
        Workload::Idle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Http1 => "http1",
            Workload::Grpc => "grpc",
            Workload::NewConnection => "new_connection",
            Workload::NewMtlsConnection => "new_mtls_connection",
            Workload::Bulk => "bulk_1mib",
            Workload::Idle => "idle",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Workload::Http1 => "Small HTTP/1.1 requests",
            Workload::Grpc => "gRPC unary calls",
            Workload::NewConnection => "A new connection per request",
            Workload::NewMtlsConnection => "A new mTLS connection per request",
            Workload::Bulk => "1 MiB responses",
            Workload::Idle => "1,000 idle connections",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// How hard one measurement pushes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Requests per second, open loop.
    Rate(u32),
    /// Closed loop: the knee.
    Max,
    /// Hold this many connections open.
    Connections(u32),
}

impl Load {
    /// A load as `--loads` names it: `2000` (requests per second), `max`, or
    /// `1000conns`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "max" => Some(Load::Max),
            _ => match name.strip_suffix("conns") {
                Some(count) => count.parse().ok().map(Load::Connections),
                None => name.trim_end_matches("/s").parse().ok().map(Load::Rate),
            },
        }
    }

    pub fn label(self) -> String {
        match self {
            Load::Rate(rate) => format!("{rate}/s"),
            Load::Max => "max".to_string(),
            Load::Connections(count) => format!("{count} conns"),
        }
    }

    /// A file-name-safe form, for chart names.
    pub fn slug(self) -> String {
        match self {
            Load::Rate(rate) => rate.to_string(),
            Load::Max => "max".to_string(),
            Load::Connections(count) => format!("{count}conns"),
        }
    }
}

/// The whole matrix and its method.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    pub scenarios: Vec<ScenarioKind>,
    pub workloads: Vec<Workload>,
    /// Measured seconds of each repeat.
    pub duration: Duration,
    /// Load before the repeats, not measured: connections, caches and allocators settle.
    pub warmup: Duration,
    pub repeats: usize,
    /// When set, only the loads named here run (by [`Load::label`]: `2000/s`, `max`,
    /// `1000 conns`); a workload with none of them is skipped.
    pub only_loads: Option<Vec<Load>>,
}

impl Plan {
    pub fn new(mode: Mode) -> Self {
        let (duration, warmup, repeats) = match mode {
            Mode::Quick => (Duration::from_secs(1), Duration::from_millis(300), 1),
            Mode::Standard => (Duration::from_secs(10), Duration::from_secs(3), 3),
            Mode::Full => (Duration::from_secs(10), Duration::from_secs(5), 5),
        };
        Plan {
            mode,
            scenarios: ScenarioKind::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
            duration,
            warmup,
            repeats,
            only_loads: None,
        }
    }

    /// The loads a workload runs at. Quick mode keeps one rate and the knee, so every
    /// code path runs once.
    pub fn loads(&self, workload: Workload) -> Vec<Load> {
        let mut loads = self.matrix_loads(workload);
        if let Some(only) = &self.only_loads {
            loads.retain(|load| only.contains(load));
        }
        loads
    }

    fn matrix_loads(&self, workload: Workload) -> Vec<Load> {
        let quick = self.mode == Mode::Quick;
        match workload {
            Workload::Http1 | Workload::Grpc if quick => vec![Load::Rate(200), Load::Max],
            Workload::Http1 | Workload::Grpc => vec![
                Load::Rate(20),
                Load::Rate(200),
                Load::Rate(2_000),
                Load::Rate(5_000),
                Load::Max,
            ],
            Workload::NewConnection | Workload::NewMtlsConnection if quick => {
                vec![Load::Rate(200), Load::Max]
            }
            Workload::NewConnection | Workload::NewMtlsConnection => {
                vec![
                    Load::Rate(20),
                    Load::Rate(200),
                    Load::Rate(2_000),
                    Load::Max,
                ]
            }
            Workload::Bulk => vec![Load::Max],
            Workload::Idle => vec![Load::Connections(1_000)],
        }
    }

    /// The time spent sending load: each cell's warm-up and repeats, over every
    /// scenario. Starting the scenarios and holding idle connections come on top
    /// (a few seconds per scenario).
    pub fn load_time(&self) -> Duration {
        let per_cell = self.warmup + self.duration * self.repeats as u32;
        let cells: usize = self
            .workloads
            .iter()
            .filter(|workload| **workload != Workload::Idle)
            .map(|workload| self.loads(*workload).len())
            .sum();
        per_cell * (cells * self.scenarios.len()) as u32
    }

    /// Whether the worst repeat is dropped: only when at least two remain.
    pub fn drops_worst(&self) -> bool {
        self.repeats >= 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_loads_run_and_names_read_as_the_labels_print_them() {
        assert_eq!(Load::parse("2000"), Some(Load::Rate(2_000)));
        assert_eq!(Load::parse("2000/s"), Some(Load::Rate(2_000)));
        assert_eq!(Load::parse("max"), Some(Load::Max));
        assert_eq!(Load::parse("1000conns"), Some(Load::Connections(1_000)));
        assert_eq!(Load::parse("fast"), None);
        let mut plan = Plan::new(Mode::Standard);
        plan.only_loads = Some(vec![Load::Rate(2_000), Load::Max]);
        assert_eq!(plan.loads(Workload::Http1), [Load::Rate(2_000), Load::Max]);
        assert_eq!(plan.loads(Workload::Bulk), [Load::Max]);
        assert_eq!(plan.loads(Workload::Idle), []);
    }

    #[test]
    fn quick_mode_touches_every_workload_with_one_rate_and_the_knee() {
        let plan = Plan::new(Mode::Quick);
        for workload in Workload::ALL {
            assert!(!plan.loads(workload).is_empty(), "{workload:?}");
        }
        assert_eq!(plan.loads(Workload::Http1), [Load::Rate(200), Load::Max]);
        assert!(!plan.drops_worst());
    }

    #[test]
    fn full_mode_runs_the_published_rate_steps_five_times_and_drops_the_worst() {
        let plan = Plan::new(Mode::Full);
        let rates = plan.loads(Workload::Http1);
        assert_eq!(rates.len(), 5);
        assert!(rates.contains(&Load::Rate(2_000)) && rates.contains(&Load::Max));
        assert_eq!(plan.repeats, 5);
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert_eq!(plan.warmup, Duration::from_secs(5));
        assert!(plan.drops_worst());
    }

    #[test]
    fn a_full_run_of_every_scenario_sends_load_for_about_an_hour_and_three_quarters() {
        // 19 cells per scenario (http1 5, grpc 5, new_connection 4,
        // new_mtls_connection 4, bulk 1), 5 s warm-up + 5 × 10 s each, 6 scenarios.
        let plan = Plan::new(Mode::Full);
        assert_eq!(plan.load_time(), Duration::from_secs(6 * 19 * 55));
    }

    #[test]
    fn the_handshake_workload_runs_at_the_loads_of_the_new_connection_one() {
        for mode in [Mode::Quick, Mode::Standard, Mode::Full] {
            let plan = Plan::new(mode);
            assert_eq!(
                plan.loads(Workload::NewMtlsConnection),
                plan.loads(Workload::NewConnection),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn workloads_are_named_for_the_command_line_and_back() {
        for workload in Workload::ALL {
            assert_eq!(Workload::parse(workload.name()), Some(workload));
        }
        assert_eq!(Workload::parse("nope"), None);
    }
}
