use super::*;

/// One endpoint of a test service.
struct Endpoint {
    id: usize,
    load: Arc<EndpointLoad>,
    weight: u32,
}

/// `n` fresh endpoints of weight 1, all created at `t0` so that their costs tie.
fn service(n: usize, t0: Instant) -> Vec<Endpoint> {
    (0..n)
        .map(|id| Endpoint {
            id,
            load: Arc::new(EndpointLoad::fresh(t0)),
            weight: 1,
        })
        .collect()
}

fn load_of(e: &Endpoint) -> (&EndpointLoad, u32) {
    (&e.load, e.weight)
}

/// How many of `picks` picks at `now` went to each endpoint.
fn tally(service: &[Endpoint], picks: usize, now: Instant) -> Vec<usize> {
    let mut counts = vec![0; service.len()];
    for _ in 0..picks {
        let picked = pick_at(service, &load_of, now).expect("a non-empty service");
        counts[picked.id] += 1;
    }
    counts
}

/// Makes `load` answer one request in `rtt`.
fn respond(load: &Arc<EndpointLoad>, rtt: Duration) {
    let request = load.start();
    let answered = request.started + rtt;
    request.success_at(answered);
}

/// Fails a request on `load` at `now`, with the ejection at its nominal length.
fn fail(load: &Arc<EndpointLoad>, now: Instant) {
    load.start().failure_at(now, 0.5);
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * b.abs().max(1.0)
}

// The estimate.

#[test]
fn a_fresh_endpoint_is_estimated_at_30ms_and_a_slower_response_replaces_that_at_once() {
    let t0 = Instant::now();
    let mut rtt = PeakEwma::new(t0);
    assert!(close(ms(rtt.at(t0)), 30.0));

    rtt.observe(Duration::from_millis(100), t0 + Duration::from_millis(1));
    assert!(close(ms(rtt.ns), 100.0), "{}", ms(rtt.ns));
}

#[test]
fn a_faster_response_pulls_the_estimate_down_by_the_time_since_the_last() {
    let t0 = Instant::now();
    let mut rtt = PeakEwma::new(t0);
    rtt.observe(Duration::from_millis(100), t0);

    // In the same instant, a fast response weighs nothing: a burst of them does not
    // erase a slow one.
    rtt.observe(Duration::from_millis(10), t0);
    assert!(close(ms(rtt.ns), 100.0), "{}", ms(rtt.ns));

    // One tau later the old estimate weighs e⁻¹.
    let w = (-1.0f64).exp();
    rtt.observe(Duration::from_millis(50), t0 + TAU);
    assert!(
        close(ms(rtt.ns), 100.0 * w + 50.0 * (1.0 - w)),
        "{}",
        ms(rtt.ns)
    );
    assert!(close(ms(rtt.ns), 68.393_972), "{}", ms(rtt.ns));

    // Long after, the estimate is the new sample.
    rtt.observe(Duration::from_millis(20), t0 + 30 * TAU);
    assert!(close(ms(rtt.ns), 20.0), "{}", ms(rtt.ns));
}

#[test]
fn an_idle_estimate_decays_so_that_a_once_slow_endpoint_gets_tried_again() {
    let t0 = Instant::now();
    let mut rtt = PeakEwma::new(t0);
    rtt.observe(Duration::from_secs(2), t0);
    assert!(close(ms(rtt.at(t0 + TAU)), 2000.0 * (-1.0f64).exp()));
    assert!(ms(rtt.at(t0 + 10 * TAU)) < 0.1);
    // Reading does not change it.
    assert!(close(ms(rtt.ns), 2000.0));
}

#[test]
fn the_cost_is_the_estimate_times_the_requests_in_flight_plus_one() {
    let t0 = Instant::now();
    let load = Arc::new(EndpointLoad::fresh(t0));
    assert!(close(ms(load.cost_at(t0)), 30.0));
    let requests: Vec<InFlight> = (0..3).map(|_| load.start()).collect();
    assert!(close(ms(load.cost_at(t0)), 120.0));
    assert_eq!(load.view_at(t0).in_flight, 3);
    drop(requests);
    assert_eq!(load.view_at(t0).in_flight, 0);
}

// Picking.

#[test]
fn p2c_keeps_away_from_the_slow_endpoint() {
    let t0 = Instant::now();
    let service = service(5, t0);
    for e in &service {
        let rtt = if e.id == 2 { 500 } else { 10 };
        // All at `t0`, so that the fast ones tie and share the load.
        e.load.succeed(Duration::from_millis(rtt), t0);
    }
    let counts = tally(&service, 1000, t0 + Duration::from_millis(600));
    assert!(counts[2] < 200, "the slow endpoint got {counts:?}");
    for (id, &n) in counts.iter().enumerate().filter(|(id, _)| *id != 2) {
        assert!(n > 150, "endpoint {id} got too few: {counts:?}");
    }
}

#[test]
fn requests_in_flight_shift_load_to_the_other_endpoints() {
    let t0 = Instant::now();
    let service = service(3, t0);
    let _busy: Vec<InFlight> = (0..10).map(|_| service[0].load.start()).collect();
    let counts = tally(&service, 1000, t0);
    assert!(counts[0] < 50, "the busy endpoint got {counts:?}");
}

#[test]
fn requests_held_open_spread_evenly_over_equal_endpoints() {
    let t0 = Instant::now();
    let service = service(2, t0);
    let held: Vec<InFlight> = (0..100)
        .map(|_| {
            let picked = pick_at(&service, &load_of, t0).expect("two endpoints");
            picked.load.start()
        })
        .collect();
    let a = service[0].load.view_at(t0).in_flight;
    let b = service[1].load.view_at(t0).in_flight;
    assert_eq!(a + b, 100);
    assert!(a.abs_diff(b) <= 1, "{a} against {b}");
    drop(held);
}

#[test]
fn an_endpoint_of_weight_3_carries_three_times_the_requests_in_flight() {
    let t0 = Instant::now();
    let mut service = service(2, t0);
    service[1].weight = 3;
    let _held: Vec<InFlight> = (0..400)
        .map(|_| {
            let picked = pick_at(&service, &load_of, t0).expect("two endpoints");
            picked.load.start()
        })
        .collect();
    let light = service[0].load.view_at(t0).in_flight;
    let heavy = service[1].load.view_at(t0).in_flight;
    assert!((280..=320).contains(&heavy), "{light} against {heavy}");
}

#[test]
fn an_empty_service_has_no_pick_and_a_lone_endpoint_is_always_picked() {
    let t0 = Instant::now();
    assert!(pick_at(&[] as &[Endpoint], &load_of, t0).is_none());
    let lone = service(1, t0);
    fail(&lone[0].load, t0);
    assert_eq!(pick_at(&lone, &load_of, t0).map(|e| e.id), Some(0));
}

// Ejection.

#[test]
fn a_failed_endpoint_is_not_picked_during_its_backoff() {
    let t0 = Instant::now();
    let service = service(3, t0);
    service[1].load.start().failure();

    let view = service[1].load.view();
    assert_eq!(view.failures, 1);
    assert!(
        (700..=1200).contains(&view.ejected_for_ms),
        "ejected for {} ms",
        view.ejected_for_ms
    );
    let counts = tally(&service, 1000, Instant::now());
    assert_eq!(counts[1], 0, "{counts:?}");
}

#[test]
fn once_the_backoff_has_passed_exactly_one_caller_probes_and_a_success_brings_it_back() {
    let t0 = Instant::now();
    let load = Arc::new(EndpointLoad::fresh(t0));
    fail(&load, t0);
    assert_eq!(load.admit(t0 + Duration::from_millis(999)), Admission::Shut);

    let later = t0 + Duration::from_secs(2);
    let admitted = std::thread::scope(|s| {
        let callers: Vec<_> = (0..8).map(|_| s.spawn(|| load.admit(later))).collect();
        callers
            .into_iter()
            .map(|c| c.join().expect("a caller"))
            .filter(|a| *a == Admission::Probe)
            .count()
    });
    assert_eq!(admitted, 1);

    let probe = load.start();
    assert!(probe.probe.is_some());
    assert_eq!(load.admit(later + Duration::from_secs(5)), Admission::Shut);

    let answered = probe.started + Duration::from_millis(5);
    probe.success_at(answered);
    assert_eq!(load.admit(answered), Admission::Open);
    let view = load.view_at(answered);
    assert_eq!((view.failures, view.ejected_for_ms), (0, 0));
}

#[test]
fn pick_hands_the_probe_to_one_request_until_it_answers() {
    let t0 = Instant::now();
    let service = service(2, t0);
    let _busy: Vec<InFlight> = (0..5).map(|_| service[0].load.start()).collect();
    fail(&service[1].load, t0);

    let later = t0 + Duration::from_secs(2);
    let first = pick_at(&service, &load_of, later).expect("two endpoints");
    assert_eq!(first.id, 1, "the idle endpoint is cheaper, so it is probed");
    let probe = first.load.start();

    assert_eq!(tally(&service, 100, later), vec![100, 0]);

    let answered = probe.started + Duration::from_millis(1);
    probe.success_at(answered);
    assert_eq!(tally(&service, 100, later), vec![0, 100]);
}

#[test]
fn a_probe_that_loses_the_comparison_is_given_back() {
    let t0 = Instant::now();
    let service = service(2, t0);
    respond(&service[0].load, Duration::from_millis(1));
    respond(&service[1].load, Duration::from_secs(1));
    fail(&service[1].load, t0);

    let later = t0 + Duration::from_secs(2);
    assert_eq!(tally(&service, 10, later), vec![10, 0]);
    assert_eq!(service[1].load.admit(later), Admission::Probe);
}

#[test]
fn a_cancelled_probe_lets_the_next_caller_probe_and_a_failed_one_doubles_the_backoff() {
    let t0 = Instant::now();
    let load = Arc::new(EndpointLoad::fresh(t0));
    fail(&load, t0);
    let later = t0 + Duration::from_secs(2);

    assert_eq!(load.admit(later), Admission::Probe);
    drop(load.start());
    assert_eq!(load.view_at(later).failures, 1);
    assert_eq!(load.admit(later), Admission::Probe);

    load.start().failure_at(later, 0.5);
    let view = load.view_at(later);
    assert_eq!((view.failures, view.ejected_for_ms), (2, 2000));
}

#[test]
fn a_probe_nobody_starts_lapses() {
    let t0 = Instant::now();
    let load = Arc::new(EndpointLoad::fresh(t0));
    fail(&load, t0);
    let later = t0 + Duration::from_secs(2);
    assert!(matches!(load.admit(later), Admission::Probe));
    assert_eq!(load.admit(later + CLAIM_LAPSE / 2), Admission::Shut);
    assert_eq!(load.admit(later + CLAIM_LAPSE), Admission::Probe);
}

#[test]
fn the_backoff_doubles_with_each_failed_probe_up_to_30s() {
    let t0 = Instant::now();
    let load = Arc::new(EndpointLoad::fresh(t0));
    let mut now = t0;
    let mut ejections = Vec::new();
    for _ in 0..7 {
        let request = load.start();
        request.failure_at(now, 0.5);
        let view = load.view_at(now);
        ejections.push(view.ejected_for_ms / 1000);
        now += Duration::from_millis(view.ejected_for_ms);
        assert_eq!(load.admit(now), Admission::Probe);
    }
    assert_eq!(ejections, vec![1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(load.view_at(now).failures, 7);
}

#[test]
fn the_backoff_is_spread_by_20_percent_either_way() {
    assert_eq!(ejection(1, 0.0), Duration::from_millis(800));
    assert_eq!(ejection(1, 1.0), Duration::from_millis(1200));
    assert_eq!(ejection(3, 0.5), Duration::from_secs(4));
    assert_eq!(ejection(40, 1.0), Duration::from_secs(36));
    assert_eq!(ejection(u32::MAX, 0.0), Duration::from_secs(24));
}

#[test]
fn requests_that_fail_together_count_as_one_failure() {
    let t0 = Instant::now();
    let load = Arc::new(EndpointLoad::fresh(t0));
    let requests: Vec<InFlight> = (0..50).map(|_| load.start()).collect();
    for (i, request) in requests.into_iter().enumerate() {
        request.failure_at(t0 + Duration::from_millis(i as u64), 0.5);
    }
    let view = load.view_at(t0);
    assert_eq!((view.failures, view.ejected_for_ms), (1, 1000));
}

#[test]
fn when_every_endpoint_is_ejected_the_balancer_fails_open() {
    let t0 = Instant::now();
    let service = service(3, t0);
    for e in &service {
        fail(&e.load, t0);
    }
    let counts = tally(&service, 300, t0);
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
}

// The registry.

#[test]
fn the_registry_hands_out_the_same_load_for_the_same_address() {
    let registry = Registry::new();
    let a: SocketAddr = "10.0.0.1:8080".parse().expect("an address");
    let b: SocketAddr = "10.0.0.2:8080".parse().expect("an address");
    let first = registry.get(a);
    assert!(Arc::ptr_eq(&first, &registry.get(a)));
    assert!(!Arc::ptr_eq(&first, &registry.get(b)));
}

#[test]
fn the_registry_forgets_an_address_nobody_holds() {
    let registry = Registry::new();
    let a: SocketAddr = "10.0.0.1:8080".parse().expect("an address");
    fail(&registry.get(a), Instant::now());
    assert_eq!(registry.get(a).view().failures, 0);

    for port in 0..1000 {
        drop(registry.get(SocketAddr::from(([10, 0, 1, 1], port))));
    }
    assert!(registry.tracked() <= MIN_PRUNE, "{}", registry.tracked());
}

#[test]
fn the_view_serializes_the_four_fields() {
    let t0 = Instant::now();
    let load = Arc::new(EndpointLoad::fresh(t0));
    let _request = load.start();
    let json = serde_json::to_value(load.view_at(t0)).expect("a view serializes");
    assert_eq!(
        json,
        serde_json::json!({"ewma_ms": 30.0, "in_flight": 1, "ejected_for_ms": 0, "failures": 0})
    );
}

#[test]
fn an_established_connection_clears_the_ejection_and_stays_in_flight() {
    let load = Arc::new(EndpointLoad::new());
    load.start().failure();
    assert_eq!(load.view().failures, 1);

    let mut connection = load.start();
    connection.established();
    let view = load.view();
    assert_eq!(view.failures, 0);
    assert_eq!(view.ejected_for_ms, 0);
    assert_eq!(view.in_flight, 1, "the connection still counts");
    drop(connection);
    assert_eq!(load.view().in_flight, 0);
}
