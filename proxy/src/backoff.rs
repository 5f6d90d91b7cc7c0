//! Retry pacing: the proxy's calls to the controller, and reconnecting to peers.

use std::time::Duration;

/// A delay doubling from a minimum to a maximum, with up to 25 % jitter so that a
/// restarted peer is not hit by every proxy in the same instant.
pub struct Backoff {
    next: Duration,
    max: Duration,
    /// Seeded from the OS for each backoff, so that proxies started together (a
    /// rollout) do not draw the same jitter.
    rng: fastrand::Rng,
}

impl Backoff {
    /// 1 s doubling to 60 s: for the controller.
    pub fn new() -> Self {
        Backoff::between(Duration::from_secs(1), Duration::from_secs(60))
    }

    pub fn between(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            max,
            rng: fastrand::Rng::new(),
        }
    }

    /// The delay before the next attempt: the current step plus 0–25 % of it.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        base + base.mul_f64(self.rng.f64() / 4.0)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step each delay is jittered from: the minimum, doubled, capped.
    const STEPS: [u64; 9] = [1, 2, 4, 8, 16, 32, 60, 60, 60];

    #[test]
    fn the_delay_doubles_to_the_cap_and_never_leaves_its_step_plus_a_quarter() {
        for _ in 0..100 {
            let mut backoff = Backoff::new();
            for step in STEPS.map(Duration::from_secs) {
                let delay = backoff.next_delay();
                assert!(
                    delay >= step && delay <= step.mul_f64(1.25),
                    "{delay:?} for a step of {step:?}"
                );
            }
        }
        let mut peers = Backoff::between(Duration::from_millis(100), Duration::from_secs(10));
        let delays: Vec<Duration> = (0..10).map(|_| peers.next_delay()).collect();
        assert!(delays[0] < Duration::from_millis(126));
        assert!(delays[9] >= Duration::from_secs(10) && delays[9] <= Duration::from_millis(12_500));
    }

    #[test]
    fn proxies_that_start_together_spread_their_retries_over_the_whole_quarter() {
        // A thousand proxies failing at once, each with its own backoff: their first
        // retries are spread over 1–1.25 s rather than bunched.
        let first: Vec<f64> = (0..1000)
            .map(|_| Backoff::new().next_delay().as_secs_f64() - 1.0)
            .collect();
        let mut per_tenth = [0; 10];
        for jitter in &first {
            per_tenth[((jitter / 0.025) as usize).min(9)] += 1;
        }
        // Uniform would put 100 in each tenth of the quarter; none is nearly empty.
        assert!(per_tenth.iter().all(|&n| n > 40), "{per_tenth:?}");
    }
}
