use super::*;

fn config() -> Config {
    Config {
        threshold: 0.3,
        tau_ms: 1_000,
        min_requests: 10,
        cool_down_ms: 1_000,
        max_cool_down_ms: 8_000,
        probes: 3,
    }
}

/// Never opens: the rate alone is under test.
fn rate_only() -> Config {
    Config {
        threshold: 1.0,
        ..config()
    }
}

fn closed_form(p: f64, t: Duration, tau: Duration) -> f64 {
    p * (1.0 - (-t.as_secs_f64() / tau.as_secs_f64()).exp())
}

/// One failure and one success at each 10 ms tick: every interval's failure
/// fraction is exactly p = 1/2, so the recursion *is* the closed form at the
/// ticks; only floating-point rounding separates them.
#[test]
fn rate_equals_the_closed_form_for_an_exact_fraction() {
    let c = rate_only();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    let step = Duration::from_millis(10);
    for k in 1..=1_000u32 {
        let now = t0 + step * k;
        b.record(&c, true, now);
        b.record(&c, false, now);
        let want = closed_form(0.5, step * k, ms(c.tau_ms));
        assert!(
            (b.rate(&c) - want).abs() < 1e-9,
            "t = {:?}: F = {}, closed form {want}",
            step * k,
            b.rate(&c)
        );
    }
    // After 10 τ the rate has settled at p.
    assert!((b.rate(&c) - 0.5).abs() < 1e-4);
}

/// Single observations, failing in a fixed pattern with fraction p: the
/// error e_k = F_k − p(1 − e^(−t_k/τ)) obeys e_k = d·e_(k−1) + (1 − d)(x_k − p)
/// with d = e^(−Δt/τ), so e_k = (1 − d)·Σ d^(k−j)(x_j − p). The weights
/// d^(k−j) are monotone in [0, 1], so by Abel summation |e_k| ≤ (1 − d)·S
/// with S the largest |sum of x − p over a run ending at k| — 1/2 for
/// alternating failures, 4/5 for one failure in five. That bound is the
/// tolerance (about 0.005 and 0.008 here), checked at every observation.
#[test]
fn rate_follows_the_closed_form_within_one_observations_weight() {
    for (p, pattern, s) in [
        (0.5, &[true, false][..], 0.5),
        (0.2, &[true, false, false, false, false][..], 0.8),
    ] {
        let c = rate_only();
        let t0 = Instant::now();
        let mut b = FailureRate::new(t0);
        let step = Duration::from_millis(10);
        let d = (-step.as_secs_f64() / ms(c.tau_ms).as_secs_f64()).exp();
        let tolerance = (1.0 - d) * s + 1e-12;
        let mut worst = 0.0f64;
        for k in 1..=2_000u32 {
            let now = t0 + step * k;
            b.record(&c, pattern[(k as usize - 1) % pattern.len()], now);
            let err = (b.rate(&c) - closed_form(p, step * k, ms(c.tau_ms))).abs();
            assert!(
                err <= tolerance,
                "p = {p}, k = {k}: error {err} > {tolerance}"
            );
            worst = worst.max(err);
        }
        assert!(worst > 0.0);
    }
}

#[test]
fn a_rate_decays_when_failures_stop() {
    let c = rate_only();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    b.record(&c, true, t0 + Duration::from_secs(10));
    assert!((b.rate(&c) - closed_form(1.0, Duration::from_secs(10), ms(1_000))).abs() < 1e-9);
    let f = b.rate(&c);
    // Successes for one τ: F shrinks by e^(−1).
    for k in 1..=100u32 {
        b.record(
            &c,
            false,
            t0 + Duration::from_secs(10) + Duration::from_millis(10) * k,
        );
    }
    assert!((b.rate(&c) - f * (-1.0f64).exp()).abs() < 1e-9);
}

#[test]
fn a_few_failures_do_not_open_it_without_volume() {
    let c = config();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    // One failure after a long quiet spell: F ≈ 1, but V = 1 < 10.
    b.record(&c, true, t0 + Duration::from_secs(60));
    assert!(b.rate(&c) > 0.99);
    assert_eq!(b.state(), State::Closed);
    assert!(b.admit(&c, t0 + Duration::from_secs(60)));
}

/// Drives `b` with a failure fraction of 1/2 (one of each per 10 ms tick,
/// the success first so the tick's fraction is never above 1/2) from `from`
/// until it opens; returns when it opened.
fn fail_until_open(b: &mut FailureRate, c: &Config, from: Instant) -> Instant {
    for k in 1..=10_000u32 {
        let now = from + Duration::from_millis(10) * k;
        b.record(c, false, now);
        b.record(c, true, now);
        if b.state() == State::Open {
            return now;
        }
    }
    panic!("never opened");
}

#[test]
fn opens_where_the_closed_form_crosses_the_threshold() {
    let c = config();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    let opened = fail_until_open(&mut b, &c, t0);
    // p(1 − e^(−t/τ)) = 0.3 at t = −τ ln(1 − 0.3/0.5) = τ ln 2.5 ≈ 916 ms;
    // the first tick past it is 920 ms.
    assert_eq!(opened - t0, Duration::from_millis(920));
    assert_eq!(b.openings(), 1);
    // Outcomes of tries admitted earlier change nothing while open.
    b.record(&c, false, opened);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn open_half_open_closed_with_bounded_probes() {
    let c = config();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    let opened = fail_until_open(&mut b, &c, t0);
    assert!(!b.admit(&c, opened + Duration::from_millis(999)));
    assert!(!b.available(&c, opened + Duration::from_millis(999)));
    let t = opened + Duration::from_millis(1_000);
    assert!(b.available(&c, t));
    // Half-open: three probes, no fourth while they are out.
    assert!(b.admit(&c, t));
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.admit(&c, t));
    assert!(b.admit(&c, t));
    assert!(!b.admit(&c, t));
    assert!(!b.available(&c, t));
    b.record(&c, false, t);
    b.record(&c, false, t);
    assert_eq!(b.state(), State::HalfOpen);
    b.record(&c, false, t);
    assert_eq!(b.state(), State::Closed);
    assert!(b.admit(&c, t));
    // Closed again, the rate restarts at the threshold: it must stay under.
    assert!((b.rate(&c) - c.threshold).abs() < 1e-12);
    b.record(&c, false, t + Duration::from_millis(10));
    assert_eq!(b.state(), State::Closed);
    assert!(b.rate(&c) < c.threshold);
}

#[test]
fn a_failed_probe_reopens_with_a_longer_cool_down_capped() {
    let c = config();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    let mut t = fail_until_open(&mut b, &c, t0);
    // Cool-downs: 1, 2, 4, 8, 8 s (max_cool_down).
    for (opening, cool) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000), (5, 8_000)] {
        assert_eq!(b.openings(), opening);
        assert!(!b.admit(&c, t + ms(cool - 1)), "opening {opening}");
        t += ms(cool);
        assert!(b.admit(&c, t), "opening {opening}");
        b.record(&c, true, t);
        assert_eq!(b.state(), State::Open);
    }
}

#[test]
fn a_recovered_endpoint_that_fails_again_reopens_at_once_and_backoff_is_forgotten_later() {
    let c = config();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    let mut t = fail_until_open(&mut b, &c, t0) + ms(1_000);
    for _ in 0..3 {
        assert!(b.admit(&c, t));
        b.record(&c, false, t);
    }
    assert_eq!(b.state(), State::Closed);
    // Its first failure puts the rate over the threshold: open again, for 2 s.
    t += ms(10);
    b.record(&c, true, t);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.openings(), 2);
    assert!(!b.admit(&c, t + ms(1_999)));
    // Recovered for real: closed for max_cool_down, the next opening is short again.
    t += ms(2_000);
    for _ in 0..3 {
        assert!(b.admit(&c, t));
        b.record(&c, false, t);
    }
    assert_eq!(b.state(), State::Closed);
    for k in 1..=900u32 {
        b.record(&c, false, t + ms(10) * k);
    }
    assert_eq!(b.state(), State::Closed);
    let t = fail_until_open(&mut b, &c, t + ms(9_000));
    assert_eq!(b.openings(), 1);
    assert!(b.admit(&c, t + ms(1_000)));
}

#[test]
fn lost_probes_do_not_wedge_it_half_open() {
    let c = config();
    let t0 = Instant::now();
    let mut b = FailureRate::new(t0);
    let t = fail_until_open(&mut b, &c, t0) + ms(1_000);
    for _ in 0..3 {
        assert!(b.admit(&c, t));
    }
    // No outcome ever comes back: after a cool-down a new round may go.
    assert!(!b.admit(&c, t + ms(999)));
    assert!(b.admit(&c, t + ms(1_000)));
    assert_eq!(b.state(), State::HalfOpen);
}
