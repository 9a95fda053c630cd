use super::*;

fn counts(n: usize, picks: usize, mut f: impl FnMut() -> usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for _ in 0..picks {
        c[f()] += 1;
    }
    c
}

#[test]
fn round_robin_is_exact_over_equal_weights() {
    let s = Selector::new(Policy::RoundRobin, &[1, 1, 1]);
    assert_eq!(
        counts(3, 300, || s.pick(|_| 0).expect("pick")),
        vec![100, 100, 100]
    );
}

#[test]
fn round_robin_honours_weights_smoothly() {
    let s = Selector::new(Policy::RoundRobin, &[3, 1]);
    let seq: Vec<usize> = (0..8).map(|_| s.pick(|_| 0).expect("pick")).collect();
    // Smooth: never three in a row of the light one, and exact 3:1 per cycle.
    assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 6);
    assert_eq!(seq[..4].iter().filter(|&&i| i == 1).count(), 1);
}

#[test]
fn weighted_route_split_is_exact_per_cycle() {
    let w = Wrr::new(&[80, 20]);
    assert_eq!(counts(2, 5000, || w.next()), vec![4000, 1000]);
}

#[test]
fn zero_weight_choice_is_never_picked() {
    let w = Wrr::new(&[0, 5]);
    assert_eq!(counts(2, 100, || w.next()), vec![0, 100]);
    assert_eq!(counts(2, 100, || w.random()), vec![0, 100]);
}

#[test]
fn huge_weights_fall_back_to_random_but_stay_proportional() {
    let w = Wrr::new(&[1_000_003, 3_000_017]);
    let c = counts(2, 20_000, || w.random());
    assert!((4_000..6_000).contains(&c[0]), "{c:?}");
}

#[test]
fn random_covers_every_endpoint() {
    let s = Selector::new(Policy::Random, &[1, 1, 1, 1]);
    let c = counts(4, 4000, || s.pick(|_| 0).expect("pick"));
    assert!(c.iter().all(|&n| n > 800), "{c:?}");
}

#[test]
fn least_request_avoids_the_busy_endpoint() {
    let s = Selector::new(Policy::LeastRequest, &[1, 1]);
    let loads = [10, 0];
    let c = counts(2, 1000, || s.pick(|i| loads[i]).expect("pick"));
    assert_eq!(c, vec![0, 1000]);
}

#[test]
fn least_request_with_three_prefers_idle_ones() {
    let s = Selector::new(Policy::LeastRequest, &[1, 1, 1]);
    let loads = [0, 0, 50];
    let c = counts(3, 3000, || s.pick(|i| loads[i]).expect("pick"));
    // The busy one wins only when it is not among the two candidates' minimum: never.
    assert_eq!(c[2], 0, "{c:?}");
}

#[test]
fn least_request_weights_scale_load() {
    // Endpoint 1 has 4x the weight: with equal load it is preferred.
    let s = Selector::new(Policy::LeastRequest, &[1, 4]);
    let c = counts(2, 1000, || s.pick(|_| 3).expect("pick"));
    assert_eq!(c[0], 0, "{c:?}");
}

#[test]
fn empty_and_single() {
    assert_eq!(Selector::new(Policy::RoundRobin, &[]).pick(|_| 0), None);
    assert_eq!(
        Selector::new(Policy::LeastRequest, &[7]).pick(|_| 0),
        Some(0)
    );
}

const TAU: f64 = 10e9;
const MS: f64 = 1e6;

#[test]
fn peak_ewma_jumps_to_a_slower_rtt_at_once() {
    let mut e = PeakEwma::new(30.0 * MS, 0);
    assert_eq!(e.cost(0, TAU), 30.0 * MS);
    // The first response replaces the default outright.
    e.observe(2.0 * MS, 0, TAU);
    assert_eq!(e.cost(0, TAU), 2.0 * MS);
    // Later faster ones blend: Δt = 0, the old estimate keeps all its weight.
    e.observe(1.0 * MS, 0, TAU);
    assert_eq!(e.cost(0, TAU), 2.0 * MS);
    e.observe(50.0 * MS, 1_000, TAU);
    assert_eq!(e.cost(1_000, TAU), 50.0 * MS);
}

#[test]
fn peak_ewma_decays_toward_a_faster_rtt_by_the_closed_form() {
    let mut e = PeakEwma::new(30.0 * MS, 0);
    e.observe(100.0 * MS, 0, TAU);
    let dt = 5_000_000_000u64; // 5 s, half of τ
    e.observe(10.0 * MS, dt, TAU);
    let w = (-(dt as f64) / TAU).exp();
    let expected = 100.0 * MS * w + 10.0 * MS * (1.0 - w);
    assert!(
        (e.cost(dt, TAU) - expected).abs() < 1.0,
        "{}",
        e.cost(dt, TAU)
    );
    // Far later it has all but forgotten the peak.
    let later = dt + 100_000_000_000;
    e.observe(10.0 * MS, later, TAU);
    assert!((e.cost(later, TAU) - 10.0 * MS).abs() < 0.01 * MS);
}

#[test]
fn peak_ewma_load_scales_with_in_flight() {
    let e = PeakEwma::new(2.0 * MS, 0);
    assert_eq!(e.load(0, 0, TAU), 2_000_000);
    assert_eq!(e.load(4, 0, TAU), 10_000_000);
}

#[test]
fn p2c_over_peak_ewma_picks_the_lower_load() {
    let s = Selector::new(Policy::PeakEwma, &[1, 1]);
    // Two endpoints: both are always the candidates, the cheaper one wins.
    for _ in 0..100 {
        assert_eq!(s.pick(|i| [20_000_000, 2_000_000][i]), Some(1));
    }
    // Among three, the dearest one is never chosen (it loses every pair).
    let s = Selector::new(Policy::PeakEwma, &[1, 1, 1]);
    let c = counts(3, 600, || s.pick(|i| [2, 3, 20][i]).expect("pick"));
    assert_eq!(c[2], 0, "{c:?}");
}

#[test]
fn peak_ewma_unused_estimate_decays_toward_zero_on_read() {
    let mut e = PeakEwma::new(30.0 * MS, 0);
    e.observe(20.0 * MS, 0, TAU);
    let dt = 10_000_000_000u64; // one τ
    let expected = 20.0 * MS * (-1.0f64).exp();
    assert!(
        (e.cost(dt, TAU) - expected).abs() < 1.0,
        "{}",
        e.cost(dt, TAU)
    );
    // Reading changes nothing: the estimate at 0 is still the peak.
    assert_eq!(e.cost(0, TAU), 20.0 * MS);
}
