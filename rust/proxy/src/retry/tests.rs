use super::*;

#[test]
fn retry_conditions_follow_envoy() {
    let policy = |on: &[&str], codes: &[u16]| {
        RetryRt::build(&ir::RetryPolicy {
            attempts: 2,
            retry_on: on.iter().map(|s| s.to_string()).collect(),
            retriable_status_codes: codes.to_vec(),
            ..Default::default()
        })
    };
    let istio_default = policy(
        &[
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ],
        &[],
    );
    assert!(istio_default.should_retry(Outcome::ConnectFailure));
    assert!(!istio_default.should_retry(Outcome::Response(503, None)));
    assert!(istio_default.should_retry(Outcome::Response(200, Some(14))));
    assert!(!istio_default.should_retry(Outcome::Reset));

    let five = policy(&["5xx"], &[]);
    assert!(five.should_retry(Outcome::Response(500, None)));
    assert!(five.should_retry(Outcome::Reset));
    assert!(five.should_retry(Outcome::Timeout));
    assert!(!five.should_retry(Outcome::Response(404, None)));

    let gw = policy(&["gateway-error"], &[]);
    assert!(gw.should_retry(Outcome::Response(503, None)));
    assert!(!gw.should_retry(Outcome::Response(500, None)));

    let codes = policy(&["retriable-status-codes"], &[418]);
    assert!(codes.should_retry(Outcome::Response(418, None)));
}

#[test]
fn backoff_is_bounded() {
    let r = RetryRt::build(&ir::RetryPolicy {
        backoff_base_ms: 25,
        ..Default::default()
    });
    for n in 0..20 {
        assert!(r.backoff(n) <= Duration::from_millis(250));
    }
}

fn five_xx(attempts: u32) -> RetryRt {
    RetryRt::build(&ir::RetryPolicy {
        attempts,
        retry_on: vec!["5xx".into()],
        backoff_base_ms: 25,
        ..Default::default()
    })
}

/// The steps a request takes through `outcomes`, each try replayable or not.
fn steps(policy: Option<&RetryRt>, tries: &[(Outcome, bool)]) -> Vec<Step> {
    let mut r = Retries::new(policy);
    tries
        .iter()
        .map(|&(o, replayable)| match r.after(o, replayable) {
            // The backoff is jittered: only its bound is fixed (tested above).
            Step::Retry(_) => Step::Retry(Duration::ZERO),
            stop => stop,
        })
        .collect()
}

const RETRY: Step = Step::Retry(Duration::ZERO);
const PASS: Step = Step::Stop { exhausted: false };
const EXHAUSTED: Step = Step::Stop { exhausted: true };

#[test]
fn retry_steps_table() {
    let two = five_xx(2);
    let none = five_xx(0);
    let r503 = Outcome::Response(503, None);
    let ok = Outcome::Response(200, None);
    type Case<'a> = (
        &'a str,
        Option<&'a RetryRt>,
        &'a [(Outcome, bool)],
        &'a [Step],
    );
    let cases: &[Case<'_>] = &[
        (
            "no policy passes the first answer on",
            None,
            &[(r503, true)],
            &[PASS],
        ),
        (
            "a success stops at once",
            Some(&two),
            &[(ok, true)],
            &[PASS],
        ),
        (
            "a 503 then a success",
            Some(&two),
            &[(r503, true), (ok, true)],
            &[RETRY, PASS],
        ),
        (
            "attempts run out: the last answer, flagged",
            Some(&two),
            &[(r503, true), (r503, true), (r503, true)],
            &[RETRY, RETRY, EXHAUSTED],
        ),
        (
            "zero attempts: never retried, never URX",
            Some(&none),
            &[(r503, true)],
            &[PASS],
        ),
        (
            "a spent streamed body stops the first try",
            Some(&two),
            &[(r503, false)],
            &[PASS],
        ),
        (
            "a body spent after a retry: URX",
            Some(&two),
            &[(r503, true), (r503, false)],
            &[RETRY, EXHAUSTED],
        ),
        (
            "a non-retriable failure ends a retried request without URX",
            Some(&two),
            &[(r503, true), (Outcome::Response(404, None), true)],
            &[RETRY, PASS],
        ),
        (
            "resets and timeouts count as 5xx",
            Some(&two),
            &[
                (Outcome::Reset, true),
                (Outcome::Timeout, true),
                (Outcome::Reset, true),
            ],
            &[RETRY, RETRY, EXHAUSTED],
        ),
    ];
    for (name, policy, tries, want) in cases {
        assert_eq!(&steps(*policy, tries), want, "{name}");
    }
}

#[test]
fn the_previous_host_and_priority_rules() {
    let mut policy = five_xx(3);
    policy.previous_hosts = true;
    policy.remote_localities = true;
    let mut r = Retries::new(Some(&policy));
    assert!(r.avoid_previous(false));
    assert!(
        !r.avoid_previous(true),
        "a hashed request stays on its endpoint"
    );
    assert!(
        !r.next_priority(),
        "the first try starts at the top priority"
    );
    assert!(matches!(r.after(Outcome::Reset, true), Step::Retry(_)));
    assert!(r.next_priority());
    assert_eq!(r.done, 1);
    assert!(!Retries::new(None).avoid_previous(false));
}
