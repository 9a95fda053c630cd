//! Upstream connection pools and protocols: HTTP/1.1 keep-alive reuse, h2c
//! upstreams multiplexed on one connection, h2c downstreams.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshfast_proxy::ir;
use support::*;

fn plain(cluster: &str) -> ir::RouteAction {
    ir::RouteAction {
        clusters: to(cluster),
        ..Default::default()
    }
}

#[test]
fn sequential_keep_alive_requests_share_one_upstream_connection() {
    let h = Harness::new(2);
    let up = h.upstream("up", 200);
    h.apply(&single_route(
        plain("c"),
        vec![cluster("c", &[&up.address()])],
    ));
    let addr = h.addr(HTTP);
    h.block_on(async {
        let mut c = Client::connect(addr).await;
        for i in 0..10 {
            let r = c.send(get("svc", &format!("/{i}"))).await;
            assert_eq!(r.status, 200);
        }
    });
    assert_eq!(up.hits(), 10);
    assert_eq!(h.cluster_stat("c", "cx_total"), 1, "pool misses");
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(h.listener_stat(HTTP, "cx_total"), 1);
}

#[test]
fn a_workers_pool_serves_successive_downstream_connections() {
    // One worker: every downstream connection lands on the same pool.
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&single_route(
        plain("c"),
        vec![cluster("c", &[&up.address()])],
    ));
    for _ in 0..5 {
        assert_eq!(h.get("svc", "/").status, 200);
    }
    assert_eq!(h.listener_stat(HTTP, "cx_total"), 5);
    assert_eq!(h.cluster_stat("c", "cx_total"), 1);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn bodies_larger_than_one_frame_stream_through_and_are_counted() {
    let h = Harness::new(1);
    let e = echo("e", 200);
    h.apply(&single_route(
        plain("c"),
        vec![cluster("c", &[&e.address().to_string()])],
    ));
    let addr = h.addr(HTTP);
    let size = 300_000usize;
    let upload = vec![b'u'; 150_000];
    h.block_on(async {
        let mut c = Client::connect(addr).await;
        // The echo streams `x-echo-body-bytes` bytes back.
        let r = c
            .send(request(
                "GET",
                "svc",
                "/big",
                &[("x-echo-body-bytes", &size.to_string())],
                "",
            ))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), size);
        // And counts what it received.
        let r = c
            .send(request("POST", "svc", "/up", &[], upload.clone()))
            .await;
        assert_eq!(r.echo_json()["body_bytes"], upload.len());
    });
    assert_eq!(h.cluster_stat("c", "cx_total"), 1);
    assert_eq!(h.cluster_stat("c", "bytes_in"), upload.len() as u64);
    assert!(h.cluster_stat("c", "bytes_out") >= size as u64);
    assert_eq!(h.listener_stat(HTTP, "bytes_in"), upload.len() as u64);
}

#[test]
fn http2_upstream_speaks_h2c_and_multiplexes_one_connection() {
    let h = Harness::new(1);
    let e = echo("h2", 200);
    let mut c = cluster("c", &[&e.address().to_string()]);
    c.protocol = ir::UpstreamProtocol::Http2;
    h.apply(&single_route(plain("c"), vec![c]));

    let r = h.get("svc.example", "/first");
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.echo_json();
    assert_eq!(json["protocol"], "HTTP/2.0");
    // HTTP/2 carries the host as :authority.
    assert_eq!(json["authority"], "svc.example");
    assert_eq!(json["path"], "/first");
    assert_eq!(h.cluster_stat("c", "cx_total"), 1);

    // Concurrent requests from separate downstream connections share it.
    let addr = h.addr(HTTP);
    h.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                tokio::spawn(async move {
                    let mut c = Client::connect(addr).await;
                    c.send(get("svc.example", &format!("/{i}"))).await
                })
            })
            .collect();
        for t in tasks {
            let r = t.await.expect("client task");
            assert_eq!(r.status, 200);
            assert_eq!(r.echo_json()["protocol"], "HTTP/2.0");
        }
    });
    assert_eq!(
        h.cluster_stat("c", "cx_total"),
        1,
        "one multiplexed connection"
    );
    assert_eq!(h.cluster_stat("c", "rq_2xx"), 9);
}

#[test]
fn h2c_downstream_is_proxied_to_an_http1_upstream() {
    let h = Harness::new(1);
    let e = echo("h1", 200);
    h.apply(&single_route(
        plain("c"),
        vec![cluster("c", &[&e.address().to_string()])],
    ));
    let addr = h.addr(HTTP);
    h.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2c handshake");
        tokio::spawn(conn);
        for i in 0..3 {
            let req = http::Request::builder()
                .uri(format!("http://svc.example/h2/{i}"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = sender.send_request(req).await.expect("response");
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(json["protocol"], "HTTP/1.1");
            assert_eq!(json["path"], format!("/h2/{i}"));
            assert_eq!(json["authority"], "svc.example");
        }
    });
    assert_eq!(h.cluster_stat("c", "cx_total"), 1);
}

#[test]
fn connections_the_upstream_closes_are_not_reused() {
    let h = Harness::new(1);
    let up = h.closing_upstream("closing");
    h.apply(&single_route(
        plain("c"),
        vec![cluster("c", &[&up.address()])],
    ));
    let addr = h.addr(HTTP);
    h.block_on(async {
        let mut c = Client::connect(addr).await;
        for i in 0..5 {
            let r = c.send(get("svc", &format!("/{i}"))).await;
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            assert_eq!(r.upstream(), "closing");
            // Connection: close is hop-by-hop: the downstream connection stays open.
            assert_eq!(r.header("connection"), None);
        }
    });
    assert_eq!(up.hits(), 5);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 5);
    assert_eq!(h.cluster_stat("c", "cx_total"), 5);
}
