//! Passive health (outlier detection) through real sockets: consecutive 5xx
//! eject an endpoint, `/clusters` shows it, and traffic avoids it. Ejections
//! last 300 s, so nothing here depends on how fast the test runs.

mod support;

use meshfast_proxy::ir;
use support::*;

fn outlier(consecutive_5xx: u32) -> Option<ir::OutlierDetection> {
    Some(ir::OutlierDetection {
        consecutive_5xx,
        interval_ms: 10_000,
        base_ejection_ms: 300_000,
        max_ejection_percent: 50,
        ..Default::default()
    })
}

fn plain(cluster: &str) -> ir::RouteAction {
    ir::RouteAction {
        clusters: to(cluster),
        ..Default::default()
    }
}

#[test]
fn consecutive_5xx_eject_the_failing_endpoint_and_traffic_moves_on() {
    let h = Harness::new(2);
    let bad = echo("bad", 503);
    let good = echo("good", 200);
    let (bad_addr, good_addr) = (bad.address().to_string(), good.address().to_string());
    let mut c = cluster("c", &[&bad_addr, &good_addr]);
    c.outlier = outlier(3);
    h.apply(&single_route(plain("c"), vec![c]));

    // Round robin alternates, so the bad endpoint's third 5xx comes within six
    // requests; the bound only stops a broken balancer from looping forever.
    let mut failures = 0;
    for _ in 0..40 {
        let r = h.get("svc", "/");
        match r.status.as_u16() {
            200 => assert_eq!(r.upstream(), "good"),
            503 => {
                assert_eq!(r.upstream(), "bad");
                failures += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
        if failures == 3 {
            break;
        }
    }
    assert_eq!(failures, 3, "the bad endpoint was not tried three times");
    assert_eq!(
        h.health("c"),
        vec![
            (bad_addr.clone(), "EJECTED".to_owned()),
            (good_addr.clone(), "HEALTHY".to_owned())
        ]
    );
    assert_eq!(h.cluster_stat("c", "ejections_total"), 1);

    // Ejected: every later request goes to the healthy endpoint.
    for i in 0..20 {
        let r = h.get("svc", "/");
        assert_eq!(r.status, 200, "request {i} after ejection: {}", r.text());
        assert_eq!(r.upstream(), "good");
    }
    assert_eq!(h.cluster_stat("c", "rq_5xx"), 3);
}

#[test]
fn a_success_resets_the_failure_streak() {
    let h = Harness::new(1);
    let e = echo("only", 200);
    let addr = e.address().to_string();
    let mut c = cluster("c", &[&addr]);
    c.outlier = outlier(3);
    h.apply(&single_route(plain("c"), vec![c]));
    let fail = || request("GET", "svc", "/", &[("x-echo-status", "503")], "");

    for _ in 0..2 {
        assert_eq!(h.send(HTTP, fail()).status, 503);
    }
    assert_eq!(h.get("svc", "/").status, 200);
    for _ in 0..2 {
        assert_eq!(h.send(HTTP, fail()).status, 503);
    }
    assert_eq!(h.health("c"), vec![(addr.clone(), "HEALTHY".to_owned())]);

    // The third in a row ejects; with no endpoint left the proxy answers itself.
    assert_eq!(h.send(HTTP, fail()).status, 503);
    assert_eq!(h.health("c"), vec![(addr, "EJECTED".to_owned())]);
    let r = h.get("svc", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-meshfast-flags"), Some("UH"));
    assert_eq!(r.text(), "no healthy upstream\n");
}

#[test]
fn ejection_survives_a_config_swap() {
    let h = Harness::new(1);
    let bad = echo("bad", 503);
    let good = echo("good", 200);
    let (bad_addr, good_addr) = (bad.address().to_string(), good.address().to_string());
    let snap = |version| {
        let mut c = cluster("c", &[&bad_addr, &good_addr]);
        c.outlier = outlier(1);
        let mut s = single_route(plain("c"), vec![c]);
        s.version = version;
        s
    };
    h.apply(&snap(1));
    // One 5xx ejects; round robin reaches the bad endpoint within two requests.
    let statuses: Vec<u16> = (0..2).map(|_| h.get("svc", "/").status.as_u16()).collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    h.apply(&snap(2));
    assert_eq!(h.health("c")[0], (bad_addr.clone(), "EJECTED".to_owned()));
    for _ in 0..6 {
        assert_eq!(h.get("svc", "/").upstream(), "good");
    }
}
