//! A failure the client caused is the client's: a malformed chunked body is a
//! 400 (`DPE`) and an upload the client cuts short is `DC`; neither counts
//! against the endpoint, so no client can eject a healthy one.

mod support;

use meshfast_proxy::ir;
use std::net::SocketAddr;
use support::*;
use tokio::io::AsyncWriteExt;

/// One endpoint, ejected after three consecutive failures (for 300 s).
fn strict(h: &Harness, up: &Upstream) {
    let mut c = cluster("c", &[&up.address()]);
    c.outlier = Some(ir::OutlierDetection {
        consecutive_5xx: 3,
        consecutive_gateway: 3,
        interval_ms: 10_000,
        base_ejection_ms: 300_000,
        max_ejection_percent: 100,
        ..Default::default()
    });
    h.apply(&single_route(
        ir::RouteAction {
            clusters: to("c"),
            retry: Some(ir::RetryPolicy {
                attempts: 2,
                retry_on: vec!["5xx".into(), "reset".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
        vec![c],
    ));
}

/// Sends `raw` and reads what comes back until the proxy closes; with
/// `close_after`, closes at once instead (a client that went away).
async fn exchange(addr: SocketAddr, raw: &[u8], close_after: bool) -> String {
    if close_after {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(raw).await.expect("write");
        return String::new();
    }
    String::from_utf8_lossy(&until_closed(addr, raw, false).await).into_owned()
}

#[test]
fn malformed_chunked_bodies_are_400_and_never_eject_the_endpoint() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    strict(&h, &up);
    let addr = h.addr(HTTP);
    let raw = b"POST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nbroken\r\n0\r\n\r\n";
    for i in 0..6 {
        let reply = h.block_on(exchange(addr, raw, false));
        let status = reply.lines().next().unwrap_or_default().to_owned();
        assert!(status.starts_with("HTTP/1.1 400"), "request {i}: {status}");
        assert!(
            reply.to_ascii_lowercase().contains("x-meshfast-flags: dpe"),
            "{reply}"
        );
    }
    assert_eq!(h.health("c")[0].1, "HEALTHY");
    let r = h.get("svc", "/after");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.cluster_flag("c", "UC"), 0);
}

#[test]
fn uploads_the_client_cuts_short_never_eject_the_endpoint() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    strict(&h, &up);
    let addr = h.addr(HTTP);
    let raw =
        b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: 100000\r\n\r\nonly a few bytes";
    for _ in 0..6 {
        h.block_on(exchange(addr, raw, true));
    }
    // Each cut-short upload ends as DC once the proxy sees the client gone.
    h.eventually("six DC", || {
        h.listener_stat(HTTP, "rq_active") == 0
            && h.stats()["listeners"][HTTP]["response_flags"]["DC"].as_u64() == Some(6)
    });
    assert_eq!(h.health("c")[0].1, "HEALTHY");
    assert_eq!(h.get("svc", "/after").status, 200);
    assert_eq!(h.cluster_flag("c", "UC"), 0);
}

/// Sends `head` and the first part of a body, then, after `pause` (a real
/// wait: the point is a client slower than the timeouts), the rest — or
/// nothing, when `rest` is None — and reads the answer's status line.
async fn slow_upload(addr: SocketAddr, first: &[u8], pause: u64, rest: Option<&[u8]>) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(first).await.expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
    if let Some(rest) = rest {
        s.write_all(rest).await.expect("write");
    }
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
            if n == 0 || reply.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The cluster of `strict`, ejected at the first failure, behind a route
/// with `timeout_ms` and a per-try timeout (retries on resets only).
fn hair_trigger(up: &Upstream, timeout_ms: u64, per_try_timeout_ms: u64) -> ir::Snapshot {
    let mut c = cluster("c", &[&up.address()]);
    c.outlier = Some(ir::OutlierDetection {
        consecutive_5xx: 1,
        consecutive_gateway: 1,
        interval_ms: 10_000,
        base_ejection_ms: 300_000,
        max_ejection_percent: 100,
        ..Default::default()
    });
    single_route(
        ir::RouteAction {
            clusters: to("c"),
            timeout_ms,
            retry: Some(ir::RetryPolicy {
                attempts: 1,
                per_try_timeout_ms,
                retry_on: vec!["reset".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
        vec![c],
    )
}

const SLOW_UPLOAD: &[u8] = b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: 10\r\n\r\nhello";

#[test]
fn the_upstream_timeouts_start_when_the_client_body_is_in() {
    // Envoy's route and per-try timeouts start once the downstream request is
    // complete: a client slower than them is not an upstream timing out, and
    // never counts against the endpoint.
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&hair_trigger(&up, 300, 200));
    let addr = h.addr(HTTP);
    let status = h.block_on(slow_upload(addr, SLOW_UPLOAD, 1_000, Some(b"world")));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(h.health("c")[0].1, "HEALTHY");
    assert_eq!(h.cluster_flag("c", "UT"), 0);
}

#[test]
fn a_client_that_stalls_its_body_gets_408_si_and_the_endpoint_stays_healthy() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    // No route timeout: only the stream idle timeout can end it.
    let mut snap = hair_trigger(&up, 0, 0);
    snap.downstream.stream_idle_timeout_ms = 200;
    h.apply(&snap);
    let addr = h.addr(HTTP);
    // The body never finishes; the wait is only a bound on the test.
    let status = h.block_on(slow_upload(addr, SLOW_UPLOAD, 0, None));
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    h.eventually("request over", || h.listener_stat(HTTP, "rq_active") == 0);
    assert_eq!(h.stats()["listeners"][HTTP]["response_flags"]["SI"], 1);
    assert_eq!(h.health("c")[0].1, "HEALTHY");
    assert_eq!(h.get("svc", "/after").status, 200);
}

#[test]
fn forbidden_trailers_are_400_close_the_connection_and_never_eject_the_endpoint() {
    // RFC 9110 §6.5.1: a trailer may not reframe (Content-Length,
    // Transfer-Encoding) or reroute (Host) the message it ends.
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    strict(&h, &up);
    let addr = h.addr(HTTP);
    for trailer in [
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "Host: evil",
    ] {
        let raw = format!(
            "POST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n{trailer}\r\n\r\nGET /probe HTTP/1.1\r\nHost: svc\r\n\r\n"
        );
        let reply = h.block_on(exchange(addr, raw.as_bytes(), false));
        assert!(reply.starts_with("HTTP/1.1 400"), "{trailer}: {reply}");
        assert!(
            reply.to_ascii_lowercase().contains("x-meshfast-flags: dpe"),
            "{reply}"
        );
        assert_eq!(
            reply.matches("HTTP/1.1 ").count(),
            1,
            "{trailer}: the pipelined request was answered: {reply}"
        );
    }
    assert_eq!(h.health("c")[0].1, "HEALTHY");
    assert_eq!(h.get("svc", "/after").status, 200);
}
