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
//! starts speaking another protocol is detected again after at most one TTL.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many destinations are remembered by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How long a destination is remembered by default.
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
        }
    }

    /// Records `dst` as server-speaks-first; returns true if it was newly learned
    /// (the caller logs the hint and counts it once).
    pub fn learn(&self, dst: SocketAddr) -> bool {
        self.learn_at(dst, Instant::now())
    }

    /// Whether `dst` is known to be server-speaks-first (and not expired).
    pub fn is_opaque(&self, dst: SocketAddr) -> bool {
        self.is_opaque_at(dst, Instant::now())
    }

    /// How many destinations are remembered and not expired.
    pub fn len(&self) -> usize {
        self.len_at(Instant::now())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn learn_at(&self, dst: SocketAddr, now: Instant) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let mut state = self.lock();
        state.expire(now, self.ttl);
        // Not refreshed when already known: it expires one TTL after it was first
        // learned, so a destination that changed protocol is detected again.
        if state.learned.contains_key(&dst) {
            return false;
        }
        while state.learned.len() >= self.capacity {
            state.forget_oldest();
        }
        state.learned.insert(dst, now);
        state.order.push_back((dst, now));
        true
    }

    fn is_opaque_at(&self, dst: SocketAddr, now: Instant) -> bool {
        self.lock()
            .learned
            .get(&dst)
            .is_some_and(|&at| now.saturating_duration_since(at) < self.ttl)
    }

    fn len_at(&self, now: Instant) -> usize {
        let mut state = self.lock();
        state.expire(now, self.ttl);
        state.learned.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Stale queue entries are skipped and ages are checked on every read, so a
        // panic between two updates leaves state that is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for OpaqueMemory {
    fn default() -> Self {
        OpaqueMemory::new(DEFAULT_CAPACITY, DEFAULT_TTL)
    }
}

impl State {
    /// Forgets every entry learned a TTL or more before `now`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some(&(dst, at)) = self.order.front() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            self.order.pop_front();
            if self.learned.get(&dst) == Some(&at) {
                self.learned.remove(&dst);
            }
        }
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
