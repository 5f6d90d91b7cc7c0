//! The load generator: open loop at a constant rate with latencies measured from each
//! request's intended send time (as wrk2 does), or closed loop as fast as the target
//! answers (`--max`, to find the knee).
//!
//! It runs on the same two cores as what it measures, so it is built to cost little:
//! one current-thread runtime per generator thread, each owning a fixed share of the
//! connections and of the rate, hyper's bare client connections, and per-thread
//! histograms merged once at the end. It reports its own CPU per request and how far
//! its sends lagged behind the timetable, so a run can show it was not the bottleneck.

mod client;
mod hold;
mod report;
mod schedule;
mod worker;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use http::Uri;

pub use client::{ECHO_PATH, RESPONSE_SIZE_HEADER};
pub use hold::{HoldReport, hold};
pub use report::{LoadReport, Percentiles, export, import, pool};
pub use schedule::{Schedule, Ticker};
pub use worker::new_histogram;

use crate::Error;

/// The wire protocol of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c), as meshes speak it inside.
    Http2,
    /// gRPC unary calls to the built-in echo service, over h2c.
    Grpc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Requests per second on a fixed timetable.
    Rate(f64),
    /// Each request slot sends its next request as soon as the last one is answered.
    Max,
}

/// Where the requests go, resolved once before the run.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// `host:port` as written in the URL, for `Host` and `:authority`.
    pub authority: String,
    pub path_and_query: String,
    /// The whole URL, for h2's pseudo-headers.
    pub uri: String,
}

impl Target {
    /// Parses and resolves `http://HOST[:PORT][/PATH]`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// is supported (TLS is the mesh's job)"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|source| Error::Resolve {
                host: host.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| invalid("the host resolves to no address"))?;
        let path_and_query = uri
            .path_and_query()
            .map_or("/".to_string(), ToString::to_string);
        Ok(Target {
            url: url.to_string(),
            addr,
            authority: authority.to_string(),
            uri: format!("http://{authority}{path_and_query}"),
            path_and_query,
        })
    }
}

/// One load run, validated.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: Target,
    pub protocol: Protocol,
    pub pacing: Pacing,
    pub duration: Duration,
    /// Connections kept open for the run (or, with a new connection per request, the
    /// number of requests in flight at most).
    pub connections: usize,
    /// Concurrent requests per connection (h2 and gRPC only).
    pub streams: usize,
    pub new_connection_per_request: bool,
    /// Request body bytes (a POST when non-zero).
    pub body_size: usize,
    /// Asks the built-in backends for this many response bytes.
    pub response_size: Option<usize>,
    /// A request not answered within this counts as an error.
    pub timeout: Duration,
    /// Generator threads, each with its own runtime.
    pub threads: usize,
    /// Keep the latency histogram in the report, for pooling.
    pub keep_histogram: bool,
}

impl LoadConfig {
    /// Checks the settings that would make the run meaningless, naming each bad value.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |name, value: String, reason| {
            Err(Error::InvalidSetting {
                name,
                value,
                reason,
            })
        };
        if let Pacing::Rate(rate) = self.pacing
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid("--rate", rate.to_string(), "must be a positive number");
        }
        if self.duration.is_zero() {
            return invalid("--duration", "0s".into(), "must be longer than zero");
        }
        if self.connections == 0 {
            return invalid("--connections", "0".into(), "must be at least 1");
        }
        if self.streams == 0 {
            return invalid("--streams", "0".into(), "must be at least 1");
        }
        if self.streams > 1 && self.protocol == Protocol::Http1 {
            return invalid(
                "--streams",
                self.streams.to_string(),
                "HTTP/1.1 carries one request at a time per connection; use --http2 or --grpc",
            );
        }
        if self.threads == 0 || self.threads > self.connections {
            return invalid(
                "--threads",
                self.threads.to_string(),
                "must be between 1 and --connections",
            );
        }
        Ok(())
    }
}

/// Runs the load and reports on it. Blocks the calling thread for the run.
pub fn run(config: LoadConfig) -> Result<LoadReport, Error> {
    config.validate()?;
    let config = Arc::new(config);
    let barrier = Arc::new(Barrier::new(config.threads));
    let start = Arc::new(OnceLock::new());

    let mut threads = Vec::with_capacity(config.threads);
    for index in 0..config.threads {
        let share = share_of(&config, index);
        let (config, barrier, start) = (config.clone(), barrier.clone(), start.clone());
        let thread = std::thread::Builder::new()
            .name(format!("load-{index}"))
            .spawn(move || worker::run_thread(config, share, barrier, start))
            .map_err(|source| Error::io("start a load generator thread", source))?;
        threads.push(thread);
    }
    let mut tally = worker::Tally::new();
    for thread in threads {
        let part = thread.join().map_err(|_| Error::Report {
            what: "a load generator thread".into(),
            detail: "it panicked".into(),
        })??;
        let _ = tally.latency.add(&part.latency);
        let _ = tally.service.add(&part.service);
        tally.ok += part.ok;
        tally.bytes += part.bytes;
        for (kind, count) in part.errors {
            *tally.errors.entry(kind).or_default() += count;
        }
        tally.last_done = tally.last_done.max(part.last_done);
        tally.cpu_seconds += part.cpu_seconds;
    }
    let start = start.get().copied().unwrap_or_else(Instant::now);

    if tally.ok == 0 && tally.errors.contains_key("connect") {
        return Err(Error::Io {
            what: format!("connect to {}", config.target.addr),
            source: std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "no request got through (is the server running?)",
            ),
        });
    }
    Ok(summarize(&config, &tally, start))
}

/// Thread `index`'s connections and rate: an even split, the remainder to the first.
fn share_of(config: &LoadConfig, index: usize) -> worker::ThreadShare {
    let base = config.connections / config.threads;
    let extra = usize::from(index < config.connections % config.threads);
    let connections = base + extra;
    let fraction = connections as f64 / config.connections as f64;
    let (rate, offset) = match config.pacing {
        Pacing::Rate(rate) => {
            let stagger = Duration::from_secs_f64(index as f64 / rate);
            (Some(rate * fraction), stagger)
        }
        Pacing::Max => (None, Duration::ZERO),
    };
    worker::ThreadShare {
        connections,
        rate,
        offset,
    }
}

fn summarize(config: &LoadConfig, tally: &worker::Tally, start: Instant) -> LoadReport {
    let elapsed = tally
        .last_done
        .map_or(config.duration, |last| {
            last.saturating_duration_since(start)
        })
        .max(config.duration)
        .as_secs_f64();
    let errors = tally.errors.values().sum::<u64>();
    let attempted = (tally.ok + errors).max(1);
    let mut report = LoadReport {
        url: config.target.url.clone(),
        protocol: config.protocol.name().to_string(),
        connections: config.connections,
        target_rate: match config.pacing {
            Pacing::Rate(rate) => Some(rate),
            Pacing::Max => None,
        },
        duration_s: config.duration.as_secs_f64(),
        requests: tally.ok,
        errors,
        errors_by_kind: tally
            .errors
            .iter()
            .map(|(kind, count)| (kind.to_string(), *count))
            .collect(),
        rate: tally.ok as f64 / elapsed,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        p9999_ms: 0.0,
        max_ms: 0.0,
        mean_ms: 0.0,
        service_p99_ms: Percentiles::of(&tally.service).p99_ms,
        bytes_received: tally.bytes,
        throughput_mb_s: tally.bytes as f64 / elapsed / 1e6,
        generator_cpu_us_per_request: tally.cpu_seconds * 1e6 / attempted as f64,
        histogram: config.keep_histogram.then(|| export(&tally.latency)),
    };
    report.set_percentiles(Percentiles::of(&tally.latency));
    report
}
