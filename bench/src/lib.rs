//! The Trellis benchmark harness (not built yet: the benchmark issue owns it).
//!
//! It will own a Linkerd-style open-loop load generator with coordinated-omission
//! correction, built-in HTTP/1.1, h2 and gRPC backends, the baseline / one-hop /
//! two-hop / reference-proxy scenarios run on one host, and the Markdown, SVG and JSON
//! reports behind `BENCHMARKS.md`.
