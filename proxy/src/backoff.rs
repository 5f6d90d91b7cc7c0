//! Retry pacing for the proxy's calls to the controller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 1 s doubling to 60 s, with up to 25 % jitter so a restarted controller is not
/// hit by every proxy in the same instant.
pub struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Self {
        Backoff(Duration::from_secs(1))
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.0;
        self.0 = (base * 2).min(Duration::from_secs(60));
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
