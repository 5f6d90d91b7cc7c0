//! Retry pacing: the proxy's calls to the controller, and reconnecting to peers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A delay doubling from a minimum to a maximum, with up to 25 % jitter so that a
/// restarted peer is not hit by every proxy in the same instant.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// 1 s doubling to 60 s: for the controller.
    pub fn new() -> Self {
        Backoff::between(Duration::from_secs(1), Duration::from_secs(60))
    }

    pub fn between(min: Duration, max: Duration) -> Self {
        Backoff { next: min, max }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
