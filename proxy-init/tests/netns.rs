//! One pod's network namespace, for real: proxy-init installs its rules, installs them
//! again without changing anything, and cleans up, leaving other software's rules alone.
//!
//! Needs root and `ip` (iproute2). Without them the test says why and passes, unless
//! `TRELLIS_E2E=require` is set (CI), where a skipped end-to-end test is a failure.

use std::ffi::OsStr;
use std::process::{Command, Output};

use anyhow::{Context as _, bail};

const PROXY_INIT: &str = env!("CARGO_BIN_EXE_trellis-proxy-init");

#[test]
fn rules_install_once_survive_a_rerun_and_clean_up_without_touching_others() -> anyhow::Result<()> {
    let Some(pod) = namespace_or_skip()? else {
        return Ok(());
    };

    // Another program's rule in a shared chain: Trellis must neither move nor remove it.
    pod.run(
        "iptables",
        [
            "-t",
            "nat",
            "-A",
            "OUTPUT",
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
    let before = pod.nat_table()?;

    let flags = [
        "--skip-inbound-ports",
        "25,8000-8100",
        "--skip-outbound-ports",
        "443",
    ];
    pod.proxy_init(flags)?;
    let installed = pod.nat_table()?;
    assert!(installed.contains(":TRELLIS_INBOUND -\n"), "{installed}");
    assert!(installed.contains(":TRELLIS_OUTPUT -\n"), "{installed}");
    assert_eq!(
        comments_in(&installed, "PREROUTING"),
        ["trellis/inbound-jump"]
    );
    assert_eq!(
        comments_in(&installed, "OUTPUT"),
        ["not-trellis", "trellis/outbound-jump"]
    );
    assert_eq!(
        comments_in(&installed, "TRELLIS_INBOUND"),
        [
            "trellis/skip-admin-port",
            "trellis/skip-inbound-ports",
            "trellis/redirect-inbound"
        ]
    );
    assert_eq!(
        comments_in(&installed, "TRELLIS_OUTPUT"),
        [
            "trellis/skip-proxy-uid",
            "trellis/skip-loopback",
            "trellis/skip-outbound-ports",
            "trellis/redirect-outbound"
        ]
    );
    for (chain, fragments) in [
        ("PREROUTING", &["-j TRELLIS_INBOUND"][..]),
        ("OUTPUT", &["-j TRELLIS_OUTPUT"]),
        ("TRELLIS_INBOUND", &["-p tcp", "--dport 4191", "-j RETURN"]),
        ("TRELLIS_INBOUND", &["--dports 25,8000:8100", "-j RETURN"]),
        (
            "TRELLIS_INBOUND",
            &["-p tcp", "-j REDIRECT --to-ports 4143"],
        ),
        ("TRELLIS_OUTPUT", &["--uid-owner 2102", "-j RETURN"]),
        ("TRELLIS_OUTPUT", &["-o lo", "-j RETURN"]),
        ("TRELLIS_OUTPUT", &["--dports 443", "-j RETURN"]),
        ("TRELLIS_OUTPUT", &["-p tcp", "-j REDIRECT --to-ports 4140"]),
    ] {
        assert_has_rule(&installed, chain, fragments);
    }

    pod.proxy_init(flags)?;
    assert_eq!(
        pod.nat_table()?,
        installed,
        "a second run must leave the table as it was"
    );

    pod.proxy_init(["--cleanup"])?;
    let cleaned = pod.nat_table()?;
    assert!(!cleaned.contains("TRELLIS"), "{cleaned}");
    assert_eq!(cleaned, before, "cleanup must restore the table exactly");

    pod.proxy_init(["--cleanup"])?;
    assert_eq!(pod.nat_table()?, before, "cleanup twice is harmless");
    Ok(())
}

/// A network namespace that exists for one test and is deleted when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    /// `Err` carries the reason the namespace cannot be made (a reason to skip).
    fn create() -> Result<Namespace, String> {
        let name = format!("trellis-init-test-{}", std::process::id());
        let output = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run `ip`: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`ip netns add {name}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Namespace { name })
    }

    /// Runs `program args` inside the namespace; a non-zero exit is an error with its
    /// stderr.
    fn run<I, S>(&self, program: &str, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args);
        // The binary under test must see only the flags given here.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRELLIS_") {
                command.env_remove(key);
            }
        }
        let output = command
            .output()
            .with_context(|| format!("running {program} in {}", self.name))?;
        if !output.status.success() {
            bail!(
                "{program} failed in {} ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output)
    }

    fn proxy_init<const N: usize>(&self, flags: [&str; N]) -> anyhow::Result<()> {
        self.run(PROXY_INIT, flags).map(drop)
    }

    /// `iptables-save -t nat`, without its timestamped `#` lines and chain counters.
    fn nat_table(&self) -> anyhow::Result<String> {
        let output = self.run("iptables-save", ["-t", "nat"])?;
        Ok(normalise(&String::from_utf8_lossy(&output.stdout)))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !deleted.is_ok_and(|status| status.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}

/// The namespace, or `None` after saying why the test is skipped. Under
/// `TRELLIS_E2E=require` a reason to skip is a failure instead.
fn namespace_or_skip() -> anyhow::Result<Option<Namespace>> {
    let created = missing_prerequisite().map_or_else(Namespace::create, Err);
    match created {
        Ok(namespace) => Ok(Some(namespace)),
        Err(reason) if std::env::var("TRELLIS_E2E").as_deref() == Ok("require") => {
            bail!("TRELLIS_E2E=require, but {reason}")
        }
        Err(reason) => {
            eprintln!(
                "skipping the network namespace test: {reason} (set TRELLIS_E2E=require to fail instead)"
            );
            Ok(None)
        }
    }
}

fn missing_prerequisite() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("it needs root, and runs as uid {uid}")),
        None => return Some("cannot read the effective uid from /proc/self/status".into()),
    }
    for (program, arg) in [("ip", "-V"), ("iptables-save", "--version")] {
        let runs = Command::new(program).arg(arg).output();
        if !runs.is_ok_and(|output| output.status.success()) {
            return Some(format!("`{program}` is not installed or not in PATH"));
        }
    }
    None
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

fn normalise(dump: &str) -> String {
    let mut table = String::new();
    for line in dump.lines().filter(|line| !line.starts_with('#')) {
        let line = if line.starts_with(':') {
            // `:OUTPUT ACCEPT [12:720]`: the counters change with traffic, not rules.
            line.rsplit_once(" [")
                .map_or(line, |(declaration, _)| declaration)
        } else {
            line
        };
        table.push_str(line);
        table.push('\n');
    }
    table
}

/// The `--comment` of each rule in `chain`, in order.
fn comments_in(table: &str, chain: &str) -> Vec<String> {
    let prefix = format!("-A {chain} ");
    table
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| {
            let (_, rest) = line.split_once("--comment ")?;
            let rest = rest.strip_prefix('"').unwrap_or(rest);
            let end = rest.find(['"', ' ']).unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        })
        .collect()
}

fn assert_has_rule(table: &str, chain: &str, fragments: &[&str]) {
    let prefix = format!("-A {chain} ");
    let found = table.lines().any(|line| {
        line.starts_with(&prefix) && fragments.iter().all(|fragment| line.contains(fragment))
    });
    assert!(found, "no rule in {chain} with {fragments:?} in:\n{table}");
}
