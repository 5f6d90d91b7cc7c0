//! The tables over time: installing twice changes nothing, cleanup restores exactly
//! what was there, a half-installed earlier run is repaired, a failed run leaves no
//! partial rules, and `auto` joins whatever the namespace already uses.

use std::path::PathBuf;

use crate::for_each_backend;
use crate::support::{Backend, PEER_IP, PEER_IP6, Pod};

for_each_backend!(
    a_second_run_leaves_every_table_exactly_as_the_first,
    cleanup_restores_exactly_the_prior_state,
    a_half_installed_earlier_run_is_repaired,
    turning_ipv6_off_takes_an_earlier_runs_ipv6_rules_away,
);

fn a_second_run_leaves_every_table_exactly_as_the_first(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    let flags = [
        "--skip-inbound-ports",
        "25,8000-8100",
        "--skip-outbound-ports",
        "443",
        "--skip-outbound-cidrs",
        "10.96.0.0/12,fd00:96::/64",
        "--proxy-gid",
        "2103",
    ];
    pod.proxy_init(backend, &flags)?;
    let installed = pod.ruleset(backend)?;
    assert!(
        installed
            .to_lowercase()
            .contains("trellis/redirect-outbound"),
        "{installed}"
    );

    pod.proxy_init(backend, &flags)?;
    assert_eq!(
        pod.ruleset(backend)?,
        installed,
        "a second run changed the tables"
    );
    Ok(())
}

fn cleanup_restores_exactly_the_prior_state(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    // Other software's rules, in the chains and hooks Trellis also uses.
    add_foreign_rules(&pod, backend)?;
    let before = pod.ruleset(backend)?;

    pod.proxy_init(backend, &["--skip-outbound-ports", "443"])?;
    let installed = pod.ruleset(backend)?;
    assert_ne!(installed, before, "the rules were installed");
    assert!(
        installed.contains("not-trellis"),
        "ours came in beside theirs"
    );

    pod.proxy_init(backend, &["--cleanup"])?;
    assert_eq!(pod.ruleset(backend)?, before, "cleanup left a trace");
    pod.proxy_init(backend, &["--cleanup"])?;
    assert_eq!(
        pod.ruleset(backend)?,
        before,
        "a second cleanup changed something"
    );
    Ok(())
}

fn a_half_installed_earlier_run_is_repaired(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    // What an interrupted, older, or hand-edited install might leave: our chains with
    // stray contents, a jump in an old spelling, one jump missing, IPv6 untouched.
    match backend {
        Backend::Legacy | Backend::Nft => {
            let iptables = format!("iptables-{}", backend.flag());
            pod.run(&iptables, ["-w", "-t", "nat", "-N", "TRELLIS_INBOUND"])?;
            pod.run(&iptables, ["-w", "-t", "nat", "-N", "TRELLIS_OUTPUT"])?;
            pod.run(
                &iptables,
                [
                    "-w",
                    "-t",
                    "nat",
                    "-A",
                    "TRELLIS_INBOUND",
                    "-p",
                    "tcp",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    "9999",
                ],
            )?;
            pod.run(
                &iptables,
                ["-w", "-t", "nat", "-A", "OUTPUT", "-j", "TRELLIS_OUTPUT"],
            )?;
        }
        Backend::Nftables => {
            pod.run("nft", ["add", "table", "inet", "trellis"])?;
            pod.run("nft", ["add", "chain", "inet", "trellis", "inbound"])?;
            pod.run(
                "nft",
                [
                    "add", "rule", "inet", "trellis", "inbound", "tcp", "dport", "9999", "return",
                ],
            )?;
        }
    }

    pod.proxy_init(backend, &[])?;
    let repaired = pod.ruleset(backend)?;
    assert!(
        !repaired.contains("9999"),
        "the stray rule survived:\n{repaired}"
    );

    // A clean install, after a cleanup, is the yardstick.
    pod.proxy_init(backend, &["--cleanup"])?;
    assert!(!pod.ruleset(backend)?.to_lowercase().contains("trellis"));
    pod.proxy_init(backend, &[])?;
    assert_eq!(
        pod.ruleset(backend)?,
        repaired,
        "repaired differs from a clean install"
    );
    Ok(())
}

fn turning_ipv6_off_takes_an_earlier_runs_ipv6_rules_away(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    pod.proxy_init(backend, &[])?;
    pod.proxy_init(backend, &["--ipv6=false"])?;
    let _proxy = pod.listen("outbound-proxy", "127.0.0.1:4140")?;
    let _proxy6 = pod.listen("outbound-proxy", "[::1]:4140")?;
    let _server6 = pod.peer_listen("server", &format!("[{PEER_IP6}]:80"))?;

    // The tables say what the latest run asked for, not the sum of all runs.
    assert!(
        pod.connect(&format!("[{PEER_IP6}]:80"))?
            .starts_with("server ")
    );
    assert!(
        pod.connect(&format!("{PEER_IP}:80"))?
            .starts_with("outbound-proxy ")
    );
    Ok(())
}

/// A run whose IPv6 pass is rejected, after its IPv4 pass went in, takes the IPv4
/// rules back out: no pod is ever left redirecting one family only. The rejection
/// comes from the test's stand-in ip6tables; IPv4 is the real kernel's.
fn a_rejected_ipv6_pass_leaves_no_partial_rules(backend: Backend) -> anyhow::Result<()> {
    let Some(pod) = Pod::create(backend)? else {
        return Ok(());
    };
    add_foreign_rules(&pod, backend)?;
    let before = pod.ruleset(backend)?;

    let fake = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/fake-iptables");
    let record = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "rollback-{}-{}",
        backend.flag(),
        pod.netns
    ));
    let fake = fake.to_string_lossy();
    let output = pod
        .proxy_init_command(
            backend.flag(),
            &["--ip6tables-save", &fake, "--ip6tables-restore", &fake],
        )
        .env("FAKE_IPTABLES", "rejects-ipv6")
        .env("FAKE_IPTABLES_RECORD", &record)
        .output()?;
    let _ = std::fs::remove_file(&record);

    assert_eq!(output.status.code(), Some(6), "{output:?}");
    assert_eq!(pod.ruleset(backend)?, before, "IPv4 rules were left behind");
    Ok(())
}

mod rollback {
    #[test]
    fn legacy() -> anyhow::Result<()> {
        super::a_rejected_ipv6_pass_leaves_no_partial_rules(crate::support::Backend::Legacy)
    }

    #[test]
    fn nft() -> anyhow::Result<()> {
        super::a_rejected_ipv6_pass_leaves_no_partial_rules(crate::support::Backend::Nft)
    }
}

#[test]
fn switching_backends_moves_the_rules_and_auto_cleanup_finds_them() -> anyhow::Result<()> {
    let all = [Backend::Legacy, Backend::Nft, Backend::Nftables];
    let Some(pod) = Pod::create_for(&all)? else {
        return Ok(());
    };
    pod.proxy_init(Backend::Legacy, &[])?;
    assert!(pod.ruleset(Backend::Legacy)?.contains("TRELLIS_OUTPUT"));

    // Exactly one set of rules redirects: the new backend's.
    pod.proxy_init(Backend::Nftables, &[])?;
    assert!(
        pod.ruleset(Backend::Nftables)?
            .contains("table inet trellis")
    );
    assert!(!pod.ruleset(Backend::Legacy)?.contains("TRELLIS"));

    let status = pod.proxy_init_command("auto", &["--cleanup"]).status()?;
    assert!(status.success());
    for backend in all {
        let ruleset = pod.ruleset(backend)?;
        assert!(
            !ruleset.to_lowercase().contains("trellis"),
            "{backend:?}: {ruleset}"
        );
    }
    Ok(())
}

#[test]
fn auto_uses_iptables_nft_in_a_fresh_namespace() -> anyhow::Result<()> {
    let Some(pod) = Pod::create_for(&[Backend::Nft, Backend::Nftables])? else {
        return Ok(());
    };
    assert!(pod.proxy_init_command("auto", &[]).status()?.success());
    assert!(pod.ruleset(Backend::Nft)?.contains(":TRELLIS_OUTPUT"));
    assert!(
        !pod.ruleset(Backend::Nftables)?
            .contains("table inet trellis")
    );
    Ok(())
}

#[test]
fn auto_joins_native_nftables() -> anyhow::Result<()> {
    let Some(pod) = Pod::create_for(&[Backend::Nft, Backend::Nftables])? else {
        return Ok(());
    };
    add_foreign_rules(&pod, Backend::Nftables)?;
    assert!(pod.proxy_init_command("auto", &[]).status()?.success());
    assert!(
        pod.ruleset(Backend::Nftables)?
            .contains("table inet trellis")
    );
    assert!(!pod.ruleset(Backend::Nft)?.contains("TRELLIS"));
    Ok(())
}

#[test]
fn auto_joins_legacy_iptables() -> anyhow::Result<()> {
    let Some(pod) = Pod::create_for(&[Backend::Legacy, Backend::Nft])? else {
        return Ok(());
    };
    add_foreign_rules(&pod, Backend::Legacy)?;
    assert!(pod.proxy_init_command("auto", &[]).status()?.success());
    assert!(pod.ruleset(Backend::Legacy)?.contains(":TRELLIS_OUTPUT"));
    assert!(!pod.ruleset(Backend::Nft)?.contains("TRELLIS"));
    Ok(())
}

/// Rules another program might own, in both families, in the hooks Trellis uses.
fn add_foreign_rules(pod: &Pod, backend: Backend) -> anyhow::Result<()> {
    match backend {
        Backend::Legacy | Backend::Nft => {
            for program in ["iptables", "ip6tables"] {
                let program = format!("{program}-{}", backend.flag());
                for chain in ["PREROUTING", "OUTPUT"] {
                    pod.run(
                        &program,
                        [
                            "-w",
                            "-t",
                            "nat",
                            "-A",
                            chain,
                            "-p",
                            "udp",
                            "--dport",
                            "53",
                            "-m",
                            "comment",
                            "--comment",
                            "not-trellis",
                            "-j",
                            "ACCEPT",
                        ],
                    )?;
                }
            }
        }
        Backend::Nftables => {
            pod.run("nft", ["add", "table", "inet", "other"])?;
            pod.run(
                "nft",
                [
                    "add",
                    "chain",
                    "inet",
                    "other",
                    "out",
                    "{ type nat hook output priority 0; }",
                ],
            )?;
            pod.run(
                "nft",
                [
                    "add",
                    "rule",
                    "inet",
                    "other",
                    "out",
                    "udp",
                    "dport",
                    "53",
                    "accept",
                    "comment",
                    "\"not-trellis\"",
                ],
            )?;
        }
    }
    Ok(())
}
