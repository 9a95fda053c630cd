//! Connection-pool limits (Istio `connectionPool`, Envoy's cluster circuit
//! breakers) through real sockets: past a limit a request gets 503 `UO` at
//! once — while the requests under the limit are still held by a gated
//! upstream, which proves nothing waited — and Envoy's overflow counters.

mod support;

use meshfast_proxy::ir;
use support::*;
use tokio::sync::mpsc;

const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow\n";

fn limited(
    address: &str,
    protocol: ir::UpstreamProtocol,
    limits: ir::ConnectionLimits,
) -> ir::Cluster {
    ir::Cluster {
        protocol,
        limits: Some(limits),
        ..cluster("c", &[address])
    }
}

fn all_to_c(c: ir::Cluster, retry: Option<ir::RetryPolicy>) -> ir::Snapshot {
    single_route(
        ir::RouteAction {
            clusters: to("c"),
            retry,
            ..Default::default()
        },
        vec![c],
    )
}

/// Sends `n` requests at once, each on its own connection; their replies
/// arrive on the returned channel as they complete.
fn send_concurrently(h: &Harness, n: usize, path: &str) -> mpsc::UnboundedReceiver<Reply> {
    let addr = h.addr(HTTP);
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..n {
        let (tx, path) = (tx.clone(), format!("{path}{i}"));
        h.spawn(async move {
            let mut c = Client::connect(addr).await;
            let _ = tx.send(c.send(get("svc", &path)).await);
        });
    }
    rx
}

fn next(h: &Harness, rx: &mut mpsc::UnboundedReceiver<Reply>) -> Reply {
    h.block_on(rx.recv()).expect("a reply")
}

fn assert_overflow(r: &Reply) {
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-meshfast-flags"), Some("UO"));
    assert_eq!(r.text(), OVERFLOW_BODY);
    assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
}

fn breakers(h: &Harness) -> serde_json::Value {
    h.stats()["clusters"]["c"]["connection_pool"].clone()
}

/// maxConnections 1 and http1MaxPendingRequests 1: with the one connection
/// busy, one more request waits for it (pending) and the rest fail at once.
///
/// Counted as Envoy counts: the waiting request found the cluster at
/// maxConnections (`upstream_cx_overflow` 1); the 18 failed requests never
/// got as far as asking for a connection — the pending limit is checked
/// first — so they are `upstream_rq_pending_overflow` (18) only.
#[test]
fn past_the_pending_limit_requests_fail_at_once_with_uo() {
    // One worker: a worker with no connection to the endpoint may open one
    // over maxConnections (Envoy's exception), so one worker keeps it exact.
    let h = Harness::new(1);
    let (mut up, gate) = h.gated_upstream("slow");
    h.apply(&all_to_c(
        limited(
            &up.address(),
            ir::UpstreamProtocol::Http1,
            ir::ConnectionLimits {
                max_connections: 1,
                max_pending_requests: 1,
                ..Default::default()
            },
        ),
        None,
    ));
    // The first request takes the one connection and is held upstream.
    let mut first = send_concurrently(&h, 1, "/first");
    assert_eq!(up.next_request(&h).path, "/first0");

    let mut rest = send_concurrently(&h, 19, "/rest");
    // 18 fail while the gate is still closed: nothing queued them.
    for _ in 0..18 {
        assert_overflow(&next(&h, &mut rest));
    }
    assert_eq!(up.hits(), 1, "only the first request reached the upstream");
    assert!(up.received().is_empty());
    assert_eq!(h.cluster_stat("c", "upstream_rq_pending_overflow"), 18);
    assert_eq!(h.cluster_stat("c", "upstream_cx_overflow"), 1);
    assert_eq!(h.cluster_stat("c", "upstream_rq_active_overflow"), 0);
    assert_eq!(h.cluster_flag("c", "UO"), 18);
    let b = breakers(&h);
    assert_eq!(b["connections"], 1, "{b}");
    assert_eq!(b["pending"], 1, "{b}");

    // The gate opens: the first answer frees the connection for the pending one.
    gate.add_permits(2);
    let r = next(&h, &mut first);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = next(&h, &mut rest);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-meshfast-flags"), None);
    assert_eq!(up.hits(), 2);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(h.cluster_stat("c", "upstream_rq_pending_overflow"), 18);
    let b = breakers(&h);
    assert_eq!(b["pending"], 0, "{b}");

    // Prometheus has the counters too.
    let prom = h.proxy.stats().render_prometheus();
    assert!(
        prom.contains("meshfast_cluster_upstream_rq_pending_overflow_total{cluster=\"c\"} 18"),
        "{prom}"
    );
    assert!(prom.contains("meshfast_cluster_upstream_cx_overflow_total{cluster=\"c\"} 1"));
    assert!(prom.contains("meshfast_cluster_response_flags_total{cluster=\"c\",flag=\"UO\"} 18"));
}

/// http2MaxRequests 2 over an HTTP/2 upstream, across two workers: two
/// requests in flight, the third and later fail at once; once they finish,
/// requests pass again. Counted as Envoy 1.40 counts it:
/// `upstream_rq_active_overflow` (older Envoys counted these as pending
/// overflow).
#[test]
fn past_max_requests_in_flight_requests_fail_at_once_with_uo() {
    let h = Harness::new(2);
    let (mut up, gate) = h.gated_upstream("slow");
    h.apply(&all_to_c(
        limited(
            &up.address(),
            ir::UpstreamProtocol::Http2,
            ir::ConnectionLimits {
                max_requests: 2,
                ..Default::default()
            },
        ),
        None,
    ));
    let mut held = send_concurrently(&h, 2, "/held");
    let seen = [up.next_request(&h), up.next_request(&h)];
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_2));

    let mut over = send_concurrently(&h, 3, "/over");
    for _ in 0..3 {
        assert_overflow(&next(&h, &mut over));
    }
    assert_eq!(up.hits(), 2);
    assert_eq!(h.cluster_stat("c", "upstream_rq_active_overflow"), 3);
    assert_eq!(h.cluster_stat("c", "upstream_rq_pending_overflow"), 0);
    assert_eq!(breakers(&h)["requests"], 2);

    gate.add_permits(2);
    for _ in 0..2 {
        assert_eq!(next(&h, &mut held).status, 200);
    }
    h.eventually("the requests' slots are given back", || {
        breakers(&h)["requests"] == 0
    });
    gate.add_permits(1);
    let r = h.get("svc", "/after");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.cluster_stat("c", "upstream_rq_active_overflow"), 3);
}

fn tcp_snapshot(upstream: &str) -> ir::Snapshot {
    ir::Snapshot {
        version: 1,
        listeners: vec![ir::Listener {
            name: "tcp".into(),
            address: "127.0.0.1:0".into(),
            protocol: ir::ListenerProtocol::Tcp,
            tcp_routes: vec![ir::TcpRoute {
                name: "to-echo".into(),
                clusters: to("c"),
            }],
            ..Default::default()
        }],
        clusters: vec![ir::Cluster {
            protocol: ir::UpstreamProtocol::Tcp,
            ..cluster("c", &[upstream])
        }],
        ..Default::default()
    }
}

fn retry_5xx(attempts: u32) -> Option<ir::RetryPolicy> {
    Some(ir::RetryPolicy {
        attempts,
        retry_on: vec!["5xx".to_owned()],
        ..Default::default()
    })
}

/// maxRetries 0: a retry the policy asks for is not made; the answer is
/// passed on with `UO`, and `upstream_rq_retry_overflow` counts it.
#[test]
fn past_max_retries_the_retry_is_not_made() {
    let h = Harness::new(2);
    let failing = h.upstream("failing", 503);
    h.apply(&all_to_c(
        limited(
            &failing.address(),
            ir::UpstreamProtocol::Http1,
            ir::ConnectionLimits {
                max_retries: 0,
                ..Default::default()
            },
        ),
        retry_5xx(3),
    ));
    let r = h.get("svc", "/x");
    assert_eq!(r.status, 503);
    assert_eq!(r.upstream(), "failing", "the upstream's own answer");
    assert_eq!(r.header("x-meshfast-flags"), Some("UO"));
    assert_eq!(r.header("x-envoy-overloaded"), None, "not a local reply");
    assert_eq!(failing.hits(), 1, "no retry was made");
    assert_eq!(h.cluster_stat("c", "upstream_rq_retry_overflow"), 1);
    assert_eq!(h.cluster_stat("c", "upstream_rq_pending_overflow"), 0);
    assert_eq!(h.cluster_stat("c", "upstream_rq_active_overflow"), 0);
}

/// maxRetries 1: one retry at a time is allowed, and its slot comes back
/// once its outcome is known, so each request gets its retries in turn.
#[test]
fn retries_under_max_retries_are_made_and_given_back() {
    let h = Harness::new(2);
    let failing = h.upstream("failing", 503);
    h.apply(&all_to_c(
        limited(
            &failing.address(),
            ir::UpstreamProtocol::Http1,
            ir::ConnectionLimits {
                max_retries: 1,
                ..Default::default()
            },
        ),
        retry_5xx(2),
    ));
    for i in 0..3 {
        let r = h.get("svc", &format!("/{i}"));
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-meshfast-flags"), Some("URX"));
    }
    assert_eq!(
        failing.hits(),
        9,
        "each request: a first try and two retries"
    );
    assert_eq!(h.cluster_stat("c", "upstream_rq_retry_overflow"), 0);
    assert_eq!(breakers(&h)["retries"], 0);
}

/// TCP: maxConnections holds for proxied connections; past it a connection
/// is closed at once (`UO`, `upstream_cx_overflow`).
#[test]
fn tcp_connections_past_max_connections_are_closed() {
    let h = Harness::new(2);
    let echo = h.tcp_echo();
    let mut snap = tcp_snapshot(&echo.address());
    snap.clusters[0].limits = Some(ir::ConnectionLimits {
        max_connections: 1,
        ..Default::default()
    });
    h.apply(&snap);
    let addr = h.addr("tcp");
    h.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The first connection is open (its bytes came back through it).
        let mut open = tokio::net::TcpStream::connect(addr).await.expect("connect");
        open.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.expect("echoed");
        assert_eq!(&buf, b"ping");
        // The second is closed without reaching the upstream.
        let back = until_closed(addr, b"pong", false).await;
        assert!(back.is_empty(), "{back:?}");
        // Still serving the first.
        open.write_all(b"ping").await.expect("write");
        open.read_exact(&mut buf).await.expect("echoed");
    });
    assert_eq!(
        echo.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(h.cluster_stat("c", "upstream_cx_overflow"), 1);
    assert_eq!(h.cluster_flag("c", "UO"), 1);
}

/// The gauges live with the cluster's counters, not the snapshot: requests in
/// flight under v1 still count under v2, and a limit v2 raises applies at once.
#[test]
fn requests_in_flight_stay_counted_across_a_config_swap() {
    let h = Harness::new(1);
    let (mut up, gate) = h.gated_upstream("slow");
    let address = up.address();
    let snap = |version: u64, max_requests: u32| ir::Snapshot {
        version,
        ..all_to_c(
            limited(
                &address,
                ir::UpstreamProtocol::Http1,
                ir::ConnectionLimits {
                    max_requests,
                    ..Default::default()
                },
            ),
            None,
        )
    };
    h.apply(&snap(1, 1));
    let mut held = send_concurrently(&h, 1, "/held");
    assert_eq!(up.next_request(&h).path, "/held0");

    h.apply(&snap(2, 1));
    assert_overflow(&h.get("svc", "/same-limit"));
    assert_eq!(breakers(&h)["requests"], 1);

    h.apply(&snap(3, 2));
    let mut second = send_concurrently(&h, 1, "/raised");
    assert_eq!(up.next_request(&h).path, "/raised0");
    assert_overflow(&h.get("svc", "/over"));

    gate.add_permits(2);
    assert_eq!(next(&h, &mut held).status, 200);
    assert_eq!(next(&h, &mut second).status, 200);
    h.eventually("the slots given back", || breakers(&h)["requests"] == 0);
    assert_eq!(h.cluster_stat("c", "upstream_rq_active_overflow"), 2);
}

/// maxConnections 1 with an HTTP/2 upstream: requests that find the one
/// connection still opening wait for it (pending), then all share it. (How
/// many of them waited depends on when the connection came up — usually 7 —
/// so only the outcome is asserted.)
#[test]
fn http2_requests_at_max_connections_share_the_one_connection() {
    let h = Harness::new(1);
    let (mut up, gate) = h.gated_upstream("slow");
    h.apply(&all_to_c(
        limited(
            &up.address(),
            ir::UpstreamProtocol::Http2,
            ir::ConnectionLimits {
                max_connections: 1,
                ..Default::default()
            },
        ),
        None,
    ));
    let mut replies = send_concurrently(&h, 8, "/shared");
    for _ in 0..8 {
        assert_eq!(up.next_request(&h).version, http::Version::HTTP_2);
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(breakers(&h)["connections"], 1);
    assert_eq!(breakers(&h)["pending"], 0);
    gate.add_permits(8);
    for _ in 0..8 {
        assert_eq!(next(&h, &mut replies).status, 200);
    }
    assert_eq!(h.cluster_flag("c", "UO"), 0);
}
