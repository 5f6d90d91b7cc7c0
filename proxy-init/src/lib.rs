//! Trellis proxy-init: computes, installs and removes the iptables rules that send a
//! pod's TCP traffic through its sidecar proxy.
//!
//! It runs once per pod, as an init container (or from `meshctl local run`), as root
//! with `CAP_NET_ADMIN` in the pod's network namespace, before the app starts. Everything
//! goes in the `nat` table of the *current* network namespace, through one
//! `iptables-restore --noflush` document: the kernel applies it as one transaction, so a
//! pod never runs with half its rules, and other software's rules are left alone.
//!
//! # The rules, and why each exists
//!
//! `TRELLIS_INBOUND`, jumped to from `PREROUTING` (traffic arriving at the pod):
//! 1. `-p tcp --dport <admin-port> -j RETURN` (`trellis/skip-admin-port`): kubelet
//!    probes and Prometheus talk to the proxy's admin server itself.
//! 2. `-p tcp -m multiport --dports <ports> -j RETURN` (`trellis/skip-inbound-ports`):
//!    ports the operator keeps out of the mesh; at most 15 port slots per rule (a range
//!    takes two), so long lists become several rules.
//! 3. `-p tcp -j REDIRECT --to-ports <inbound-port>` (`trellis/redirect-inbound`): all
//!    other inbound TCP reaches the proxy's inbound listener, which finds the app port
//!    with `SO_ORIGINAL_DST`.
//!
//! `TRELLIS_OUTPUT`, jumped to from `OUTPUT` (traffic leaving processes in the pod):
//! 1. `-m owner --uid-owner <proxy-uid> -j RETURN` (`trellis/skip-proxy-uid`): the
//!    proxy's own connections go out as they are, or they would loop into the proxy.
//! 2. `-o lo -j RETURN` (`trellis/skip-loopback`): traffic inside the pod, including
//!    the proxy forwarding inbound connections to the app on `127.0.0.1`.
//! 3. `-p tcp -m multiport --dports <ports> -j RETURN` (`trellis/skip-outbound-ports`).
//! 4. `-p tcp -j REDIRECT --to-ports <outbound-port>` (`trellis/redirect-outbound`).
//!
//! Only TCP is redirected; UDP (DNS) and everything else pass untouched.
//!
//! # Idempotence
//!
//! The document declares both chains (`:TRELLIS_INBOUND - [0:0]`, which in `--noflush`
//! mode creates the chain or flushes it) and rewrites their rules; the jumps
//! (`trellis/inbound-jump`, `trellis/outbound-jump`) are appended only if
//! `iptables-save -t nat` does not show them, and extra jumps are deleted. Running twice
//! leaves `iptables-save -t nat` as the first run did. `--cleanup` removes the jumps to
//! Trellis's chains and the chains, and nothing else.
//!
//! # Exit codes
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | rules installed or removed, or `--dry-run` printed the document |
//! | 1 | I/O failure of our own: a pipe to iptables, or stdout |
//! | 2 | invalid invocation: unknown flag, bad number, malformed port list |
//! | 3 | `iptables-save` / `iptables-restore` not found or not executable |
//! | 4 | permission denied: not root, or no `CAP_NET_ADMIN` |
//! | 5 | `iptables-save` failed for another reason |
//! | 6 | `iptables-restore` rejected the document; nothing was changed |
//!
//! # Layout
//! - `main.rs`: flags (clap, each also `TRELLIS_*`), the run, exit codes.
//! - `settings.rs`: [`Settings`] and port lists ([`PortList`], [`PortSpec`]).
//! - `rules.rs`: the rules as values and the pure [`render`] / [`render_cleanup`];
//!   golden tests in `rules/tests.rs`.
//! - `table.rs`: reading an `iptables-save -t nat` dump.
//! - `apply.rs`: [`Iptables`], running `iptables-save` and `iptables-restore`.
//! - `error.rs`: [`Error`], one variant per cause, and the exit codes.

mod apply;
mod error;
mod rules;
mod settings;
mod table;

pub use apply::Iptables;
pub use error::{
    EXIT_IO, EXIT_NO_BINARY, EXIT_PERMISSION, EXIT_RESTORE_FAILED, EXIT_SAVE_FAILED, EXIT_USAGE,
    Error, PortListError, env_of,
};
pub use rules::{INBOUND_CHAIN, OUTPUT_CHAIN, render, render_cleanup};
pub use settings::{PortList, PortSpec, Settings};
