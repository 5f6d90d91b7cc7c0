//! The Trellis benchmark harness: what the mesh costs in latency, CPU and memory,
//! against no mesh at all and against other proxies, measured the way Linkerd's
//! published benchmarks are (Kinvolk's method: constant-rate load corrected for
//! coordinated omission, repeats with the worst dropped, percentile and resource
//! tables).
//!
//! This crate owns:
//! - the load generator ([`load`]), usable on its own against any URL like wrk2 or oha;
//! - the built-in backends ([`serve`]), so nothing outside the repo is measured;
//! - reading a process's CPU and memory from `/proc` ([`resources`]);
//! - the scenarios ([`scenario`]): baseline, Trellis one and two hops in pods, HAProxy
//!   and nginx with configs it writes; the plan of workloads and loads ([`plan`]);
//! - the run itself ([`run`]) and its reports ([`report`]): Markdown, SVG, JSON;
//! - discovery at scale ([`discovery_scale`]): one controller, many proxy streams.
//!
//! # Layout
//! - `load.rs`: settings and the run; `load/schedule.rs` the open-loop timetable and
//!   its timerfd ticker; `load/worker.rs` one generator thread; `load/client.rs` the
//!   HTTP/1.1, h2c and gRPC request; `load/report.rs` percentiles and pooling.
//! - `serve.rs`: `serve/http.rs` (hyper, HTTP/1.1 + h2c) and `serve/grpc.rs` (tonic).
//! - `resources.rs`: `/proc/PID/stat` and `/proc/PID/status`, and the machine.
//! - `plan.rs`: modes, workloads, loads. `run.rs`: the orchestration.
//! - `scenario.rs`: `scenario/topology.rs` (loopback or pods), `scenario/process.rs`
//!   (child processes), `scenario/reference.rs` (HAProxy, nginx),
//!   `scenario/trellis.rs` (controller, proxy-init, sidecars).
//! - `report.rs`: aggregation; `report/markdown.rs` and `report/svg.rs`.
//! - `discovery_scale.rs`: the config, the controller and the figures;
//!   `discovery_scale/stream.rs` one proxy-like discovery stream.
//! - `error.rs`: the crate's [`Error`].

pub mod discovery_scale;
mod error;
pub mod load;
pub mod plan;
pub mod report;
pub mod resources;
pub mod run;
pub mod scenario;
pub mod serve;

pub use error::Error;
