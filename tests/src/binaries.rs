//! The binaries under test, as `cargo build --workspace --bins` leaves them.
//!
//! A test executable lives in `target/<profile>/deps/`; the binaries are one level up.

use std::path::PathBuf;

/// The path of binary `name` next to this test's build, or a panic that says how to
/// build it: a test that silently ran an old binary would prove nothing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run cargo build --workspace --bins before the end-to-end tests",
        path.display()
    );
    path
}
