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
