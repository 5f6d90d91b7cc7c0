//! Whether this host can run the end-to-end tests.
//!
//! Locally, a developer without root should still be able to run `cargo test`: the
//! namespace tests then say why they did nothing. In CI, `TRELLIS_E2E=require` turns
//! that into a failure, so a runner that silently lost its privileges cannot pass.

use trellis_netns::preflight;

/// `true` if the host has root, `ip`, `iptables-restore`, `setpriv`, working network
/// namespaces, and each program in `also` (name, Debian package). Otherwise prints
/// the reason and returns `false`, or panics with it under `TRELLIS_E2E=require`.
pub fn host_can_run_pods(also: &[(&str, &'static str)]) -> bool {
    let report = also.iter().fold(preflight(), |report, (program, package)| {
        report.require_program(program, package)
    });
    if report.is_ok() {
        return true;
    }
    if std::env::var("TRELLIS_E2E").as_deref() == Ok("require") {
        panic!("TRELLIS_E2E=require, but {report}");
    }
    eprintln!("skipping (set TRELLIS_E2E=require to make this a failure): {report}");
    false
}
