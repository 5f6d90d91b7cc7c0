//! Destinations known to be server-speaks-first, so that detection is skipped for them.
//!
//! A client of a server-speaks-first protocol (MySQL, SMTP, ...) sends nothing until
//! the server greets it, so protocol detection can only end in its timeout: every
//! such connection would stall for the whole detection timeout before a byte moves.
//! Linkerd and Istio ask the operator to list those ports by hand. This module
//! remembers instead: once a connection to a destination times out in detection,
//! later connections to it are treated as opaque at once.
//!
//! The memory is bounded (the oldest entry goes when it is full) because the set of
//! destinations is not ours to bound, and every entry expires, so a destination that
//! starts speaking another protocol is detected again after at most one TTL. How
//! many it holds, and how many it forgot and why, are metrics
//! ([`counted_in`](OpaqueMemory::counted_in)).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// How many destinations are remembered by default: enough for every such service a
/// pod talks to.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How long a destination is remembered by default: short enough that a destination
/// that changes protocol is detected again within minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);

/// Destinations whose clients sent nothing before the detection deadline.
///
/// Cheap enough to consult on every connection: one uncontended lock and one hash
/// lookup.
#[derive(Debug)]
pub struct OpaqueMemory {
    state: Mutex<State>,
    /// The most destinations remembered at once; 0 remembers none.
    capacity: usize,
    /// How long a destination stays remembered after it was learned.
    ttl: Duration,
    /// How many destinations are remembered, and how many were forgotten because
    /// they expired or because the memory was full.
    remembered: Gauge,
    expired: Counter,
    evicted: Counter,
}

#[derive(Debug, Default)]
struct State {
    /// When each destination was learned.
    learned: HashMap<SocketAddr, Instant>,
    /// The same entries in the order they were learned, oldest first: with one TTL
    /// for all, that is also the order they expire in, so both expiry and eviction
    /// pop from the front. An entry whose time no longer matches `learned` is stale
    /// (the destination was forgotten, or learned again) and is skipped.
    order: VecDeque<(SocketAddr, Instant)>,
}

impl OpaqueMemory {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        OpaqueMemory {
            state: Mutex::new(State::default()),
            capacity,
            ttl,
            remembered: Gauge::default(),
            expired: Counter::default(),
            evicted: Counter::default(),
        }
    }

    /// The same memory, reporting to `metrics`' `opaque_destinations` and
    /// `opaque_forgotten_total`.
    pub fn counted_in(self, metrics: &Metrics) -> Self {
        let (expired, evicted) = metrics.opaque_forgotten_counters();
        OpaqueMemory {
            remembered: metrics.opaque_destinations.clone(),
            expired,
            evicted,
            ..self
        }
    }

    /// Records `dst` as server-speaks-first; returns true if it was newly learned
    /// (the caller logs the hint and counts it once).
    pub fn learn(&self, dst: SocketAddr) -> bool {
        self.learn_at(dst, Instant::now())
    }

    /// Learns `dst` after a connection to it sent nothing before the detection
    /// deadline (`timeout`), and the first time tells the operator how to skip the
    /// wait: the opaque-ports annotation, set `where_to_set` (which differs for the
    /// client's and the server's side).
    pub fn learn_silent(&self, dst: SocketAddr, timeout: Duration, where_to_set: &str) {
        if self.learn(dst) {
            tracing::warn!(
                port = dst.port(),
                ?timeout,
                "the client sent nothing before the detection deadline: treating {dst} as \
                 server-speaks-first for the next {:?}; to skip detection for it from the \
                 start, set the annotation `trellis.io/opaque-ports: \"{}\"` {where_to_set}",
                self.ttl,
                dst.port(),
            );
        }
    }

    /// Why detection is skipped for a connection to `dst`, as `detect_total` counts
    /// it: its port is `declared` opaque, or `dst` is remembered; `None` to detect.
    pub fn skip_detection(&self, declared: bool, dst: SocketAddr) -> Option<&'static str> {
        if declared {
            Some("opaque_port")
        } else if self.is_opaque(dst) {
            Some("opaque_remembered")
        } else {
            None
        }
    }

    /// Whether `dst` is known to be server-speaks-first (and not expired).
    pub fn is_opaque(&self, dst: SocketAddr) -> bool {
        self.is_opaque_at(dst, Instant::now())
    }

    /// How many destinations are remembered and not expired.
    pub fn len(&self) -> usize {
        self.len_at(Instant::now())
    }

    /// How long a destination stays remembered.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn learn_at(&self, dst: SocketAddr, now: Instant) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let mut state = self.expired_by(now);
        // Not refreshed when already known: it expires one TTL after it was first
        // learned, so a destination that changed protocol is detected again.
        if state.learned.contains_key(&dst) {
            return false;
        }
        while state.learned.len() >= self.capacity {
            state.forget_oldest();
            self.evicted.inc();
        }
        state.learned.insert(dst, now);
        state.order.push_back((dst, now));
        self.record(&state);
        true
    }

    fn is_opaque_at(&self, dst: SocketAddr, now: Instant) -> bool {
        self.expired_by(now).learned.contains_key(&dst)
    }

    fn len_at(&self, now: Instant) -> usize {
        self.expired_by(now).learned.len()
    }

    /// The state, without the entries that expired by `now` (counted as they go;
    /// usually none, and then this is one look at the oldest entry).
    fn expired_by(&self, now: Instant) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.lock();
        let expired = state.expire(now, self.ttl);
        if expired > 0 {
            self.expired.inc_by(expired);
            self.record(&state);
        }
        state
    }

    fn record(&self, state: &State) {
        self.remembered
            .set(i64::try_from(state.learned.len()).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Stale queue entries are skipped and ages are checked on every read, so a
        // panic between two updates leaves state that is still safe to use.
        crate::lock(&self.state)
    }
}

impl Default for OpaqueMemory {
    fn default() -> Self {
        OpaqueMemory::new(DEFAULT_CAPACITY, DEFAULT_TTL)
    }
}

impl State {
    /// Forgets every entry learned a TTL or more before `now`; how many it forgot.
    fn expire(&mut self, now: Instant, ttl: Duration) -> u64 {
        let mut expired = 0;
        while let Some(&(dst, at)) = self.order.front() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            self.order.pop_front();
            if self.learned.get(&dst) == Some(&at) {
                self.learned.remove(&dst);
                expired += 1;
            }
        }
        expired
    }

    /// Forgets the entry learned first.
    fn forget_oldest(&mut self) {
        while let Some((dst, at)) = self.order.pop_front() {
            if self.learned.get(&dst) == Some(&at) {
                self.learned.remove(&dst);
                return;
            }
        }
        // The queue holds every live entry, so it cannot run dry while `learned`
        // is non-empty; clearing keeps the caller's loop finite regardless.
        self.learned.clear();
    }
}

#[cfg(test)]
mod tests;
