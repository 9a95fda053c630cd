use super::*;

fn cluster(
    endpoints: &[(&str, u32)],
    outlier: Option<ir::OutlierDetection>,
    lb: ir::LbPolicy,
) -> ClusterRt {
    let ir = ir::Cluster {
        name: "c".into(),
        lb,
        endpoints: endpoints
            .iter()
            .map(|(a, p)| ir::Endpoint {
                address: (*a).into(),
                weight: 1,
                priority: *p,
                ..Default::default()
            })
            .collect(),
        outlier,
        ..Default::default()
    };
    ClusterRt::build(&ir, &stats::Registry::default(), &EndpointStates::default()).expect("build")
}

fn outlier(consecutive_5xx: u32, max_ejection_percent: u32) -> Option<ir::OutlierDetection> {
    Some(ir::OutlierDetection {
        consecutive_5xx,
        consecutive_gateway: 0,
        interval_ms: 10_000,
        base_ejection_ms: 60_000,
        max_ejection_percent,
        min_health_percent: 0,
    })
}

#[test]
fn consecutive_5xx_ejects_and_picks_skip_the_ejected() {
    let c = cluster(
        &[("10.0.0.1:80", 0), ("10.0.0.2:80", 0)],
        outlier(3, 100),
        ir::LbPolicy::RoundRobin,
    );
    c.record(0, Health::ServerError(500));
    c.record(0, Health::ServerError(503));
    // A success resets the streak.
    c.record(0, Health::Success);
    c.record(0, Health::ServerError(500));
    c.record(0, Health::ServerError(500));
    assert_eq!(c.health_json(0), "HEALTHY");
    c.record(0, Health::ServerError(500));
    assert_eq!(c.health_json(0), "EJECTED");
    assert!((0..100).all(|_| c.pick_index() == Some(1)));
    assert_eq!(c.stats.ejections.load(Relaxed), 1);
}

#[test]
fn max_ejection_percent_still_allows_one() {
    let c = cluster(
        &[("10.0.0.1:80", 0), ("10.0.0.2:80", 0), ("10.0.0.3:80", 0)],
        outlier(1, 10),
        ir::LbPolicy::RoundRobin,
    );
    c.record(0, Health::LocalFailure);
    c.record(1, Health::LocalFailure);
    assert_eq!(c.health_json(0), "EJECTED");
    assert_eq!(
        c.health_json(1),
        "HEALTHY",
        "10% of 3 rounds down; one ejection is still allowed"
    );
}

#[test]
fn all_ejected_without_panic_threshold_is_no_endpoint() {
    let c = cluster(
        &[("10.0.0.1:80", 0)],
        outlier(1, 100),
        ir::LbPolicy::RoundRobin,
    );
    c.record(0, Health::LocalFailure);
    assert_eq!(c.pick_index(), None);
}

#[test]
fn lower_priority_is_used_only_when_the_preferred_one_is_down() {
    let c = cluster(
        &[("10.0.0.1:80", 0), ("10.0.0.2:80", 1), ("10.0.0.3:80", 2)],
        outlier(1, 100),
        ir::LbPolicy::LeastRequest,
    );
    assert!((0..50).all(|_| c.pick_index() == Some(0)));
    c.record(0, Health::LocalFailure);
    assert!((0..50).all(|_| c.pick_index() == Some(1)));
    c.record(1, Health::LocalFailure);
    assert!((0..50).all(|_| c.pick_index() == Some(2)));
}

#[test]
fn gateway_errors_only_count_502_to_504() {
    let mut o = outlier(0, 100).expect("outlier");
    o.consecutive_gateway = 2;
    let c = cluster(
        &[("10.0.0.1:80", 0), ("10.0.0.2:80", 0)],
        Some(o),
        ir::LbPolicy::RoundRobin,
    );
    c.record(0, Health::ServerError(500));
    c.record(0, Health::ServerError(500));
    assert_eq!(c.health_json(0), "HEALTHY");
    c.record(0, Health::ServerError(503));
    c.record(0, Health::ServerError(502));
    assert_eq!(c.health_json(0), "EJECTED");
}

#[test]
fn warmup_factor_grows_from_min_percent_to_full() {
    let w = ir::Warmup {
        duration_ms: 1000,
        min_percent: 10.0,
        aggression: 1.0,
    };
    assert!((warm_factor(0, &w) - 0.1).abs() < 1e-9);
    assert!((warm_factor(500, &w) - 0.5).abs() < 1e-9);
    assert!((warm_factor(1000, &w) - 1.0).abs() < 1e-9);
    assert!((warm_factor(5000, &w) - 1.0).abs() < 1e-9);
    // More aggression: faster ramp early on.
    let fast = ir::Warmup {
        aggression: 2.0,
        ..w
    };
    assert!(warm_factor(250, &fast) > warm_factor(250, &w));
}

#[test]
fn picks_from_a_minimum_priority_for_remote_locality_retries() {
    let c = cluster(
        &[("10.0.0.1:80", 0), ("10.0.0.2:80", 1)],
        None,
        ir::LbPolicy::RoundRobin,
    );
    assert!((0..20).all(|_| c.pick_index_from(0) == Some(0)));
    assert!((0..20).all(|_| c.pick_index_from(1) == Some(1)));
    // Past the last priority: back to the preferred one.
    assert!((0..20).all(|_| c.pick_index_from(5) == Some(0)));
}

#[tokio::test(start_paused = true)]
async fn an_ejection_lasts_its_time_and_grows_with_each_one_on_paused_time() {
    let c = cluster(
        &[("10.0.0.1:80", 0), ("10.0.0.2:80", 0)],
        outlier(3, 100),
        ir::LbPolicy::RoundRobin,
    );
    let eject = || {
        for _ in 0..3 {
            c.record(0, Health::ServerError(503));
        }
    };
    let step = |ms| tokio::time::advance(Duration::from_millis(ms));
    eject();
    assert_eq!(c.health_json(0), "EJECTED");
    step(59_999).await;
    assert_eq!(c.health_json(0), "EJECTED");
    step(2).await;
    assert_eq!(c.health_json(0), "HEALTHY");
    // The second ejection lasts base × 2 (Envoy's growing ejection time).
    eject();
    step(119_999).await;
    assert_eq!(c.health_json(0), "EJECTED");
    step(2).await;
    assert_eq!(c.health_json(0), "HEALTHY");
}

fn breaker_cluster(states: &EndpointStates) -> ClusterRt {
    let ir = ir::Cluster {
        name: "c".into(),
        lb: ir::LbPolicy::RoundRobin,
        endpoints: ["10.0.0.1:80", "10.0.0.2:80"]
            .iter()
            .map(|a| ir::Endpoint {
                address: (*a).into(),
                weight: 1,
                ..Default::default()
            })
            .collect(),
        failure_rate: Some(ir::FailureRateBreaker {
            threshold: 0.5,
            tau_ms: 1_000,
            min_requests: 5,
            cool_down_ms: 1_000,
            max_cool_down_ms: 10_000,
            probes: 2,
        }),
        ..Default::default()
    };
    ClusterRt::build(&ir, &stats::Registry::default(), states).expect("build")
}

fn breaker_state(c: &ClusterRt, i: usize) -> String {
    c.breaker_json(i).expect("a breaker")["state"]
        .as_str()
        .expect("state")
        .to_owned()
}

/// Fails endpoint `i` every 10 ms until its breaker opens.
async fn open(c: &ClusterRt, i: usize) {
    for _ in 0..1_000 {
        tokio::time::advance(Duration::from_millis(10)).await;
        c.record(i, Health::LocalFailure);
        if breaker_state(c, i) == "OPEN" {
            return;
        }
    }
    panic!("never opened");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_takes_its_endpoint_out_of_selection_across_swaps() {
    use crate::upstream::{select, Pick};
    let states = EndpointStates::default();
    let c = breaker_cluster(&states);
    open(&c, 0).await;
    assert!((0..100).all(|_| c.pick_index() == Some(1)));
    // A config swap keeps the state (EndpointStates outlives snapshots).
    let c = breaker_cluster(&states);
    assert_eq!(breaker_state(&c, 0), "OPEN");
    assert!((0..100).all(|_| c.pick_index() == Some(1)));
    // Both open: no endpoint at all.
    open(&c, 1).await;
    assert_eq!(c.pick_index(), None);
    assert!(select(&c, Pick::default()).is_none());
    // After the cool-down: half-open, at most two probes each, then none.
    tokio::time::advance(Duration::from_secs(1)).await;
    let probes: Vec<_> = (0..10)
        .filter_map(|_| select(&c, Pick::default()))
        .map(|t| t.index)
        .collect();
    assert_eq!(probes.len(), 4, "{probes:?}");
    assert_eq!(breaker_state(&c, 0), "HALF_OPEN");
    c.record(0, Health::Success);
    c.record(0, Health::Success);
    assert_eq!(breaker_state(&c, 0), "CLOSED");
    c.record(1, Health::ServerError(503));
    assert_eq!(breaker_state(&c, 1), "OPEN");
    assert_eq!(c.breaker_json(1).expect("breaker")["openings"], 2);
    assert!((0..100).all(|_| c.pick_index() == Some(0)));
}

#[test]
fn peak_ewma_avoids_a_slow_endpoint_and_survives_swaps() {
    let states = EndpointStates::default();
    let ir = ir::Cluster {
        name: "c".into(),
        lb: ir::LbPolicy::PeakEwma,
        endpoints: ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|a| ir::Endpoint {
                address: (*a).into(),
                weight: 1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let registry = stats::Registry::default();
    let c = ClusterRt::build(&ir, &registry, &states).expect("build");
    assert!(c.peak_ewma);
    c.observe_rtt(0, Duration::from_millis(2));
    c.observe_rtt(1, Duration::from_millis(2));
    c.observe_rtt(2, Duration::from_millis(20));
    // The first response sets each estimate (no 30 ms default left).
    assert!((c.ewma_ms(0).expect("ewma") - 2.0).abs() < 0.5);
    assert!((c.ewma_ms(2).expect("ewma") - 20.0).abs() < 0.5);
    // Two fast, one slow: the slow one loses every pair it is in.
    let slow = (0..300).filter(|_| c.pick_index() == Some(2)).count();
    assert_eq!(slow, 0);
    // Estimates survive a config swap (kept in EndpointStates).
    let c = ClusterRt::build(&ir, &registry, &states).expect("swap keeps state");
    assert!((c.ewma_ms(2).expect("ewma") - 20.0).abs() < 0.5);
    let other = ir::Cluster {
        lb: ir::LbPolicy::RoundRobin,
        ..ir.clone()
    };
    let rr = ClusterRt::build(&other, &registry, &states).expect("build");
    assert_eq!(rr.ewma_ms(0), None);
    rr.observe_rtt(0, Duration::from_secs(1)); // ignored: not PEAK_EWMA
}
