//! `trellis-bench discovery-scale` at a small scale against the real controller: 20
//! services of 3 endpoints, 5 streams, one change. Every stream gets the whole first
//! snapshot and the change, and `/proxies` shows them all in sync. Times are never
//! asserted.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_stream_converges_on_the_first_snapshot_and_on_a_change() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_trellis-bench"));
    let bin = bench.parent().expect("target directory");
    assert!(
        bin.join("trellis-controller").is_file(),
        "{} is missing: cargo build -p trellis-control-plane",
        bin.join("trellis-controller").display()
    );
    let dir = std::env::temp_dir().join(format!("trellis-scale-test-{}", std::process::id()));
    let output = Command::new(&bench)
        .args(["discovery-scale", "--services", "20", "--endpoints", "3"])
        .args([
            "--streams",
            "5",
            "--changes",
            "1",
            "--timeout",
            "60s",
            "--json",
        ])
        .arg("--trellis-bin")
        .arg(bin)
        .arg("--dir")
        .arg(&dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run trellis-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "{stdout}\n{}\ncontroller.log:\n{log}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["streams"], 5);
    assert_eq!(
        report["proxies_in_sync"], 5,
        "every stream in sync on /proxies"
    );
    assert_eq!(report["changes"].as_array().map(Vec::len), Some(1));
    assert!(report["memory_end"]["hwm_bytes"].as_u64() > Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
