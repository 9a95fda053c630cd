//! Client connections under their limits: a connection that never completes
//! a request head is closed after the headers timeout (counted from accept),
//! an idle one after the idle timeout — never one with a request in flight —
//! and past the connection cap new connections are closed as accepted.
//! Timeouts here are short; every wait for a close has a 20 s deadline, and no
//! assertion depends on how fast the machine is.

mod support;

use meshfast_proxy::ir;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

fn limited(up: &Upstream, downstream: ir::Downstream) -> ir::Snapshot {
    ir::Snapshot {
        downstream,
        ..to_upstream(up)
    }
}

/// A proxy (`workers` of them) in front of one upstream, under `downstream`.
fn proxy(workers: usize, downstream: ir::Downstream) -> (Harness, Upstream, SocketAddr) {
    let h = Harness::new(workers);
    let up = h.upstream("up", 200);
    h.apply(&limited(&up, downstream));
    let addr = h.addr(HTTP);
    (h, up, addr)
}

/// Writes `sent`, then reads until the proxy closes (20 s at most).
async fn closed_after(addr: SocketAddr, sent: &[u8]) -> Vec<u8> {
    until_closed(addr, sent, false).await
}

#[test]
fn a_connection_without_a_request_head_is_closed_after_the_headers_timeout() {
    let (h, up, addr) = proxy(
        1,
        ir::Downstream {
            request_headers_timeout_ms: 100,
            ..Default::default()
        },
    );
    // Before the protocol is known (nothing, half an HTTP/2 preface): only
    // meshfast's check can close them, and counts them.
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let got = h.block_on(closed_after(addr, sent));
        assert!(got.is_empty(), "{sent:?}: {got:?}");
    }
    assert_eq!(h.listener_stat(HTTP, "cx_headers_timeout"), 2);
    // The HTTP/2 magic without the client's SETTINGS, or with a SETTINGS
    // head whose payload never comes: not yet an HTTP/2 connection (hyper
    // answers with its own SETTINGS; nothing else ends them).
    let magic = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut settings_head = magic.clone();
    settings_head.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
    for sent in [magic, settings_head] {
        h.block_on(closed_after(addr, &sent));
    }
    assert_eq!(h.listener_stat(HTTP, "cx_headers_timeout"), 4);
    // An HTTP/1.1 head begun but never finished: hyper's head timeout (the
    // same setting) races meshfast's; either way it is closed (hyper: 408).
    for sent in [&b"G"[..], b"GET / HTTP/1.1\r\nHost: svc\r\n"] {
        let got = h.block_on(closed_after(addr, sent));
        let closed = got.is_empty() || got.starts_with(b"HTTP/1.1 408");
        assert!(closed, "{sent:?}: {got:?}");
    }
    assert_eq!(up.hits(), 0);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (h, _up, addr) = proxy(
        1,
        ir::Downstream {
            idle_timeout_ms: 200,
            ..Default::default()
        },
    );
    let got = h.block_on(closed_after(addr, b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n"));
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    assert_eq!(h.listener_stat(HTTP, "cx_idle_timeout"), 1);
}

#[test]
fn a_keep_alive_connection_waits_for_its_next_request_as_long_as_configured() {
    let (h, _up, addr) = proxy(
        1,
        ir::Downstream {
            request_headers_timeout_ms: 100,
            ..Default::default()
        },
    );
    // hyper's head timeout follows the listener's setting: a keep-alive
    // connection that sends no next request is closed, not kept 30 s.
    let got = h.block_on(closed_after(addr, b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n"));
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
}

#[test]
fn a_request_in_flight_outlives_the_idle_timeout() {
    let h = Harness::new(1);
    let (up, gate) = h.gated_upstream("slow");
    h.apply(&limited(
        &up,
        ir::Downstream {
            idle_timeout_ms: 50,
            ..Default::default()
        },
    ));
    let addr = h.addr(HTTP);
    let reply = h.spawn(async move {
        let mut client = Client::connect(addr).await;
        client.send(get("svc", "/slow")).await
    });
    // Many idle periods pass while the upstream holds the answer: a slower
    // machine only makes the wait longer, never the test wrong.
    h.eventually("the request reached the upstream", || up.hits() == 1);
    std::thread::sleep(Duration::from_millis(500));
    gate.add_permits(1);
    let reply = h.block_on(reply).expect("client task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow");
}

#[test]
fn past_the_connection_cap_new_connections_are_closed_and_old_ones_serve_on() {
    let (h, _up, addr) = proxy(
        2,
        ir::Downstream {
            max_connections: 2,
            ..Default::default()
        },
    );
    let (mut a, mut b) = h.block_on(async move {
        let mut a = Client::connect(addr).await;
        let mut b = Client::connect(addr).await;
        // Answered: both are accepted and counted.
        assert_eq!(a.send(get("svc", "/a")).await.status, 200);
        assert_eq!(b.send(get("svc", "/b")).await.status, 200);
        (a, b)
    });
    let got = h.block_on(closed_after(addr, b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n"));
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(h.listener_stat(HTTP, "cx_overflow"), 1);
    h.block_on(async move {
        assert_eq!(a.send(get("svc", "/a2")).await.status, 200);
        assert_eq!(b.send(get("svc", "/b2")).await.status, 200);
    });
}

#[test]
fn an_http2_connection_without_streams_is_idle_not_late() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&limited(
        &up,
        ir::Downstream {
            request_headers_timeout_ms: 50,
            idle_timeout_ms: 300,
            ..Default::default()
        },
    ));
    let addr = h.addr(HTTP);
    // The preface and an empty SETTINGS frame, then nothing (a gRPC channel
    // waiting for its first call).
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    opening.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let frames = h.block_on(closed_after(addr, &opening));
    let mut types = Vec::new();
    let mut rest = &frames[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(
        types.contains(&7),
        "closed without GOAWAY: frame types {types:?}"
    );
    assert_eq!(h.listener_stat(HTTP, "cx_headers_timeout"), 0);
    assert_eq!(h.listener_stat(HTTP, "cx_idle_timeout"), 1);
}

#[test]
fn the_connection_count_returns_as_connections_churn() {
    let (h, _up, addr) = proxy(
        2,
        ir::Downstream {
            max_connections: 2,
            ..Default::default()
        },
    );
    // Hundreds of connections, one after another (each answered, then
    // closed): were one not uncounted, the cap of 2 would soon refuse them.
    for i in 0..300 {
        let got = h.block_on(closed_after(
            addr,
            b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
        ));
        assert!(got.starts_with(b"HTTP/1.1 200"), "connection {i}: {got:?}");
    }
    assert_eq!(h.listener_stat(HTTP, "cx_overflow"), 0);
    h.eventually("all connections closed", || {
        h.listener_stat(HTTP, "cx_active") == 0
    });
}

/// The preface and an empty SETTINGS frame, then `pings` PING frames.
fn h2_with_pings(pings: u64) -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    for i in 0..pings {
        bytes.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&i.to_be_bytes());
    }
    bytes
}

#[test]
fn a_control_frame_flood_closes_the_connection() {
    // hyper's h2 answers each PING before it reads the next frame (one answer
    // queued), but takes as many as come: past its budget (1,000 at once,
    // then 100/s) the connection is closed, whether the client reads or not.
    let (h, _up, addr) = proxy(1, ir::Downstream::default());
    let got = h.block_on(closed_after(addr, &h2_with_pings(5_000)));
    assert!(got.len() < 5_000 * 17, "every PING was answered");
    assert_eq!(h.listener_stat(HTTP, "cx_h2_flood"), 1);
    assert_eq!(h.get("svc", "/after").status, 200);
}

#[test]
fn pings_never_keep_a_connection_from_its_idle_timeout() {
    // Control frames keep nothing busy (Envoy's `idle_timeout` counts streams):
    // a client pinging within its budget is still closed when idle.
    let (h, _up, addr) = proxy(
        1,
        ir::Downstream {
            idle_timeout_ms: 300,
            ..Default::default()
        },
    );
    let closed = h.block_on(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(&h2_with_pings(1)).await.expect("write");
        // One PING every 50 ms (a real wait: the point is the pace) until closed.
        tokio::time::timeout(Duration::from_secs(15), async {
            let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
            while s.write_all(&ping).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok()
    });
    assert!(closed, "a pinging connection was never closed");
    assert_eq!(h.listener_stat(HTTP, "cx_idle_timeout"), 1);
    assert_eq!(h.listener_stat(HTTP, "cx_h2_flood"), 0);
}

#[test]
fn an_opening_that_is_neither_http1_nor_http2_is_closed_without_an_answer() {
    // h2spec 3.5/2: an invalid preface is a connection error for HTTP/2, and
    // to HTTP/1.1 these bytes are no request line: neither answers.
    let (h, up, addr) = proxy(1, ir::Downstream::default());
    for sent in [
        &b"INVALID CONNECTION PREFACE\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    ] {
        let got = h.block_on(closed_after(addr, sent));
        assert!(
            got.is_empty(),
            "{sent:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(h.listener_stat(HTTP, "cx_protocol_error"), 2);
    // A request line with a wrong version is still HTTP/1.1's to refuse.
    let got = h.block_on(closed_after(addr, b"GET / HTTP/1.2\r\nHost: svc\r\n\r\n"));
    assert!(got.starts_with(b"HTTP/1.1 "), "{got:?}");
    assert_eq!(up.hits(), 0);
    assert_eq!(h.get("svc", "/after").status, 200);
}
