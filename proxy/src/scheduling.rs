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
//! Which is better depends on the node (`bench/results/2026-12-05-scheduling/`):
//! with idle CPUs, `batch` cut the sidecar's CPU per request by more than half and
//! its added latency with it; with one of two CPUs busy the two were alike; with
//! every CPU busy, `batch` doubled p99, since each wake-up of the proxy waited for a
//! tick. The kernel's default is therefore the default here, and `batch` an option
//! for nodes that keep CPU to spare.
//!
//! The policy belongs to a thread and is inherited by the threads it starts, so
//! `main` sets it once, before the runtime and the shards exist. No privilege is
//! needed to move between `SCHED_OTHER` and `SCHED_BATCH`.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::Serialize;

/// How the kernel schedules the proxy's threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// `SCHED_OTHER`, the kernel's default.
    #[default]
    Normal,
    /// `SCHED_BATCH`: a woken proxy thread never preempts the running thread.
    Batch,
}

impl Scheduling {
    fn policy(self) -> libc::c_int {
        match self {
            Scheduling::Batch => libc::SCHED_BATCH,
            Scheduling::Normal => libc::SCHED_OTHER,
        }
    }

    /// Sets the policy of the calling thread, and so of every thread it starts from
    /// now on.
    pub fn apply_to_this_thread(self) -> io::Result<()> {
        // Both policies take priority 0; the nice value is left as it is.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread and `param` is a valid, initialised
        // sched_param that outlives the call.
        match unsafe { libc::sched_setscheduler(0, self.policy(), &param) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// The policy the calling thread runs under, if it is one of these two.
    pub fn of_this_thread() -> io::Result<Option<Scheduling>> {
        // SAFETY: no pointers; pid 0 is the calling thread.
        match unsafe { libc::sched_getscheduler(0) } {
            -1 => Err(io::Error::last_os_error()),
            libc::SCHED_BATCH => Ok(Some(Scheduling::Batch)),
            libc::SCHED_OTHER => Ok(Some(Scheduling::Normal)),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for Scheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheduling::Batch => "batch",
            Scheduling::Normal => "normal",
        })
    }
}

impl FromStr for Scheduling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "batch" => Ok(Scheduling::Batch),
            "normal" => Ok(Scheduling::Normal),
            _ => Err(format!("{s:?}: expected batch or normal")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `policy` on a fresh thread (so the test runner's threads keep theirs) and
    /// reads back what a thread started after it runs under. The thread first runs
    /// under the other policy, so that either answer is a change the call made.
    fn inherited_by_a_new_thread(policy: Scheduling) -> Option<Scheduling> {
        let other = match policy {
            Scheduling::Batch => Scheduling::Normal,
            Scheduling::Normal => Scheduling::Batch,
        };
        std::thread::spawn(move || {
            other.apply_to_this_thread().expect("set the other policy");
            assert_eq!(Scheduling::of_this_thread().ok().flatten(), Some(other));
            policy.apply_to_this_thread().expect("set the policy");
            std::thread::spawn(|| Scheduling::of_this_thread().expect("read the policy"))
                .join()
                .expect("the inner thread")
        })
        .join()
        .expect("the outer thread")
    }

    #[test]
    fn threads_started_after_the_policy_is_set_inherit_it() {
        assert_eq!(
            inherited_by_a_new_thread(Scheduling::Batch),
            Some(Scheduling::Batch)
        );
        assert_eq!(
            inherited_by_a_new_thread(Scheduling::Normal),
            Some(Scheduling::Normal)
        );
    }

    #[test]
    fn the_policy_is_named_as_on_the_command_line() {
        for policy in [Scheduling::Batch, Scheduling::Normal] {
            assert_eq!(policy.to_string().parse::<Scheduling>(), Ok(policy));
        }
        assert_eq!(Scheduling::default(), Scheduling::Normal);
        let error = "idle".parse::<Scheduling>().expect_err("not a policy");
        assert!(error.contains("batch or normal"), "{error}");
    }
}
