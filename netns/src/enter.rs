//! Running code inside a pod's network namespace without a child process.
//!
//! `setns(CLONE_NEWNET)` switches only the calling thread, and a socket belongs for
//! life to the namespace it was created in. So a closure run on a fresh thread that
//! entered the pod can bind or connect sockets there and hand them back: a listener
//! bound "inside the server pod" keeps serving that pod from any thread. The thread is
//! never reused, so no other code runs in the wrong namespace by accident.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use nix::sched::{CloneFlags, setns};

use crate::Error;
use crate::ifname::check_netns_name;
use crate::pod::NETNS_DIR;

/// A thread running inside a network namespace; join it for the closure's result.
#[derive(Debug)]
pub struct NetnsThread<T> {
    /// `None` only if entering failed, and then `spawn_in` returned an error instead.
    inner: JoinHandle<Option<T>>,
}

impl<T> NetnsThread<T> {
    /// Waits for the closure; `Err` carries its panic, as `JoinHandle::join` does.
    pub fn join(self) -> thread::Result<T> {
        self.inner.join().map(|value| {
            value.expect("the closure runs whenever spawn_in returned Ok (setns succeeded)")
        })
    }

    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}

/// Starts `f` on a new thread inside network namespace `netns`. Returns once the thread
/// has entered the namespace, so a failure to enter is reported here.
pub fn spawn_in<F, T>(netns: &str, f: F) -> Result<NetnsThread<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    check_netns_name(netns)?;
    let path = Path::new(NETNS_DIR).join(netns);
    let file = File::open(&path).map_err(|source| Error::OpenNetns {
        netns: netns.to_string(),
        path,
        source,
    })?;
    let (entered_tx, entered_rx) = mpsc::channel();
    let inner = thread::Builder::new()
        .name(format!("netns:{netns}"))
        .spawn(move || {
            let entered = setns(&file, CloneFlags::CLONE_NEWNET);
            drop(file);
            let ok = entered.is_ok();
            // The receiver waits for exactly this message; it cannot be gone yet.
            let _ = entered_tx.send(entered);
            ok.then(f)
        })
        .map_err(|source| Error::Thread {
            netns: netns.to_string(),
            source,
        })?;
    match entered_rx.recv() {
        Ok(Ok(())) => Ok(NetnsThread { inner }),
        Ok(Err(source)) => Err(Error::Setns {
            netns: netns.to_string(),
            source,
        }),
        // The thread died before reporting: only a panic in setns itself could do that.
        Err(_) => Err(Error::Setns {
            netns: netns.to_string(),
            source: nix::Error::EINVAL,
        }),
    }
}

/// Runs `f` inside network namespace `netns` and returns its result. A panic in `f`
/// is resumed on the caller's thread, so an assertion inside fails the calling test.
pub fn run_in<F, T>(netns: &str, f: F) -> Result<T, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match spawn_in(netns, f)?.join() {
        Ok(value) => Ok(value),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
