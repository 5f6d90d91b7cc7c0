//! Helpers for Trellis's end-to-end tests, which run the real binaries in network
//! namespaces and read like stories (see `tests/`).
//!
//! A test first asks [`host_can_run_pods`]: without root or the tools it prints why and
//! returns early, unless `TRELLIS_E2E=require` (CI), where it fails with the reason.
//! Every test then builds its own mesh with its own bridge, subnet and namespace names
//! ([`Names`]), so tests run in parallel, and every piece is removed by a `Drop` guard
//! however the test ends.
//!
//! # Layout
//! - `gate.rs`: whether this host can run the tests, and the `TRELLIS_E2E` rule.
//! - `binaries.rs`: the built binaries next to the test executable.
//! - `names.rs`: per-test names and subnets that do not collide.
//! - `mesh.rs`: a bridge, a controller and its config directory ([`Mesh`]);
//!   `pod.rs`: pods with sidecars ([`MeshPod`]).
//! - `proxy_config.rs`: what a sidecar's `/config` says discovery told it.
//! - `scripted.rs`: a controller whose discovery answers are the test's script.
//! - `issuer.rs`: the test's own ServiceAccount token issuer (key, JWKS, tokens).
//! - `daemon.rs`: a child process that is stopped when dropped.
//! - `echo.rs`: a TCP echo app on a thread inside a pod, and what a client sees of it;
//!   `echo_service.rs`: the pods and YAML of the discovery stories' echo service.
//! - `two_pods.rs`: the mTLS-path stories' client and server pods, made by
//!   `pod_pair.rs`, the client and server pods every two-pod story starts from.
//! - `http_app.rs`: an HTTP/1.1 and h2c app on a thread inside a pod;
//!   `curl.rs`: curl as a pod's app (or from the host), and what it saw.
//! - `py.rs`: the Python apps of `tests/py/` (grpcio, websockets) inside pods.
//! - `capture.rs`: tcpdump on a link; `pcap.rs`: reading what it wrote.
//! - `http.rs`: bare HTTP GETs and summing Prometheus counters.

mod binaries;
mod capture;
mod curl;
mod daemon;
mod echo;
mod echo_service;
mod gate;
mod http;
mod http_app;
mod issuer;
mod mesh;
mod names;
pub mod pcap;
mod pod;
mod pod_pair;
mod proxy_config;
mod py;
mod scripted;
mod two_pods;

pub use binaries::binary;
pub use capture::Capture;
pub use curl::{CurlRun, Transfer, curl_in, curl_on_host};
pub use daemon::Daemon;
pub use echo::{EchoServer, ask, ends_unanswered, read_line, round_trip};
pub use echo_service::{ECHO_PORT, EchoPods, SERVICE_PORT, echo_service_yaml};
pub use gate::host_can_run_pods;
pub use http::{Metrics, http_get, wait_until};
pub use http_app::{HttpApp, pattern, pattern_break};
pub use issuer::TestIssuer;
pub use mesh::Mesh;
pub use names::Names;
pub use pod::{INBOUND_PORT, MeshPod};
pub use pod_pair::PodPair;
pub use proxy_config::ProxyConfig;
pub use py::{PyServer, py_client, python};
pub use scripted::{ProxyStream, ScriptedController, World};
pub use two_pods::TwoPods;
