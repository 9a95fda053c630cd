//! HTTP/1.1 request heads built from hostile pieces (dot segments, escapes,
//! CTLs, bare LFs, duplicate and conflicting framing headers, odd versions)
//! sent raw to a real proxy: every one gets a status line or a closed
//! connection, the proxy keeps serving, and what reaches the upstream is
//! always a request meshfast could vouch for (normalized path, one Host, no
//! flags header of the client's). A bounded property run: part of CI.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::net::SocketAddr;
use support::*;

fn piece(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(options).prop_map(str::to_owned)
}

fn target() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        4 => "[a-z0-9~_-]{1,4}",
        3 => piece(&["..", ".", "%2e%2e", "%2E", "%2f", "%5c", "%61dmin", "admin", ""]),
        1 => piece(&["%00", "%", "%zz", "\\"]),
    ];
    (
        prop::collection::vec(seg, 0..6),
        proptest::option::of("[a-z0-9=&%./]{0,8}"),
        prop_oneof![8 => Just("/".to_owned()), 1 => Just("//".to_owned()), 1 => Just("http://svc/".to_owned()), 1 => Just("*".to_owned())],
    )
        .prop_map(|(segs, query, start)| {
            let mut t = format!("{start}{}", segs.join("/"));
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            t
        })
}

/// Extra headers: mostly well-formed, sometimes conflicting or hostile.
fn header() -> impl Strategy<Value = String> {
    let plain = (
        piece(&[
            "X-A",
            "Accept",
            "x-meshfast-flags",
            "x-envoy-original-dst-host",
            "Upgrade",
        ]),
        prop_oneof![
            piece(&["1", "UH,URX", "127.0.0.1:1", "websocket"]),
            "[a-z0-9 ,=]{0,8}"
        ],
    )
        .prop_map(|(n, v)| format!("{n}: {v}\r\n"));
    let framing = piece(&[
        "Host: other\r\n",
        "Host: a b\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Content-Length: 5\r\n",
        "Content-Length: 5, 6\r\n",
        "Connection: upgrade\r\n",
        "X-A : 1\r\n",
        "X-B: a\nX-C: 1\r\n",
        "X-D: a\rb\r\n",
    ]);
    prop_oneof![4 => plain, 1 => framing]
}

fn head() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        prop_oneof![6 => piece(&["GET", "POST", "HEAD", "OPTIONS"]), 1 => piece(&["CONNECT", "PRI", "get", "G ET"])],
        target(),
        prop_oneof![8 => Just("HTTP/1.1".to_owned()), 1 => piece(&["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "http/1.1"])],
        prop::collection::vec(header(), 0..4),
        prop_oneof![Just(Vec::new()), Just(b"hello".to_vec()), Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec())],
    )
        .prop_map(|(m, t, v, hs, body)| {
            let head = format!("{m} {t} {v}\r\nHost: svc\r\n{}Connection: close\r\n\r\n", hs.concat());
            (head, body)
        })
}

/// The first line of the answer, or "" when the proxy closed without one.
async fn exchange(addr: SocketAddr, head: &[u8], body: &[u8]) -> String {
    let out = until_closed(addr, &[head, body].concat(), true).await;
    let text = String::from_utf8_lossy(&out);
    text.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn hostile_heads_are_answered_or_closed_and_never_smuggled_upstream() {
    let h = Harness::new(1);
    let up = std::cell::RefCell::new(h.upstream("up", 200));
    h.apply(&to_upstream(&up.borrow()));
    let addr = h.addr(HTTP);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&head(), |(head, body)| {
        let status = h.block_on(exchange(addr, head.as_bytes(), &body));
        prop_assert!(
            status.is_empty() || status.starts_with("HTTP/1."),
            "{status:?}"
        );
        for seen in up.borrow_mut().received() {
            prop_assert!(seen.headers.get("x-meshfast-flags").is_none());
            prop_assert!(seen.headers.get("x-envoy-original-dst-host").is_none());
            prop_assert!(seen.headers.get_all("host").iter().count() <= 1);
            let path = seen.path.split('?').next().unwrap_or_default();
            prop_assert!(
                !path.split('/').any(|s| s == ".." || s == "."),
                "{path:?} from {head:?}"
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still serving.
    assert_eq!(h.get("svc", "/after").status, 200);
}
