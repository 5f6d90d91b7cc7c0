//! The open-loop timetable and the precise timer that keeps it.
//!
//! Coordinated omission is what a closed-loop client does when the server stalls: it
//! waits politely, sends its next request late, and times it from the late send, so the
//! stall shows up as one slow request instead of hundreds. The cure (wrk2, oha
//! `--latency-correction`) is a timetable fixed before the run: request `i` is *due* at
//! `start + i / rate` whatever happened before it, and its latency is measured from that
//! intended time. A late sender therefore releases every overdue request at once, each
//! still carrying its own intended time.
//!
//! Tokio's timer wheel rounds deadlines up to the next millisecond, which would add up
//! to a millisecond of the generator's own lateness to every latency at the rates we
//! care about (a request every 200 µs at 5,000/s). [`Ticker`] instead arms a
//! `timerfd` (high-resolution, nanosecond deadlines) and waits for it in the runtime's
//! own event loop.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::Error;

/// When each request of an open-loop run is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between two requests, kept fractional so that long runs at rates
    /// that do not divide a second do not drift.
    interval_ns: f64,
    count: u64,
}

impl Schedule {
    /// `rate` requests per second for `duration`, the first due at `start`.
    pub fn new(start: Instant, rate: f64, duration: Duration) -> Self {
        let count = (rate * duration.as_secs_f64()).floor().max(0.0) as u64;
        Schedule {
            start,
            interval_ns: 1e9 / rate,
            count,
        }
    }

    /// How many requests the run sends in all.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// When request `i` should leave, independent of when any other request did.
    pub fn intended(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((i as f64 * self.interval_ns) as u64)
    }

    /// The first index at or after `next` that is not yet due at `now`: everything in
    /// between is due (or overdue) and must be released now.
    pub fn due_until(&self, next: u64, now: Instant) -> u64 {
        if now < self.start {
            return next;
        }
        let elapsed_ns = now.duration_since(self.start).as_nanos() as f64;
        let last_due = (elapsed_ns / self.interval_ns).floor() as u64;
        (last_due + 1).clamp(next, self.count)
    }
}

/// A `timerfd` wrapper, because `AsyncFd` wants a raw fd and nix's `TimerFd` only
/// lends a borrowed one.
struct TimerHandle(TimerFd);

impl AsRawFd for TimerHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Sleeps until an `Instant` with timerfd precision inside a tokio runtime.
pub struct Ticker {
    fd: AsyncFd<TimerHandle>,
}

/// Below this, arming a timer costs more than it saves: the request just leaves now.
const TIMER_FLOOR: Duration = Duration::from_micros(20);

impl Ticker {
    /// A ticker for the current runtime (call inside it). Also narrows this thread's
    /// timer slack, the kernel's licence to fire a timer late by up to 50 µs.
    pub fn new() -> Result<Self, Error> {
        // Best effort: without it timers are merely up to 50 µs late.
        let _ = nix::sys::prctl::set_timerslack(1_000);
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|errno| Error::io("create a timerfd", errno.into()))?;
        // SAFETY: `TimerHandle` owns the timerfd for as long as the `AsyncFd` lives and
        // always answers the same raw fd.
        let fd = unsafe { AsyncFd::register_with_interest(TimerHandle(timer), Interest::READABLE) }
            .map_err(|error| Error::io("register the timerfd with tokio", error.into()))?;
        Ok(Ticker { fd })
    }

    /// Returns at `deadline` (or at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) -> Result<(), Error> {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(());
        };
        if wait < TIMER_FLOOR {
            return Ok(());
        }
        self.fd
            .get_ref()
            .0
            .set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(|errno| Error::io("arm the timerfd", errno.into()))?;
        loop {
            let mut ready = self
                .fd
                .readable()
                .await
                .map_err(|source| Error::io("wait for the timerfd", source))?;
            let mut expirations = [0u8; 8];
            match nix::unistd::read(self.fd.get_ref().0.as_fd(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(errno) => return Err(Error::io("read the timerfd", errno.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_fixed_intervals_from_the_start() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 1_000.0, Duration::from_secs(2));
        assert_eq!(schedule.count(), 2_000);
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(1), start + Duration::from_millis(1));
        assert_eq!(
            schedule.intended(1_500),
            start + Duration::from_millis(1_500)
        );
    }

    #[test]
    fn fractional_intervals_do_not_drift_over_a_long_run() {
        let start = Instant::now();
        // 3 per second: 333.33 ms apart; an integer interval would lose 1 ns a step.
        let schedule = Schedule::new(start, 3.0, Duration::from_secs(3_600));
        let last = schedule.intended(schedule.count() - 1);
        let expected = start + Duration::from_secs(3_600) - Duration::from_nanos(333_333_333);
        let drift = last.max(expected) - last.min(expected);
        assert!(drift < Duration::from_micros(1), "drifted {drift:?}");
    }

    #[test]
    fn nothing_is_due_before_the_start_and_nothing_past_the_end() {
        let start = Instant::now() + Duration::from_secs(1);
        let schedule = Schedule::new(start, 100.0, Duration::from_secs(1));
        assert_eq!(schedule.due_until(0, start - Duration::from_millis(1)), 0);
        assert_eq!(schedule.due_until(0, start), 1);
        assert_eq!(schedule.due_until(0, start + Duration::from_secs(60)), 100);
    }

    /// The heart of coordinated-omission correction, on paper: one connection, 1,000
    /// requests/s, a server that answers in 100 µs but stalls once for 100 ms. A sender
    /// that wakes late releases every overdue request with its original due time, so
    /// ~100 requests carry the stall, not one.
    #[test]
    fn a_stall_is_charged_to_every_request_that_was_due_during_it() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 1_000.0, Duration::from_secs(1));
        let service = Duration::from_micros(100);
        let stall = Duration::from_millis(100);

        let mut latencies = Vec::new();
        let (mut next, mut now) = (0, start);
        while next < schedule.count() {
            let due = schedule.due_until(next, now);
            if due == next {
                now = schedule.intended(next);
                continue;
            }
            for i in next..due {
                // The single connection sends them one after another.
                let took = if i == 300 { stall } else { service };
                now = now.max(schedule.intended(i)) + took;
                latencies.push(now - schedule.intended(i));
            }
            next = due;
        }

        latencies.sort();
        let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(999)];
        assert_eq!(latencies.len(), 1_000);
        assert!(percentile(0.5) < Duration::from_millis(1));
        // Measured from the actual send only request 300 would be slow; from the
        // intended time the ~100 requests queued behind it are too.
        assert!(
            percentile(0.95) > Duration::from_millis(40),
            "{:?}",
            percentile(0.95)
        );
        assert!(percentile(0.999) >= stall);
    }

    #[tokio::test]
    async fn the_ticker_wakes_close_to_its_deadline() {
        let ticker = Ticker::new().expect("timerfd");
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let deadline = Instant::now() + Duration::from_micros(300);
            ticker.sleep_until(deadline).await.expect("sleep");
            let late = Instant::now() - deadline;
            worst = worst.max(late);
        }
        // Tokio's own timer would be up to 1 ms late; allow slack for a loaded CI box.
        assert!(worst < Duration::from_millis(5), "late by {worst:?}");
    }
}
