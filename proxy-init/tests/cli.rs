//! What an operator sees from the command line, without root: the documents `--dry-run`
//! prints, and the one-line error and exit code of each way proxy-init can fail.
//!
//! `testdata/fake-iptables` stands in for all four iptables binaries where a test needs
//! them to answer in a particular way; naming binaries also keeps `auto` from looking
//! at the host's real tables. `testdata/fake-ip` stands in for `ip` in every test, so
//! that none reads or changes the routes of the namespace the tests run in.

use std::path::PathBuf;
use std::process::{Command, Output};

const PROXY_INIT: &str = env!("CARGO_BIN_EXE_trellis-proxy-init");

/// The IPv4 document for the default settings in a fresh namespace.
const DEFAULT_IPV4: &str = r#"*nat
:TRELLIS_INBOUND - [0:0]
:TRELLIS_OUTPUT - [0:0]
-A TRELLIS_INBOUND -p tcp -m multiport --dports 4191,4143,4140 -m comment --comment "trellis/skip-proxy-ports" -j RETURN
-A TRELLIS_INBOUND -p tcp -m comment --comment "trellis/redirect-inbound" -j REDIRECT --to-ports 4143
-A TRELLIS_OUTPUT -p tcp -m multiport --dports 4191,4143,4140 -m comment --comment "trellis/skip-proxy-ports" -j RETURN
-A TRELLIS_OUTPUT -o lo ! -d 127.0.0.0/8 -p tcp -m owner --uid-owner 2102 -m comment --comment "trellis/proxy-uid-to-own-pod" -j REDIRECT --to-ports 4143
-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -m comment --comment "trellis/skip-proxy-uid" -j RETURN
-A TRELLIS_OUTPUT -o lo -m comment --comment "trellis/skip-loopback" -j RETURN
-A TRELLIS_OUTPUT -p tcp -m comment --comment "trellis/redirect-outbound" -j REDIRECT --to-ports 4140
-A PREROUTING -m comment --comment "trellis/inbound-jump" -j TRELLIS_INBOUND
-A OUTPUT -m comment --comment "trellis/outbound-jump" -j TRELLIS_OUTPUT
COMMIT
"#;

/// The `ip -batch` document for the fake's local routes, in the default settings.
const DEFAULT_LOCAL_ROUTES_IPV4: &str = "\
route replace local 10.0.0.5 dev eth0 proto kernel table local src 10.0.0.5 scope host congctl reno
route replace local 127.0.0.1 dev lo proto kernel table local src 127.0.0.1 scope host congctl reno
";
const DEFAULT_LOCAL_ROUTES_IPV6: &str = "\
route replace local ::1 dev lo proto kernel metric 1024 table local congctl reno
route del local ::1 dev lo proto kernel metric 0 table local
";

fn fake_iptables() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/fake-iptables")
}

fn fake_ip() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/fake-ip")
}

/// proxy-init with all four iptables binaries replaced by the fake, answering as `mode`
/// and recording what it is given in `record`.
fn proxy_init_with_fake(mode: &str, record: &Record) -> Command {
    let fake = fake_iptables();
    let mut command = proxy_init();
    for flag in [
        "--iptables-save",
        "--iptables-restore",
        "--ip6tables-save",
        "--ip6tables-restore",
    ] {
        command.arg(flag).arg(&fake);
    }
    command
        .env("FAKE_IPTABLES", mode)
        .env("FAKE_IPTABLES_RECORD", &record.0);
    command
}

/// The binary, seeing only the flags and environment each test gives it, and the
/// fake `ip`.
fn proxy_init() -> Command {
    let mut command = Command::new(PROXY_INIT);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRELLIS_") {
            command.env_remove(key);
        }
    }
    command.env("TRELLIS_IP", fake_ip());
    command
}

/// A file the fake appends to, removed when the test ends however it ends.
struct Record(PathBuf);

impl Record {
    fn new(test: &str) -> Record {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("proxy-init-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Record(path)
    }

    /// Each restore the fake took: its arguments and the document.
    fn restores(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.split("----\n")
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (arguments, document) = entry.split_once('\n').unwrap_or((entry, ""));
                (arguments.to_owned(), document.to_owned())
            })
            .collect()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The single `error: ...` line on stderr, checked to be the only one.
fn error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line in:\n{stderr}");
    errors[0].to_owned()
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run trellis-proxy-init")
}

#[test]
fn dry_run_prints_both_documents_even_where_iptables_cannot_be_read() {
    let output = run(proxy_init().args([
        "--dry-run",
        "--iptables-save",
        "/nonexistent/iptables-save",
        "--ip6tables-save",
        "/nonexistent/ip6tables-save",
    ]));
    assert!(output.status.success(), "{output:?}");
    let expected = format!(
        "# iptables-nft-restore -w --noflush\n{DEFAULT_IPV4}# ip6tables-nft-restore -w --noflush\n{}\
         # {} -batch -\n{DEFAULT_LOCAL_ROUTES_IPV4}{DEFAULT_LOCAL_ROUTES_IPV6}",
        DEFAULT_IPV4.replace("127.0.0.0/8", "::1/128"),
        fake_ip().display()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

#[test]
fn with_ipv6_off_dry_run_prints_only_the_ipv4_document() {
    let output = run(proxy_init().args([
        "--dry-run",
        "--ipv6=false",
        "--iptables-save",
        "/nonexistent/iptables-save",
    ]));
    assert!(output.status.success(), "{output:?}");
    let expected = format!(
        "# iptables-nft-restore -w --noflush\n{DEFAULT_IPV4}# {} -batch -\n{DEFAULT_LOCAL_ROUTES_IPV4}",
        fake_ip().display()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}

#[test]
fn the_nftables_backend_prints_one_table_for_both_families() {
    let output = run(proxy_init().args([
        "--dry-run",
        "--backend",
        "nftables",
        "--nft",
        "/nonexistent/nft",
    ]));
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with(
            "# /nonexistent/nft -f -\ntable inet trellis\ndelete table inet trellis\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("ip6 daddr != ::1/128"), "{stdout}");
}

#[test]
fn the_documents_applied_are_the_ones_dry_run_prints() {
    let record = Record::new("applied");
    let flags = ["--skip-outbound-ports", "443,6379-6380"];
    let dry_run = run(proxy_init_with_fake("records", &record)
        .args(flags)
        .arg("--dry-run"));
    assert!(dry_run.status.success(), "{dry_run:?}");
    let applied = run(proxy_init_with_fake("records", &record).args(flags));
    assert!(applied.status.success(), "{applied:?}");

    let restores = record.restores();
    assert_eq!(
        restores.len(),
        3,
        "one restore per family, then the routes: {restores:?}"
    );
    let mut printed = String::new();
    for (arguments, document) in &restores[..2] {
        assert_eq!(arguments, "-w --noflush");
        assert!(document.contains("--dports 443,6379:6380"), "{document}");
        printed.push_str(&format!(
            "# {} {arguments}\n{document}",
            fake_iptables().display()
        ));
    }
    let (arguments, document) = &restores[2];
    assert_eq!(arguments, "ip -batch -");
    assert_eq!(
        document,
        &format!("{DEFAULT_LOCAL_ROUTES_IPV4}{DEFAULT_LOCAL_ROUTES_IPV6}")
    );
    printed.push_str(&format!("# {} -batch -\n{document}", fake_ip().display()));
    assert_eq!(String::from_utf8_lossy(&dry_run.stdout), printed);
}

#[test]
fn a_rejected_ipv6_document_undoes_the_ipv4_rules_already_applied() {
    let record = Record::new("undo");
    let output = run(&mut proxy_init_with_fake("rejects-ipv6", &record));
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let line = error_line(&output);
    assert!(line.contains("nothing was changed"), "{line}");

    let restores = record.restores();
    let steps: Vec<&str> = restores.iter().map(|(args, _)| args.as_str()).collect();
    assert_eq!(
        steps,
        ["-w --noflush", "-w"],
        "apply IPv4, then put it back"
    );
    assert!(
        restores[0].1.contains("127.0.0.0/8"),
        "the IPv4 document first"
    );
    // What the fake's iptables-save showed before: the nat table without Trellis.
    assert_eq!(
        restores[1].1,
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
    );
}

#[test]
fn a_malformed_port_list_is_refused_naming_the_flag() {
    let output = run(proxy_init().args(["--skip-inbound-ports", "25,http"]));
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        error_line(&output),
        "error: invalid --skip-inbound-ports (env TRELLIS_SKIP_INBOUND_PORTS) \"25,http\": \
         \"http\" is not a port number; expected e.g. 25,443,8000-8100"
    );
}

#[test]
fn a_malformed_port_is_refused_naming_the_flag() {
    let output = run(proxy_init().args(["--outbound-port", "70000"]));
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        error_line(&output),
        "error: invalid --outbound-port (env TRELLIS_OUTBOUND_PORT) \"70000\": \
         \"70000\" is out of range: ports are 1-65535; expected one port, 1-65535"
    );
}

#[test]
fn a_malformed_cidr_is_refused_naming_the_flag() {
    let output = run(proxy_init().args(["--skip-outbound-cidrs", "10.0.0.0/8,fd00::/300"]));
    assert_eq!(output.status.code(), Some(9));
    assert_eq!(
        error_line(&output),
        "error: invalid --skip-outbound-cidrs (env TRELLIS_SKIP_OUTBOUND_CIDRS) \
         \"10.0.0.0/8,fd00::/300\": \"fd00::/300\" has a bad prefix length: 0-32 for IPv4, \
         0-128 for IPv6; expected e.g. 10.0.0.0/8,fd00::/8"
    );
}

#[test]
fn an_unknown_backend_is_refused_naming_the_flag() {
    let output = run(proxy_init().env("TRELLIS_BACKEND", "pf"));
    assert_eq!(output.status.code(), Some(8));
    assert_eq!(
        error_line(&output),
        "error: unknown --backend (env TRELLIS_BACKEND) \"pf\": expected legacy, nft, \
         nftables or auto"
    );
}

#[test]
fn root_as_the_proxy_uid_is_refused() {
    let output = run(proxy_init().args(["--proxy-uid", "0"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("every process running as root"));
}

#[test]
fn a_missing_iptables_is_named_with_its_flag() {
    let output = run(proxy_init().args(["--iptables-save", "/nonexistent/iptables-save"]));
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        error_line(&output),
        "error: /nonexistent/iptables-save not found: install iptables, or point \
         --iptables-save (env TRELLIS_IPTABLES_SAVE) at the binary"
    );
}

#[test]
fn a_missing_nft_is_named_with_its_flag() {
    let output = run(proxy_init().args(["--backend", "nftables", "--nft", "/nonexistent/nft"]));
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        error_line(&output),
        "error: /nonexistent/nft not found: install nftables, or point --nft (env \
         TRELLIS_NFT) at the binary"
    );
}

#[test]
fn without_net_admin_the_error_says_which_capability_is_missing() {
    let record = Record::new("denied");
    let output = run(&mut proxy_init_with_fake("denied", &record));
    assert_eq!(output.status.code(), Some(4));
    let line = error_line(&output);
    assert!(
        line.contains("Permission denied (you must be root)"),
        "{line}"
    );
    assert!(line.contains("CAP_NET_ADMIN"), "{line}");
    assert!(record.restores().is_empty(), "nothing was applied");
}

#[test]
fn a_rejected_document_reports_iptables_own_words() {
    let record = Record::new("rejects");
    let output = run(proxy_init_with_fake("rejects", &record).arg("--cleanup"));
    assert_eq!(output.status.code(), Some(6));
    let line = error_line(&output);
    assert!(line.contains("nothing was changed"), "{line}");
    assert!(
        line.ends_with("too many ports specified; Error occurred at line: 4"),
        "{line}"
    );
}

#[test]
fn validate_fails_with_its_own_exit_code_when_nothing_is_redirected() {
    // Without rules, the test connection to a closed loopback port is simply refused.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
    };
    let (closed, listen) = (free_port(), free_port());
    let output = run(proxy_init().args([
        "validate",
        "--outbound-port",
        &listen.port().to_string(),
        "--connect-addr",
        &closed.to_string(),
        "--timeout",
        "2s",
        "--proxy-uid",
        "4294967294",
    ]));
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    let line = error_line(&output);
    assert!(line.starts_with("error: validation failed: "), "{line}");
    assert!(line.contains("refused the connection"), "{line}");
}

#[test]
fn an_algorithm_ip_refuses_is_a_warning_and_the_rules_stay() {
    let record = Record::new("ip-refuses");
    let output = run(proxy_init_with_fake("records", &record)
        .args(["--local-congestion-control", "nosuchalgo"])
        .env("FAKE_IP", "rejects"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|line| line.contains("WARN"))
        .unwrap_or_default();
    assert!(
        warning.contains("Unknown tcp congestion algorithm")
            && warning.contains("--local-congestion-control"),
        "the warning gives ip's words and the flag: {stderr}"
    );
    assert_eq!(record.restores().len(), 2, "both families' rules applied");
}

#[test]
fn keep_leaves_the_routes_out_and_a_malformed_name_is_refused() {
    let output = run(proxy_init().args([
        "--dry-run",
        "--ipv6=false",
        "--iptables-save",
        "/nonexistent/iptables-save",
        "--local-congestion-control",
        "keep",
    ]));
    assert!(output.status.success(), "{output:?}");
    let expected = format!("# iptables-nft-restore -w --noflush\n{DEFAULT_IPV4}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);

    let output = run(proxy_init().env("TRELLIS_LOCAL_CONGESTION_CONTROL", "reno cubic"));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let line = error_line(&output);
    assert!(
        line.contains("--local-congestion-control")
            && line.contains("TRELLIS_LOCAL_CONGESTION_CONTROL")
            && line.contains("\"reno cubic\""),
        "{line}"
    );
}

#[test]
fn cleanup_dry_run_prints_the_routes_it_would_restore_and_changes_nothing() {
    let record = Record::new("cleanup-dry-run");
    let output = run(proxy_init_with_fake("records", &record)
        .args(["--cleanup", "--dry-run"])
        .env("FAKE_IP", "installed"));
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let routes = format!(
        "# {} -batch -\n\
         route replace local 10.0.0.5 dev eth0 proto kernel table local src 10.0.0.5 scope host\n\
         route replace local 127.0.0.1 dev lo proto kernel table local src 127.0.0.1 scope host\n\
         route replace local ::1 dev lo proto kernel metric 1024 table local\n",
        fake_ip().display()
    );
    assert!(
        stdout.ends_with(&routes),
        "the routes' cleanup, after the rules':\n{stdout}"
    );
    assert!(
        record.restores().is_empty(),
        "nothing applied: {:?}",
        record.restores()
    );
}
