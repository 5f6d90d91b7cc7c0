//! The CPU scheduling policy of the proxy's threads.
//!
//! A sidecar shares its node's CPUs with the app it serves, and every request wakes
//! it twice per hop. Under Linux's default policy (`SCHED_OTHER`) a woken thread may
//! preempt the one that woke it: the app's `write` wakes the proxy, which takes the
//! CPU from the app at once, and the app finishes its pass later, after a switch
//! back. `SCHED_BATCH` keeps every other property of `SCHED_OTHER` (the same weight
//! and share, and it still runs at once on an idle CPU), but a woken batch thread
//! never preempts the running one: it waits until that thread sleeps or its slice
//! ends at a scheduler tick.
//!
//! Which is better depends on the node (`bench/results/2026-12-05-scheduling/` and
//! `2026-12-05-wakeups/`): with idle CPUs, `batch` keeps a request's wake-ups on one
//! CPU, where each costs a few µs, instead of sending every other one to an idle CPU
//! that must be woken first, and cut the sidecar's CPU per request by more than half
//! and its added latency with it; with one of two CPUs busy the two were alike; with
//! every CPU busy, `batch` doubled p99, since each wake-up of the proxy waited for a
//! tick. `auto` ([`governor`]), the default, follows the node: `batch` while the
//! CPUs the proxy may run on have idle time, `normal` as soon as they have almost
//! none. Measured (`2026-12-05-auto-scheduling/`), it costs what `batch` costs on an
//! idle machine and keeps `normal`'s tail when every CPU is busy.
//!
//! The policy belongs to a thread and is inherited by the threads it starts, so
//! `main` sets the first one before the runtime and the shards exist; `auto` then
//! sets every thread's when it changes. No privilege is needed to move between
//! `SCHED_OTHER` and `SCHED_BATCH`.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::Serialize;

pub mod governor;

/// What `--scheduling` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// `SCHED_OTHER`, the kernel's default.
    Normal,
    /// `SCHED_BATCH`: a woken proxy thread never preempts the running thread.
    Batch,
    /// `batch` while the proxy's CPUs have idle time, `normal` while they have almost
    /// none ([`governor`]).
    #[default]
    Auto,
}

impl Scheduling {
    /// The policy the proxy's threads start under. `auto` starts as `normal`, the
    /// policy that is never worse when the node is busy, until it has seen idle CPUs.
    pub fn initial(self) -> Policy {
        match self {
            Scheduling::Batch => Policy::Batch,
            Scheduling::Normal | Scheduling::Auto => Policy::Normal,
        }
    }
}

impl fmt::Display for Scheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheduling::Batch => "batch",
            Scheduling::Normal => "normal",
            Scheduling::Auto => "auto",
        })
    }
}

impl FromStr for Scheduling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "batch" => Ok(Scheduling::Batch),
            "normal" => Ok(Scheduling::Normal),
            "auto" => Ok(Scheduling::Auto),
            _ => Err(format!("{s:?}: expected auto, batch or normal")),
        }
    }
}

/// A kernel scheduling policy a proxy thread runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER`.
    Normal,
    /// `SCHED_BATCH`.
    Batch,
}

impl Policy {
    fn raw(self) -> libc::c_int {
        match self {
            Policy::Batch => libc::SCHED_BATCH,
            Policy::Normal => libc::SCHED_OTHER,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Batch => "batch",
            Policy::Normal => "normal",
        }
    }

    /// Sets the policy of the calling thread, and so of every thread it starts from
    /// now on.
    pub fn apply_to_this_thread(self) -> io::Result<()> {
        self.apply_to_thread(0)
    }

    /// Sets the policy of thread `tid` of this process (0: the calling thread).
    pub fn apply_to_thread(self, tid: libc::pid_t) -> io::Result<()> {
        // Both policies take priority 0; the nice value is left as it is.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid, initialised sched_param that outlives the call;
        // a tid that is not ours or no longer exists is an error, not UB.
        match unsafe { libc::sched_setscheduler(tid, self.raw(), &param) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Sets the policy of every thread of this process, as listed in
    /// `/proc/self/task`; a thread that ends meanwhile is skipped. Threads started
    /// later inherit the policy of the thread that starts them.
    pub fn apply_to_every_thread(self) -> io::Result<()> {
        for task in std::fs::read_dir("/proc/self/task")? {
            let Some(tid) = task?
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            match self.apply_to_thread(tid) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The policy the calling thread runs under, if it is one of these two.
    pub fn of_this_thread() -> io::Result<Option<Policy>> {
        // SAFETY: no pointers; pid 0 is the calling thread.
        match unsafe { libc::sched_getscheduler(0) } {
            -1 => Err(io::Error::last_os_error()),
            libc::SCHED_BATCH => Ok(Some(Policy::Batch)),
            libc::SCHED_OTHER => Ok(Some(Policy::Normal)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `policy` on a fresh thread (so the test runner's threads keep theirs) and
    /// reads back what a thread started after it runs under. The thread first runs
    /// under the other policy, so that either answer is a change the call made.
    fn inherited_by_a_new_thread(policy: Policy) -> Option<Policy> {
        let other = match policy {
            Policy::Batch => Policy::Normal,
            Policy::Normal => Policy::Batch,
        };
        std::thread::spawn(move || {
            other.apply_to_this_thread().expect("set the other policy");
            assert_eq!(Policy::of_this_thread().ok().flatten(), Some(other));
            policy.apply_to_this_thread().expect("set the policy");
            std::thread::spawn(|| Policy::of_this_thread().expect("read the policy"))
                .join()
                .expect("the inner thread")
        })
        .join()
        .expect("the outer thread")
    }

    #[test]
    fn threads_started_after_the_policy_is_set_inherit_it() {
        assert_eq!(
            inherited_by_a_new_thread(Policy::Batch),
            Some(Policy::Batch)
        );
        assert_eq!(
            inherited_by_a_new_thread(Policy::Normal),
            Some(Policy::Normal)
        );
    }

    #[test]
    fn another_threads_policy_is_set_by_its_tid() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: no arguments; gettid cannot fail.
            let tid = unsafe { libc::gettid() };
            tid_tx.send(tid).expect("send the tid");
            go_rx.recv().expect("wait for the change");
            Policy::of_this_thread().expect("read the policy")
        });
        let tid = tid_rx.recv().expect("the thread's tid");
        Policy::Batch.apply_to_thread(tid).expect("set its policy");
        go_tx.send(()).expect("let it read");
        assert_eq!(thread.join().expect("the thread"), Some(Policy::Batch));
    }

    #[test]
    fn the_choice_is_named_as_on_the_command_line() {
        for choice in [Scheduling::Batch, Scheduling::Normal, Scheduling::Auto] {
            assert_eq!(choice.to_string().parse::<Scheduling>(), Ok(choice));
        }
        assert_eq!(Scheduling::default(), Scheduling::Auto);
        assert_eq!(Scheduling::Auto.initial(), Policy::Normal);
        assert_eq!(Scheduling::Batch.initial(), Policy::Batch);
        let error = "idle".parse::<Scheduling>().expect_err("not a policy");
        assert!(error.contains("auto, batch or normal"), "{error}");
    }
}
