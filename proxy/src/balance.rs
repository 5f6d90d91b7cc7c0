//! Which endpoint of a service a request goes to, and which endpoints to leave alone
//! for a while.
//!
//! The balancer is the one Finagle and Linkerd use: *power of two choices* (P2C) over a
//! *peak-EWMA* latency estimate multiplied by the requests in flight. Each pick looks at
//! two random endpoints and takes the cheaper: constant work per request, and none of
//! the herding that "always the least loaded" causes when many proxies see the same
//! numbers. The estimate jumps to a slow response at once (the peak) and forgets it
//! slowly, so a struggling endpoint is shed quickly and trusted again gradually; the
//! in-flight factor makes the cost rise before the slow responses even arrive.
//!
//! An endpoint that cannot be reached (connect refused, TLS failure, connection lost
//! before a response) is ejected for a backoff that doubles with each consecutive
//! failure, then probed back with one request at a time. When every endpoint is
//! ejected the balancer fails open: trying an ejected endpoint beats failing every
//! request.
//!
//! What the balancer knows about an endpoint ([`EndpointLoad`]) is kept by address in
//! a [`Registry`] that outlives each [`Directory`](crate::directory::Directory), so
//! that a discovery update does not make the proxy forget latencies and ejections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The estimate of an endpoint that has not answered yet (Linkerd's default): low
/// enough that a new endpoint gets traffic, high enough that it does not get it all.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the estimate forgets: a sample `TAU` old weighs e⁻¹ of a new one.
const TAU: Duration = Duration::from_secs(10);

const FIRST_EJECTION: Duration = Duration::from_secs(1);
const MAX_EJECTION: Duration = Duration::from_secs(30);
/// The spread of an ejection around its nominal length (±20 %), so that the proxies
/// that saw the same outage do not all probe in the same instant.
const EJECTION_JITTER: f64 = 0.2;
/// How long a probe handed out by [`EndpointLoad::available`] waits for its
/// [`EndpointLoad::start`]; a caller that never starts must not keep the endpoint out.
const CLAIM_LAPSE: Duration = Duration::from_secs(1);
/// Random draws before [`sample`] scans: enough to find an available endpoint at once
/// while most are healthy.
const DRAWS: usize = 3;
/// The fewest entries at which the [`Registry`] looks for forgotten addresses.
const MIN_PRUNE: usize = 64;

/// Load and health of one endpoint, shared by every service that lists it and kept
/// across discovery updates (the [`Registry`] hands out the same `Arc` for the same
/// address).
#[derive(Debug)]
pub struct EndpointLoad {
    /// Requests and connections started and not finished; outside the lock because
    /// every request changes it twice.
    in_flight: AtomicU32,
    /// Everything else, which changes once per response or failure. A std mutex held
    /// for a few arithmetic operations, never across an await.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rtt: PeakEwma,
    health: Health,
}

/// Linkerd's latency estimate: the worst recent response time, forgotten
/// exponentially with time (not with the number of responses, so that a burst of fast
/// responses does not erase a slow one at once).
#[derive(Clone, Copy, Debug)]
struct PeakEwma {
    /// In nanoseconds, as of `at`.
    ns: f64,
    /// The last response, or the endpoint's creation.
    at: Instant,
}

/// Whether the balancer should stay away from an endpoint.
#[derive(Debug)]
struct Health {
    /// Consecutive failures, each of which doubled the ejection.
    failures: u32,
    /// Until when the endpoint is out; `None` while it is healthy. It stays set once
    /// the backoff has passed, until a request succeeds.
    ejected_until: Option<Instant>,
    probe: Probe,
    /// The id of the last probe, so that a probe's guard settles only its own probe.
    probes: u64,
}

/// The one request that may go to an endpoint whose backoff has passed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Probe {
    /// Nobody probes: the next caller to ask may.
    Free,
    /// A caller was told it may probe and has not started yet.
    Claimed { at: Instant },
    /// The probe is in flight; the [`InFlight`] with this id settles it.
    Running { id: u64 },
}

/// What an endpoint says to one more request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Admission {
    Open,
    /// Ejected, but its backoff has passed and this caller now holds its probe.
    Probe,
    Shut,
}

/// A snapshot of an endpoint for `/config` and tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadView {
    /// The latency estimate the balancer uses now.
    pub ewma_ms: f64,
    pub in_flight: u32,
    /// What is left of the ejection; 0 when healthy or when the backoff has passed.
    pub ejected_for_ms: u64,
    /// Consecutive failures.
    pub failures: u32,
}

impl EndpointLoad {
    pub fn new() -> Self {
        EndpointLoad::fresh(Instant::now())
    }

    fn fresh(now: Instant) -> Self {
        EndpointLoad {
            in_flight: AtomicU32::new(0),
            state: Mutex::new(State {
                rtt: PeakEwma::new(now),
                health: Health {
                    failures: 0,
                    ejected_until: None,
                    probe: Probe::Free,
                    probes: 0,
                },
            }),
        }
    }

    /// Starts one request or connection on this endpoint: counts it in flight until
    /// the guard is finished or dropped. The request that follows a probe handed out
    /// by [`available`](Self::available) (or [`pick`]) is that probe.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let probe = {
            let mut state = self.lock();
            let health = &mut state.health;
            match health.probe {
                Probe::Claimed { .. } => {
                    health.probes += 1;
                    health.probe = Probe::Running { id: health.probes };
                    Some(health.probes)
                }
                Probe::Free | Probe::Running { .. } => None,
            }
        };
        InFlight {
            load: self.clone(),
            started: Instant::now(),
            probe,
        }
    }

    /// The P2C cost now: the peak-EWMA latency (ns) × (in-flight + 1); [`pick`]
    /// divides it by the endpoint's weight.
    pub fn cost(&self) -> f64 {
        self.cost_at(Instant::now())
    }

    /// Whether the endpoint may be picked: it is not ejected, or its backoff has
    /// passed and nobody else is probing it. In the second case the caller holds the
    /// probe and must [`start`](Self::start) on the endpoint; a probe nobody starts
    /// lapses after a second.
    pub fn available(&self) -> bool {
        self.admit(Instant::now()) != Admission::Shut
    }

    pub fn view(&self) -> LoadView {
        self.view_at(Instant::now())
    }

    fn cost_at(&self, now: Instant) -> f64 {
        let rtt = self.lock().rtt.at(now);
        rtt * f64::from(self.in_flight.load(Ordering::Relaxed).saturating_add(1))
    }

    fn admit(&self, now: Instant) -> Admission {
        let mut state = self.lock();
        let health = &mut state.health;
        match (health.ejected_until, health.probe) {
            (None, _) => Admission::Open,
            (Some(until), _) if now < until => Admission::Shut,
            (Some(_), Probe::Running { .. }) => Admission::Shut,
            (Some(_), Probe::Claimed { at }) if now.saturating_duration_since(at) < CLAIM_LAPSE => {
                Admission::Shut
            }
            (Some(_), Probe::Free | Probe::Claimed { .. }) => {
                health.probe = Probe::Claimed { at: now };
                Admission::Probe
            }
        }
    }

    /// Gives back a probe claimed by [`admit`](Self::admit) that [`pick`] did not use.
    fn release_claim(&self) {
        let mut state = self.lock();
        if let Probe::Claimed { .. } = state.health.probe {
            state.health.probe = Probe::Free;
        }
    }

    fn succeed(&self, sample: Duration, now: Instant) {
        let mut state = self.lock();
        state.rtt.observe(sample, now);
        let health = &mut state.health;
        health.failures = 0;
        health.ejected_until = None;
        health.probe = Probe::Free;
    }

    /// Records a failure at `now`; `jitter` is uniform in [0, 1).
    fn fail(&self, now: Instant, jitter: f64, probe: Option<u64>) {
        let mut state = self.lock();
        let health = &mut state.health;
        let probing = probe.is_some_and(|id| health.probe == Probe::Running { id });
        if probing {
            health.probe = Probe::Free;
        }
        // The requests in flight when an endpoint goes down fail together: one
        // outage, one step of backoff.
        let already_out = health.ejected_until.is_some_and(|until| now < until);
        if already_out && !probing {
            return;
        }
        health.failures = health.failures.saturating_add(1);
        health.ejected_until = Some(now + ejection(health.failures, jitter));
    }

    /// A probe ended without an answer either way: the next caller may probe.
    fn cancel(&self, probe: u64) {
        let mut state = self.lock();
        if state.health.probe == (Probe::Running { id: probe }) {
            state.health.probe = Probe::Free;
        }
    }

    fn view_at(&self, now: Instant) -> LoadView {
        let state = self.lock();
        let ejected_for = state
            .health
            .ejected_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        LoadView {
            ewma_ms: (state.rtt.at(now) / 1e3).round() / 1e3,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            ejected_for_ms: u64::try_from(ejected_for.as_millis()).unwrap_or(u64::MAX),
            failures: state.health.failures,
        }
    }

    /// The state, even if a thread panicked while holding it: every update leaves it
    /// consistent, and the proxy must go on balancing.
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

impl Default for EndpointLoad {
    fn default() -> Self {
        EndpointLoad::new()
    }
}

impl PeakEwma {
    fn new(now: Instant) -> Self {
        PeakEwma {
            ns: nanos(DEFAULT_RTT),
            at: now,
        }
    }

    /// The estimate at `now`, decayed toward zero for the time without a response
    /// (as Linkerd does): an endpoint that was slow once is then never picked to
    /// prove otherwise, unless its cost falls while it idles.
    fn at(&self, now: Instant) -> f64 {
        self.ns * self.weight(now)
    }

    /// What the estimate of `at` still weighs at `now`.
    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at);
        (-elapsed.as_secs_f64() / TAU.as_secs_f64()).exp()
    }

    /// Takes a response time: a slower one than the estimate replaces it, a faster one
    /// pulls it down by the time since the last.
    fn observe(&mut self, sample: Duration, now: Instant) {
        let sample = nanos(sample);
        self.ns = if sample > self.ns {
            sample
        } else {
            let w = self.weight(now);
            self.ns * w + sample * (1.0 - w)
        };
        self.at = self.at.max(now);
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// How long an endpoint stays out after its `failures`-th consecutive failure: 1 s
/// doubling up to 30 s, then spread ±20 % by `jitter` (uniform in [0, 1)).
fn ejection(failures: u32, jitter: f64) -> Duration {
    // 2⁵ s is past the cap already; stopping there keeps the shift from overflowing.
    let doublings = failures.saturating_sub(1).min(5);
    let nominal = (FIRST_EJECTION * (1 << doublings)).min(MAX_EJECTION);
    nominal.mul_f64(1.0 - EJECTION_JITTER + 2.0 * EJECTION_JITTER * jitter.clamp(0.0, 1.0))
}

/// One request or connection on an endpoint, counted in flight until it is settled
/// with [`success`](Self::success) or [`failure`](Self::failure), or dropped
/// (cancelled: it says nothing about the endpoint).
#[derive(Debug)]
#[must_use = "the request counts in flight until the guard is settled or dropped"]
pub struct InFlight {
    load: Arc<EndpointLoad>,
    /// Where the latency sample starts.
    started: Instant,
    /// Set when this request probes an ejected endpoint: if it is dropped unsettled,
    /// the next caller may probe.
    probe: Option<u64>,
}

impl InFlight {
    /// The request got a response (any HTTP status): its latency goes into the
    /// estimate, and the endpoint is healthy again.
    pub fn success(self) {
        self.success_at(Instant::now());
    }

    /// A long-lived connection (opaque TCP) is established: its connect latency goes
    /// into the estimate and the endpoint is healthy again, while the connection
    /// keeps counting in flight until the guard is dropped.
    pub fn established(&mut self) {
        let now = Instant::now();
        self.probe = None;
        self.load
            .succeed(now.saturating_duration_since(self.started), now);
    }

    /// The endpoint could not be reached (connect refused, TLS failure, connection
    /// lost before a response): it is ejected for a backoff that doubles with each
    /// consecutive failure (1 s up to 30 s, ±20 %).
    pub fn failure(self) {
        self.failure_at(Instant::now(), fastrand::f64());
    }

    fn success_at(mut self, now: Instant) {
        self.probe = None;
        self.load
            .succeed(now.saturating_duration_since(self.started), now);
    }

    fn failure_at(mut self, now: Instant, jitter: f64) {
        let probe = self.probe.take();
        self.load.fail(now, jitter, probe);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(probe) = self.probe.take() {
            self.load.cancel(probe);
        }
    }
}

/// Hands out one [`EndpointLoad`] per endpoint address, so that what the balancer
/// learned survives directory rebuilds. It holds them weakly: an address no directory
/// lists any more is forgotten.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_addr: HashMap<SocketAddr, Weak<EndpointLoad>>,
    /// The size at which the next insert drops the forgotten addresses: twice what
    /// was left last time, so that pruning costs O(1) per insert over time.
    prune_at: usize,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    pub fn get(&self, addr: SocketAddr) -> Arc<EndpointLoad> {
        let mut entries = crate::lock(&self.entries);
        if let Some(load) = entries.by_addr.get(&addr).and_then(Weak::upgrade) {
            return load;
        }
        if entries.by_addr.len() >= entries.prune_at {
            entries.by_addr.retain(|_, load| load.strong_count() > 0);
            entries.prune_at = (2 * entries.by_addr.len()).max(MIN_PRUNE);
        }
        let load = Arc::new(EndpointLoad::new());
        entries.by_addr.insert(addr, Arc::downgrade(&load));
        load
    }

    /// How many addresses it holds, forgotten or not.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        crate::lock(&self.entries).by_addr.len()
    }
}

/// Picks one of `candidates` by P2C: two distinct random available candidates, the one
/// with the lower cost / weight wins; a lone candidate is picked as it is. When none is
/// available, it picks among all (fail open). `None` only for an empty slice.
///
/// `load` gives a candidate's [`EndpointLoad`] and weight (0 counts as 1).
pub fn pick<T>(candidates: &[T], load: impl Fn(&T) -> (&EndpointLoad, u32)) -> Option<&T> {
    pick_at(candidates, &load, Instant::now())
}

fn pick_at<'a, T, F>(candidates: &'a [T], load: &F, now: Instant) -> Option<&'a T>
where
    F: Fn(&T) -> (&EndpointLoad, u32),
{
    match candidates {
        [] => return None,
        [only] => {
            // Taken either way; admitting it still hands out its probe when one is due,
            // so that the request counts as that probe.
            load(only).0.admit(now);
            return Some(only);
        }
        _ => {}
    }
    let cost = |i: usize| {
        let (endpoint, weight) = load(&candidates[i]);
        endpoint.cost_at(now) / f64::from(weight.max(1))
    };
    let first = sample(candidates, load, now, None);
    let second = first.and_then(|(i, _)| sample(candidates, load, now, Some(i)));
    let chosen = match (first, second) {
        (Some(a), Some(b)) => {
            let (win, lose) = if cost(b.0) < cost(a.0) {
                (b, a)
            } else {
                (a, b)
            };
            if lose.1 == Admission::Probe {
                load(&candidates[lose.0]).0.release_claim();
            }
            win.0
        }
        (Some((i, _)), None) => i,
        (None, _) => {
            let i = fastrand::usize(..candidates.len());
            let j = other_than(i, fastrand::usize(..candidates.len() - 1));
            if cost(j) < cost(i) { j } else { i }
        }
    };
    candidates.get(chosen)
}

/// A random candidate other than `except` that admits a request, with its admission;
/// `None` when none does. Draws first; then scans from a random place, which is not
/// quite uniform but only runs when most candidates are out.
fn sample<T, F>(
    candidates: &[T],
    load: &F,
    now: Instant,
    except: Option<usize>,
) -> Option<(usize, Admission)>
where
    F: Fn(&T) -> (&EndpointLoad, u32),
{
    let others = candidates.len() - usize::from(except.is_some());
    if others == 0 {
        return None;
    }
    let nth = |k: usize| except.map_or(k, |e| other_than(e, k));
    let admit = |i: usize| match load(&candidates[i]).0.admit(now) {
        Admission::Shut => None,
        admission => Some((i, admission)),
    };
    let drawn = (0..DRAWS).find_map(|_| admit(nth(fastrand::usize(..others))));
    drawn.or_else(|| {
        let start = fastrand::usize(..others);
        (0..others).find_map(|k| admit(nth((start + k) % others)))
    })
}

/// The `k`-th index when `except` is left out.
fn other_than(except: usize, k: usize) -> usize {
    if k >= except { k + 1 } else { k }
}

#[cfg(test)]
mod tests;
