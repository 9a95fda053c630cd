//! Request mirroring: a copy reaches the mirror cluster, the primary answer
//! is the primary upstream's, and a broken mirror never fails the primary.

mod support;

use meshfast_proxy::ir;
use support::*;

fn mirrored(primary: &str, mirror: &str, millionths: u32) -> ir::RouteAction {
    ir::RouteAction {
        clusters: to(primary),
        mirrors: vec![ir::Mirror {
            cluster: mirror.into(),
            millionths,
        }],
        ..Default::default()
    }
}

#[test]
fn mirror_upstream_receives_a_copy_and_the_primary_answers() {
    let h = Harness::new(2);
    let primary = echo("primary", 200);
    // The mirror answers 500: that must not leak into the primary response.
    let mut shadow = h.upstream("shadow", 500);
    h.apply(&single_route(
        mirrored("main", "shadow", 1_000_000),
        vec![
            cluster("main", &[&primary.address().to_string()]),
            cluster("shadow", &[&shadow.address()]),
        ],
    ));

    for i in 0..3 {
        let body = format!("order {i}");
        let r = h.send(
            HTTP,
            request(
                "POST",
                "shop.example",
                &format!("/orders/{i}?x=1"),
                &[("x-trace", "abc")],
                body.clone(),
            ),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream(), "primary");
        assert_eq!(r.echo_json()["body_bytes"], body.len());

        let copy = shadow.next_request(&h);
        assert_eq!(copy.method, "POST");
        assert_eq!(copy.path, format!("/orders/{i}?x=1"));
        assert_eq!(copy.body, body.as_bytes());
        assert_eq!(
            copy.headers.get("x-trace").and_then(|v| v.to_str().ok()),
            Some("abc")
        );
    }
    assert_eq!(h.cluster_stat("main", "rq_2xx"), 3);
    h.eventually("the mirror's answers counted", || {
        h.cluster_stat("shadow", "rq_5xx") == 3
    });
    // The mirrored 500s are the shadow cluster's alone.
    assert_eq!(h.listener_stat(HTTP, "rq_5xx"), 0);
    assert_eq!(h.listener_stat(HTTP, "rq_2xx"), 3);
}

#[test]
fn mirror_to_a_dead_port_never_fails_the_primary() {
    let h = Harness::new(2);
    let primary = echo("primary", 200);
    let dead = closed_port();
    h.apply(&single_route(
        mirrored("main", "shadow", 1_000_000),
        vec![
            cluster("main", &[&primary.address().to_string()]),
            cluster("shadow", &[&dead]),
        ],
    ));
    for i in 0..5 {
        let r = h.send(HTTP, request("POST", "svc", "/", &[], format!("body {i}")));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream(), "primary");
        assert_eq!(r.header("x-meshfast-flags"), None);
    }
    h.eventually("the mirror's connect failures counted", || {
        h.cluster_flag("shadow", "UF") == 5
    });
    assert_eq!(h.cluster_stat("main", "rq_2xx"), 5);
    assert_eq!(h.listener_stat(HTTP, "rq_5xx"), 0);
}

#[test]
fn mirror_to_a_missing_cluster_is_ignored() {
    let h = Harness::new(1);
    let primary = echo("primary", 200);
    h.apply(&single_route(
        mirrored("main", "no-such-cluster", 1_000_000),
        vec![cluster("main", &[&primary.address().to_string()])],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), "primary");
}

#[test]
fn mirror_at_zero_percent_sends_nothing() {
    let h = Harness::new(1);
    let primary = echo("primary", 200);
    let shadow = h.upstream("shadow", 200);
    h.apply(&single_route(
        mirrored("main", "shadow", 0),
        vec![
            cluster("main", &[&primary.address().to_string()]),
            cluster("shadow", &[&shadow.address()]),
        ],
    ));
    for _ in 0..5 {
        assert_eq!(h.get("svc", "/").upstream(), "primary");
    }
    // A mirror is spawned before the primary is sent, so one would have been
    // counted by now.
    assert_eq!(h.cluster_stat("shadow", "rq_total"), 0);
}

/// The copy must use the mirror cluster's protocol, not the primary's.
#[test]
fn mirror_speaks_the_mirror_clusters_protocol() {
    let h = Harness::new(1);
    let primary = echo("primary", 200);
    let mut shadow = h.upstream("shadow", 200);
    let mut shadow_cluster = cluster("shadow", &[&shadow.address()]);
    shadow_cluster.protocol = ir::UpstreamProtocol::Http2;
    h.apply(&single_route(
        mirrored("main", "shadow", 1_000_000),
        vec![
            cluster("main", &[&primary.address().to_string()]),
            shadow_cluster,
        ],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.echo_json()["protocol"], "HTTP/1.1");
    let copy = shadow.next_request(&h);
    assert_eq!(
        copy.version,
        http::Version::HTTP_2,
        "the mirror cluster is declared http2"
    );
}
