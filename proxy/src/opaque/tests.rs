//! The memory's rules, on a clock the tests move by hand.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

const TTL: Duration = Duration::from_secs(600);

fn dst(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, 7), port))
}

#[test]
fn a_learned_destination_is_opaque_and_others_are_not() {
    let memory = OpaqueMemory::new(10, TTL);
    let now = Instant::now();
    assert!(memory.is_empty());
    assert!(memory.learn_at(dst(3306), now));
    assert!(memory.is_opaque_at(dst(3306), now));
    assert!(!memory.is_opaque_at(dst(3307), now));
    // Same port, another address: a different destination.
    assert!(!memory.is_opaque_at(SocketAddr::from((Ipv4Addr::new(10, 0, 0, 8), 3306)), now));
    assert_eq!(memory.len_at(now), 1);
}

#[test]
fn learning_reports_new_only_the_first_time() {
    let memory = OpaqueMemory::new(10, TTL);
    let now = Instant::now();
    assert!(memory.learn_at(dst(25), now));
    assert!(!memory.learn_at(dst(25), now));
    assert!(!memory.learn_at(dst(25), now + Duration::from_secs(60)));
    assert_eq!(memory.len_at(now), 1);
}

#[test]
fn an_entry_expires_after_the_ttl_and_can_be_learned_again() {
    let memory = OpaqueMemory::new(10, TTL);
    let learned = Instant::now();
    assert!(memory.learn_at(dst(3306), learned));
    // A repeated learn does not extend its life.
    assert!(!memory.learn_at(dst(3306), learned + TTL / 2));

    let just_before = learned + TTL - Duration::from_millis(1);
    assert!(memory.is_opaque_at(dst(3306), just_before));
    assert!(!memory.is_opaque_at(dst(3306), learned + TTL));
    assert_eq!(memory.len_at(learned + TTL), 0);

    assert!(memory.learn_at(dst(3306), learned + TTL));
    assert!(memory.is_opaque_at(dst(3306), learned + TTL + TTL / 2));
}

#[test]
fn when_full_the_oldest_entry_is_forgotten() {
    let memory = OpaqueMemory::new(2, TTL);
    let t0 = Instant::now();
    let second = Duration::from_secs(1);
    assert!(memory.learn_at(dst(1), t0));
    assert!(memory.learn_at(dst(2), t0 + second));
    assert!(memory.learn_at(dst(3), t0 + 2 * second));

    let now = t0 + 3 * second;
    assert!(!memory.is_opaque_at(dst(1), now), "the oldest went");
    assert!(memory.is_opaque_at(dst(2), now));
    assert!(memory.is_opaque_at(dst(3), now));
    assert_eq!(memory.len_at(now), 2);

    // Relearning the evicted one evicts the next oldest.
    assert!(memory.learn_at(dst(1), now));
    assert!(!memory.is_opaque_at(dst(2), now));
    assert!(memory.is_opaque_at(dst(3), now));
    assert!(memory.is_opaque_at(dst(1), now));
}

#[test]
fn expired_entries_make_room_before_live_ones_are_evicted() {
    let memory = OpaqueMemory::new(2, TTL);
    let t0 = Instant::now();
    assert!(memory.learn_at(dst(1), t0));
    assert!(memory.learn_at(dst(2), t0 + TTL / 2));
    // dst(1) has expired by now, so dst(2) survives the third learn.
    let now = t0 + TTL;
    assert!(memory.learn_at(dst(3), now));
    assert!(memory.is_opaque_at(dst(2), now));
    assert!(memory.is_opaque_at(dst(3), now));
    assert_eq!(memory.len_at(now), 2);
}

#[test]
fn re_learning_after_expiry_does_not_grow_the_queue() {
    let memory = OpaqueMemory::new(10, TTL);
    let mut now = Instant::now();
    for _ in 0..100 {
        assert!(memory.learn_at(dst(25), now));
        now += TTL;
    }
    let state = memory.lock();
    assert!(state.order.len() <= 1, "queue holds {}", state.order.len());
}

#[test]
fn a_capacity_of_zero_remembers_nothing() {
    let memory = OpaqueMemory::new(0, TTL);
    let now = Instant::now();
    assert!(!memory.learn_at(dst(25), now));
    assert!(!memory.is_opaque_at(dst(25), now));
    assert!(memory.is_empty());
}

#[test]
fn the_defaults_are_ten_thousand_entries_for_ten_minutes() {
    let memory = OpaqueMemory::default();
    assert_eq!(memory.capacity, 10_000);
    assert_eq!(memory.ttl, Duration::from_secs(600));
    assert!(memory.learn(dst(25)));
    assert!(memory.is_opaque(dst(25)));
    assert_eq!(memory.len(), 1);
}

#[test]
fn a_poisoned_lock_does_not_take_the_proxy_down() {
    let memory = OpaqueMemory::new(10, TTL);
    let now = Instant::now();
    assert!(memory.learn_at(dst(25), now));
    let poisoner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _held = memory.state.lock();
        panic!("a panic while holding the lock");
    }));
    assert!(poisoner.is_err());
    assert!(memory.state.is_poisoned());

    assert!(memory.is_opaque_at(dst(25), now));
    assert!(memory.learn_at(dst(26), now));
    assert_eq!(memory.len_at(now), 2);
}

#[test]
fn the_metrics_count_what_is_remembered_and_what_was_forgotten_and_why() {
    let metrics = crate::metrics::Metrics::new();
    let memory = OpaqueMemory::new(2, TTL).counted_in(&metrics);
    let now = Instant::now();
    let value = |name: &str, label: &str| {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .and_then(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .unwrap_or(0)
    };
    memory.learn_at(dst(1), now);
    memory.learn_at(dst(2), now);
    memory.learn_at(dst(3), now + Duration::from_secs(1));
    assert_eq!(value("opaque_destinations ", ""), 2);
    assert_eq!(value("opaque_forgotten_total", "evicted"), 1);
    assert_eq!(value("opaque_forgotten_total", "expired"), 0);

    // Looking a destination up is enough to let the expired ones go.
    assert!(!memory.is_opaque_at(dst(2), now + TTL));
    assert_eq!(value("opaque_destinations ", ""), 1);
    assert_eq!(value("opaque_forgotten_total", "expired"), 1);
    assert!(!memory.is_opaque_at(dst(3), now + TTL + Duration::from_secs(1)));
    assert_eq!(value("opaque_destinations ", ""), 0);
    assert_eq!(value("opaque_forgotten_total", "expired"), 2);
}
