//! The failure-rate breaker (meshfast extension) through real sockets: of
//! three endpoints one fails every other request; its breaker opens, success
//! stays ≥ 99% while it is open (only half-open probes reach it), and when
//! the endpoint recovers the breaker goes half-open, closes, and traffic
//! comes back to it. Real time with short τ and cool-downs: the assertions
//! are on states and counts, bounded by [`DEADLINE`], never on how fast the
//! machine is.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshfast_proxy::ir;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Instant;
use support::*;

/// An upstream answering 503 to every other request while `failing`, else 200.
struct Flaky {
    address: String,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

fn flaky(h: &Harness) -> Flaky {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let address = std_listener.local_addr().expect("addr").to_string();
    let failing = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let (f, n) = (failing.clone(), hits.clone());
    h.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (f, n) = (f.clone(), n.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let hit = n.fetch_add(1, SeqCst);
                    let status = if f.load(SeqCst) && hit % 2 == 0 {
                        503
                    } else {
                        200
                    };
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("x-echo-name", "flaky")
                                .body(Full::new(Bytes::from_static(b"flaky")))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Flaky {
        address,
        failing,
        hits,
    }
}

/// The breaker state of `address` in cluster `c` of `/clusters`.
fn breaker_state(h: &Harness, address: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&h.proxy.runtime().clusters_json()).expect("clusters JSON");
    let c = &json["clusters"][0];
    assert_eq!(c["name"], "c");
    let e = c["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["address"] == address)
        .expect("the endpoint");
    e["breaker"]["state"]
        .as_str()
        .expect("breaker state")
        .to_owned()
}

#[test]
fn a_half_failing_endpoint_is_cut_off_then_comes_back_after_it_recovers() {
    let h = Harness::new(2);
    let good1 = echo("good1", 200);
    let good2 = echo("good2", 200);
    let bad = flaky(&h);
    let (a1, a2) = (good1.address().to_string(), good2.address().to_string());
    let mut c = cluster("c", &[&a1, &a2, &bad.address]);
    c.failure_rate = Some(ir::FailureRateBreaker {
        threshold: 0.25,
        tau_ms: 200,
        min_requests: 5,
        cool_down_ms: 100,
        max_cool_down_ms: 1_000,
        probes: 3,
    });
    h.apply(&single_route(
        ir::RouteAction {
            clusters: to("c"),
            ..Default::default()
        },
        vec![c],
    ));
    let deadline = Instant::now() + DEADLINE;

    // Round robin gives the flaky endpoint a third of the requests, half of
    // which fail: its rate climbs towards 1/2 and crosses 1/4.
    let mut before = 0;
    while breaker_state(&h, &bad.address) != "OPEN" {
        assert!(Instant::now() < deadline, "never opened");
        let s = h.get("svc", "/").status.as_u16();
        assert!(s == 200 || s == 503, "unexpected {s}");
        before += 1;
    }
    assert_eq!(breaker_state(&h, &a1), "CLOSED");

    // Open: only probes (bounded, after growing cool-downs) reach it.
    let (total, mut ok) = (1_000, 0);
    let hits = bad.hits.load(SeqCst);
    for _ in 0..total {
        let r = h.get("svc", "/");
        match r.status.as_u16() {
            200 => ok += 1,
            503 => assert_eq!(r.upstream(), "flaky"),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let probes = bad.hits.load(SeqCst) - hits;
    eprintln!(
        "opened after {before} requests; then {ok}/{total} succeeded, {probes} reached the flaky endpoint"
    );
    assert!(ok * 100 >= total * 99, "{ok}/{total} succeeded once open");

    // A probe may be out now; still failing, it reopens soon.
    while breaker_state(&h, &bad.address) != "OPEN" {
        assert!(Instant::now() < deadline, "never reopened");
        h.get("svc", "/");
    }

    // Recovered: after its cool-down the probes succeed and it closes.
    bad.failing.store(false, SeqCst);
    let mut seen = vec![breaker_state(&h, &bad.address)];
    while seen.last().map(String::as_str) != Some("CLOSED") {
        assert!(Instant::now() < deadline, "never closed: {seen:?}");
        assert_eq!(h.get("svc", "/").status.as_u16(), 200);
        let state = breaker_state(&h, &bad.address);
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
    assert_eq!(seen, ["OPEN", "HALF_OPEN", "CLOSED"]);

    // Closed: it takes its share again.
    let hits = bad.hits.load(SeqCst);
    for _ in 0..30 {
        assert_eq!(h.get("svc", "/").status.as_u16(), 200);
    }
    assert_eq!(
        bad.hits.load(SeqCst) - hits,
        10,
        "round robin, a third each"
    );
    assert_eq!(breaker_state(&h, &bad.address), "CLOSED");
}
