//! `trellis-proxy-init validate` tells a working redirect from a missing one.

use std::process::Output;

use crate::for_each_backend;
use crate::support::{Backend, PEER_IP, PEER_IP6, Pod};

for_each_backend!(validate_passes_with_the_rules_and_fails_without_them);

fn validate_passes_with_the_rules_and_fails_without_them(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    // The peer listens nowhere on this port: an unredirected connection is refused.
    let v4 = format!("{PEER_IP}:20001");
    let v6 = format!("[{PEER_IP6}]:20001");

    let without = validate(&pod, &v4)?;
    assert_eq!(without.status.code(), Some(7), "{without:?}");
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(stderr.contains("not redirected"), "{stderr}");

    pod.proxy_init(backend, &[])?;
    for addr in [&v4, &v6] {
        let with = validate(&pod, addr)?;
        assert!(with.status.success(), "validate {addr}: {with:?}");
    }
    Ok(())
}

fn validate(pod: &Pod, connect_addr: &str) -> anyhow::Result<Output> {
    let mut command = trellis_netns::exec_in(&pod.netns, crate::support::PROXY_INIT);
    command.args([
        "validate",
        "--connect-addr",
        connect_addr,
        "--timeout",
        "3s",
    ]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRELLIS_") {
            command.env_remove(key);
        }
    }
    Ok(command.output()?)
}
