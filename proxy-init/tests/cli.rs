//! What an operator sees from the command line, without root: the document `--dry-run`
//! prints, and the one-line error and exit code of each way proxy-init can fail.
//!
//! `testdata/fake-iptables` stands in for iptables-save and iptables-restore where a
//! test needs them to answer in a particular way.

use std::path::PathBuf;
use std::process::{Command, Output};

const PROXY_INIT: &str = env!("CARGO_BIN_EXE_trellis-proxy-init");

/// The document for the default settings in a fresh namespace.
const DEFAULT_DOCUMENT: &str = r#"*nat
:TRELLIS_INBOUND - [0:0]
:TRELLIS_OUTPUT - [0:0]
-A TRELLIS_INBOUND -p tcp --dport 4191 -m comment --comment "trellis/skip-admin-port" -j RETURN
-A TRELLIS_INBOUND -p tcp -m comment --comment "trellis/redirect-inbound" -j REDIRECT --to-ports 4143
-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -m comment --comment "trellis/skip-proxy-uid" -j RETURN
-A TRELLIS_OUTPUT -o lo -m comment --comment "trellis/skip-loopback" -j RETURN
-A TRELLIS_OUTPUT -p tcp -m comment --comment "trellis/redirect-outbound" -j REDIRECT --to-ports 4140
-A PREROUTING -m comment --comment "trellis/inbound-jump" -j TRELLIS_INBOUND
-A OUTPUT -m comment --comment "trellis/outbound-jump" -j TRELLIS_OUTPUT
COMMIT
"#;

fn fake_iptables() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/fake-iptables")
}

/// proxy-init with both binaries replaced by the fake, answering as `mode`.
fn proxy_init_with_fake(mode: &str) -> Command {
    let fake = fake_iptables();
    let mut command = proxy_init();
    command
        .arg("--iptables-save")
        .arg(&fake)
        .arg("--iptables-restore")
        .arg(&fake)
        .env("FAKE_IPTABLES", mode);
    command
}

/// The binary, seeing only the flags and environment each test gives it.
fn proxy_init() -> Command {
    let mut command = Command::new(PROXY_INIT);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRELLIS_") {
            command.env_remove(key);
        }
    }
    command
}

/// The single `error: ...` line on stderr, checked to be the only one.
fn error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line in:\n{stderr}");
    errors[0].to_owned()
}

#[test]
fn dry_run_prints_the_document_even_where_iptables_cannot_be_read() {
    let output = proxy_init()
        .args(["--dry-run", "--iptables-save", "/nonexistent/iptables-save"])
        .output()
        .expect("run trellis-proxy-init");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), DEFAULT_DOCUMENT);
}

#[test]
fn the_document_applied_is_the_one_dry_run_prints() {
    let record = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("proxy-init-record-{}", std::process::id()));
    let flags = ["--skip-outbound-ports", "443,6379-6380"];

    let run = |extra: &[&str]| {
        proxy_init_with_fake("records")
            .args(flags)
            .args(extra)
            .env("FAKE_IPTABLES_RECORD", &record)
            .output()
            .expect("run trellis-proxy-init")
    };
    let dry_run = run(&["--dry-run"]);
    assert!(dry_run.status.success(), "{dry_run:?}");
    let applied = run(&[]);
    // Read before asserting, so that a failure still removes the file.
    let recorded = std::fs::read_to_string(&record);
    let _ = std::fs::remove_file(&record);

    assert!(applied.status.success(), "{applied:?}");
    let recorded = recorded.expect("the fake iptables-restore ran");
    let (arguments, document) = recorded.split_once('\n').expect("arguments line");
    assert_eq!(arguments, "-w --noflush");
    assert_eq!(document, String::from_utf8_lossy(&dry_run.stdout));
    assert!(document.contains("--dports 443,6379:6380"), "{document}");
}

#[test]
fn a_malformed_port_list_is_refused_naming_the_flag() {
    let output = proxy_init()
        .args(["--skip-inbound-ports", "25,http"])
        .output()
        .expect("run trellis-proxy-init");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        error_line(&output),
        "error: invalid --skip-inbound-ports (env TRELLIS_SKIP_INBOUND_PORTS) \"25,http\": \
         \"http\" is not a port number; expected e.g. 25,443,8000-8100"
    );
}

#[test]
fn a_missing_iptables_is_named_with_its_flag() {
    let output = proxy_init()
        .args(["--iptables-save", "/nonexistent/iptables-save"])
        .output()
        .expect("run trellis-proxy-init");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        error_line(&output),
        "error: /nonexistent/iptables-save not found: install iptables, or point \
         --iptables-save (env TRELLIS_IPTABLES_SAVE) at the binary"
    );
}

#[test]
fn without_net_admin_the_error_says_which_capability_is_missing() {
    let output = proxy_init_with_fake("denied")
        .output()
        .expect("run trellis-proxy-init");
    assert_eq!(output.status.code(), Some(4));
    let line = error_line(&output);
    assert!(
        line.contains("Permission denied (you must be root)"),
        "{line}"
    );
    assert!(line.contains("CAP_NET_ADMIN"), "{line}");
}

#[test]
fn a_rejected_document_reports_iptables_own_words() {
    let output = proxy_init_with_fake("rejects")
        .arg("--cleanup")
        .output()
        .expect("run trellis-proxy-init");
    assert_eq!(output.status.code(), Some(6));
    let line = error_line(&output);
    assert!(line.contains("nothing was changed"), "{line}");
    assert!(
        line.ends_with("too many ports specified; Error occurred at line: 4"),
        "{line}"
    );
}
