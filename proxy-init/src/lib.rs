//! Trellis proxy-init: computes, installs and removes the netfilter rules that send a
//! pod's TCP traffic through its sidecar proxy, and checks that they work; and names
//! the TCP congestion control of the pod's local routes.
//!
//! It runs once per pod, as an init container (or from `meshctl local run`), as root
//! with `CAP_NET_ADMIN` in the pod's network namespace, before the app starts. Every
//! rule lives in Trellis's own chains (or its own nftables table) in the nat hooks of
//! the *current* network namespace, and only the two jumps into them touch chains that
//! other software shares: an operator can trust that every TCP connection into and out
//! of the pod passes the proxy except the ones they excluded, and that nothing else is
//! changed but the congestion control of the routes to the pod's own addresses
//! (below).
//!
//! # The rules, and why each exists
//!
//! `TRELLIS_INBOUND`, jumped to from `PREROUTING` (connections arriving at the pod):
//! 1. `skip-proxy-ports`: TCP to the admin, inbound and outbound ports returns. Kubelet
//!    probes and Prometheus reach the admin server itself; a connection to a proxy
//!    listener is never redirected into another one (a loop).
//! 2. `skip-inbound-ports`: ports the operator keeps out of the mesh return.
//! 3. `redirect-inbound`: all other TCP goes to the inbound port, where the proxy reads
//!    the app port with `SO_ORIGINAL_DST`; or, with `--redirect-inbound-ports`,
//!    `redirect-inbound-ports` redirects only those.
//!
//! `TRELLIS_OUTPUT`, jumped to from `OUTPUT` (connections opened inside the pod):
//! 1. `skip-proxy-ports`: as inbound; e.g. a meshed Prometheus scraping other proxies'
//!    admin ports in plain HTTP.
//! 2. `proxy-uid-to-own-pod` (and `proxy-gid-to-own-pod`): the proxy connecting over
//!    `lo` to an address that is not loopback (its own pod IP, because the app called
//!    its own service and discovery named this pod) goes to the *inbound* port. The
//!    outbound side speaks mesh TLS; without this rule it would reach the app directly,
//!    which cannot read it, and an app calling itself would be silently broken.
//! 3. `skip-proxy-uid` (and `skip-proxy-gid`): the proxy's own connections leave as
//!    they are, or every connection it opens would loop back into it. UID/GID 0 is
//!    refused: it would exempt every root process in the pod.
//! 4. `skip-loopback`: everything else over `lo` stays there: the app talking to itself
//!    on `127.0.0.1` or on its own pod IP (that works, bypassing only its own proxy),
//!    and the proxy handing inbound connections to the app on `127.0.0.1`.
//! 5. `skip-outbound-ports`, `skip-outbound-cidrs`: the operator's exceptions return.
//! 6. `redirect-outbound`: all other TCP goes to the outbound port; or, with
//!    `--include-outbound-cidrs`, `redirect-outbound-cidrs` redirects only those
//!    networks (a family with none of them is not redirected at all).
//!
//! Only TCP is redirected; UDP (DNS) and everything else pass untouched. IPv6 gets the
//! same rules unless `--ipv6=false`: an unredirected family is a way around the mesh.
//!
//! # Backends
//!
//! `legacy` and `nft` write the chains above as `iptables-restore --noflush` documents
//! (one per family); `nftables` writes one `table inet trellis` for `nft -f`, whose
//! chains `inbound` and `outbound` hold the same rules. `auto` joins what the namespace
//! already uses (`detect.rs`).
//!
//! # Atomic, idempotent, repairing
//!
//! Each document is one kernel transaction. An iptables document declares both chains
//! (`:TRELLIS_INBOUND - [0:0]`, which in `--noflush` mode creates or flushes the
//! chain) and refills them, and adds a jump (`trellis/inbound-jump`,
//! `trellis/outbound-jump`) only where `iptables-save -t nat` lacks it, deleting
//! duplicates and old spellings. The nftables document deletes and recreates its table.
//! Either way a second run leaves the tables exactly as the first did, and whatever an
//! interrupted earlier run left is rewritten. If an IPv6 pass is rejected after the IPv4
//! pass applied, the IPv4 nat table is put back as it was. `--cleanup` removes the jumps
//! and chains (or the table), and nothing else.
//!
//! # Local routes
//!
//! After the rules, every route of the namespace's `local` table (the pod's own
//! addresses, loopback among them) gets `congctl reno`, so that the connections
//! between the app and its sidecar are not paced by a node default such as BBR;
//! routes to anywhere else keep the node's choice (`local_routes.rs`,
//! `--local-congestion-control`, `keep` to leave them). It is done with `ip -batch`;
//! its failure is a warning, since it changes only how fast the pod's loopback runs.
//! `--cleanup` takes the algorithm off again.
//!
//! # Exit codes
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | rules installed or removed, `--dry-run` printed the documents, or `validate` passed |
//! | 1 | I/O failure of our own: a pipe to iptables, or stdout |
//! | 2 | invalid command line: unknown flag, malformed port or port list, two proxy ports the same, UID/GID 0, a malformed `--local-congestion-control` |
//! | 3 | a firewall binary (`iptables-*`, `ip6tables-*`, `nft`) not found or not executable |
//! | 4 | permission denied: not root, or no `CAP_NET_ADMIN` |
//! | 5 | reading the current rules failed for another reason |
//! | 6 | the rules were rejected; nothing was changed |
//! | 7 | `validate`: outbound connections are not redirected to the proxy |
//! | 8 | unknown `--backend` |
//! | 9 | malformed `--skip-outbound-cidrs` / `--include-outbound-cidrs` |
//!
//! # Layout
//! - `main.rs`: flags (clap, each also `TRELLIS_*`), the run, exit codes.
//! - `settings.rs`: [`Settings`] and the checks across them; `ports.rs` and `cidr.rs`:
//!   parsing port lists and networks.
//! - `rules.rs`: the rules as values, for each family.
//! - `restore.rs`: [`render`] / [`render_cleanup`], iptables-restore documents; golden
//!   tests in `restore/tests.rs`. `table.rs`: reading an `iptables-save -t nat` dump.
//! - `nftables.rs`: [`render_nftables`], the `table inet trellis` document.
//! - `backend.rs`: installing and removing with one backend; `detect.rs`: `auto`.
//! - `local_routes.rs`: the congestion control of the local routes, with `ip`.
//! - `command.rs`, `iptables.rs`, `nft.rs`: running the binaries.
//! - `validate.rs`: [`validate`], the check that traffic really is redirected.
//! - `error.rs`: [`Error`], one variant per cause, and the exit codes.

mod backend;
mod cidr;
mod command;
mod detect;
mod error;
mod iptables;
mod local_routes;
mod nft;
mod nftables;
mod ports;
mod restore;
mod rules;
mod settings;
mod table;
mod validate;

pub use backend::{Backend, BackendChoice, Binaries, Flavour, Pass};
pub use cidr::{Cidr, CidrList, Family};
pub use detect::detect;
pub use error::{
    EXIT_BAD_CIDR, EXIT_IO, EXIT_NO_BINARY, EXIT_NOT_REDIRECTED, EXIT_PERMISSION,
    EXIT_RESTORE_FAILED, EXIT_SAVE_FAILED, EXIT_UNKNOWN_BACKEND, EXIT_USAGE, Error, PortListError,
    env_of,
};
pub use iptables::Iptables;
pub use local_routes::{Ip, LocalCongestion, RouteError};
pub use nft::Nft;
pub use nftables::{NFT_TABLE, render_nftables, render_nftables_cleanup};
pub use ports::{PortList, PortSpec, port_for_flag};
pub use restore::{INBOUND_CHAIN, OUTPUT_CHAIN, render, render_cleanup};
pub use settings::Settings;
pub use validate::{Validation, validate};
