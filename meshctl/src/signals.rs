//! Ctrl-C for commands that must clean up after themselves (`meshctl demo`).
//!
//! The handler only sets a flag; long waits poll it through [`check`] and return
//! [`Error::Interrupted`], and the caller's teardown guard then removes what was made.
//! Commands that never install the handler keep the default: Ctrl-C ends them.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::Error;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the flag.
pub fn install() -> Result<(), Error> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(|errno| Error::Io {
            what: "cannot install a handler for",
            path: signal.as_str().into(),
            error: errno.into(),
        })?;
    }
    Ok(())
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<(), Error> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}
