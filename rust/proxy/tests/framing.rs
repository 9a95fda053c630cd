//! HTTP/1.1 framing edges through raw sockets (RFC 9112/9110): what cannot be
//! passed on faithfully is refused before it reaches any upstream.

mod support;

use std::net::SocketAddr;
use support::*;

/// The status line of the answer to `raw`.
async fn answer(addr: SocketAddr, raw: &[u8]) -> String {
    raw_status(addr, raw, false).await
}

fn setup(h: &Harness) -> Upstream {
    let up = h.upstream("up", 200);
    h.apply(&to_upstream(&up));
    up
}

#[test]
fn host_must_be_one_valid_authority() {
    let h = Harness::new(1);
    let up = setup(&h);
    let addr = h.addr(HTTP);
    let heads: [&[u8]; 8] = [
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:80:80\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:abc\r\nConnection: close\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    for raw in heads {
        let status = h.block_on(answer(addr, raw));
        assert!(
            status.starts_with("HTTP/1.1 400"),
            "{:?}: {status}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(up.hits(), 0);
    let ok = h.block_on(answer(
        addr,
        b"GET / HTTP/1.1\r\nHost: a:80\r\nConnection: close\r\n\r\n",
    ));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn transfer_codings_other_than_a_lone_chunked_are_not_implemented() {
    let h = Harness::new(1);
    let up = setup(&h);
    let addr = h.addr(HTTP);
    for te in ["gzip, chunked", "deflate,chunked"] {
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let status = h.block_on(answer(addr, raw.as_bytes()));
        // hyper refuses codings not ending in chunked itself (400); ours are 501.
        assert!(
            status.starts_with("HTTP/1.1 501") || status.starts_with("HTTP/1.1 400"),
            "{te}: {status}"
        );
    }
    assert_eq!(up.hits(), 0);
    let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert!(h
        .block_on(answer(addr, chunked))
        .starts_with("HTTP/1.1 200"));
}

#[test]
fn connect_is_refused_and_never_rewritten() {
    let h = Harness::new(1);
    let up = setup(&h);
    let addr = h.addr(HTTP);
    let status = h.block_on(answer(
        addr,
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ));
    assert!(status.starts_with("HTTP/1.1 501"), "{status}");
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let h = Harness::new(1);
    let up = setup(&h);
    let addr = h.addr(HTTP);
    for _ in 0..20 {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
        let status = h.block_on(raw_status(addr, raw, true));
        assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    }
    assert_eq!(up.hits(), 20);
}
