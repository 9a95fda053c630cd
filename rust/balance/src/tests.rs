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
