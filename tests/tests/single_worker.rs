//! `--workers 1` (what the injector sets for a proxy limited to one CPU) runs the
//! proxy on a single-threaded runtime, where anything that needs a second worker
//! (`block_in_place`, a task that blocks its thread) hangs or panics: both sidecars
//! run that way and carry a 1 MiB download through the mesh.
//!
//! With one worker the proxy serves every connection on its main thread and starts no
//! `trellis-shard-N` thread; the flag's parsing is tested in the proxy's own tests.

use trellis_tests::{HttpApp, PodPair, host_can_run_pods};

const APP_PORT: u16 = 7070;
const CURL: (&str, &str) = ("curl", "curl");
const BODY: u64 = 1024 * 1024;

#[test]
fn sidecars_with_one_worker_each_carry_the_mesh_path() -> anyhow::Result<()> {
    if !host_can_run_pods(&[CURL]) {
        return Ok(());
    }
    let pods = PodPair::start(&["--workers", "1"])?;
    let _app = HttpApp::start_in(pods.server.netns(), APP_PORT, "server")?;
    pods.download_whole(APP_PORT, BODY)?;
    Ok(())
}
