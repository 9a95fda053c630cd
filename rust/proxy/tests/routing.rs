//! Routing through real sockets: virtual host by Host, then the first route
//! whose path / header conditions hold, each to its own echo upstream.

mod support;

use meshfast_proxy::ir;
use support::*;

struct Upstreams {
    _echos: Vec<meshfast_proxy::echo::Echo>,
}

/// Echo servers `exact`, `api`, `canary`, `default`, `b` and a snapshot
/// routing to them:
/// - `a.example`: exact `/exact` → exact; header `x-variant: canary` →
///   canary; prefix `/api` → api; anything else → default.
/// - `b.example`, `*.wild.example` → b.
fn routing_setup(h: &Harness) -> Upstreams {
    let names = ["exact", "api", "canary", "default", "b"];
    let echos: Vec<_> = names.iter().map(|n| echo(n, 200)).collect();
    let clusters = names
        .iter()
        .zip(&echos)
        .map(|(n, e)| cluster(n, &[&e.address().to_string()]))
        .collect();
    let canary = ir::RouteMatch {
        headers: vec![ir::HeaderMatch {
            name: "x-variant".into(),
            value: Some(ir::StringMatch {
                kind: ir::MatchKind::Exact,
                value: "canary".into(),
                ignore_case: false,
            }),
            invert: false,
        }],
        ..Default::default()
    };
    let snap = http_snapshot(
        1,
        vec![
            vhost(
                "a",
                &["a.example"],
                vec![
                    route("exact", path(ir::MatchKind::Exact, "/exact"), "exact"),
                    route("canary", canary, "canary"),
                    route("api", path(ir::MatchKind::Prefix, "/api"), "api"),
                    route("default", ir::RouteMatch::default(), "default"),
                ],
            ),
            vhost(
                "b",
                &["b.example", "*.wild.example"],
                vec![route("b", ir::RouteMatch::default(), "b")],
            ),
        ],
        clusters,
    );
    assert_eq!(h.apply(&snap), 1);
    Upstreams { _echos: echos }
}

#[test]
fn path_exact_prefix_and_header_matches_pick_their_clusters() {
    let h = Harness::new(2);
    let _u = routing_setup(&h);

    let cases = [
        ("/exact", "exact"),
        // Exact means exact: a longer path falls through to the catch-all.
        ("/exact/more", "default"),
        ("/exact?q=1", "exact"),
        ("/api", "api"),
        ("/api/v1/items", "api"),
        ("/other", "default"),
        ("/", "default"),
    ];
    for (p, want) in cases {
        let r = h.get("a.example", p);
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        assert_eq!(r.upstream(), want, "path {p}");
        // The echo saw the request as sent: same path, same host.
        let json = r.echo_json();
        assert_eq!(json["name"], want);
        assert_eq!(json["path"], p);
        assert_eq!(json["authority"], "a.example");
    }

    // The header route comes before the prefix one: first match wins.
    let r = h.send(
        HTTP,
        request("GET", "a.example", "/api/x", &[("x-variant", "canary")], ""),
    );
    assert_eq!(r.upstream(), "canary");
    let r = h.send(
        HTTP,
        request("GET", "a.example", "/api/x", &[("x-variant", "stable")], ""),
    );
    assert_eq!(r.upstream(), "api");
}

#[test]
fn host_picks_the_virtual_host_exact_wildcard_any_case_and_port() {
    let h = Harness::new(2);
    let _u = routing_setup(&h);
    for host in [
        "b.example",
        "B.Example",
        "x.wild.example",
        "deep.x.wild.example:8080",
    ] {
        let r = h.get(host, "/exact");
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.upstream(), "b", "host {host}");
    }
    assert_eq!(h.get("a.example", "/exact").upstream(), "exact");
}

#[test]
fn unknown_host_is_404_with_flag_nr() {
    let h = Harness::new(2);
    let _u = routing_setup(&h);
    for host in ["c.example", "wild.example", "a.example.evil"] {
        let r = h.get(host, "/");
        assert_eq!(r.status, 404, "host {host}");
        assert_eq!(r.header("x-meshfast-flags"), Some("NR"), "host {host}");
        assert_eq!(r.upstream(), "<local reply>");
        // Every reply carries a request id, local ones too.
        assert!(r.header("x-request-id").is_some());
    }
    assert_eq!(
        h.stats()["listeners"][HTTP]["response_flags"]["NR"],
        3,
        "{}",
        h.proxy.stats().render_json()
    );
}

#[test]
fn route_to_a_missing_cluster_is_503_nc() {
    let h = Harness::new(1);
    let snap = single_route(
        ir::RouteAction {
            clusters: to("nowhere"),
            ..Default::default()
        },
        vec![],
    );
    h.apply(&snap);
    let r = h.get("any", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-meshfast-flags"), Some("NC"));
    assert_eq!(r.text(), "cluster not found\n");
}

#[test]
fn request_and_response_counters_follow_the_route() {
    let h = Harness::new(2);
    let _u = routing_setup(&h);
    for _ in 0..3 {
        assert_eq!(h.get("a.example", "/api/x").status, 200);
    }
    assert_eq!(h.get("nope.example", "/").status, 404);
    let s = h.stats();
    assert_eq!(s["routes"]["a/api"]["rq_total"], 3, "{s}");
    assert_eq!(s["routes"]["a/api"]["rq_2xx"], 3, "{s}");
    assert_eq!(s["clusters"]["api"]["rq_2xx"], 3, "{s}");
    assert_eq!(s["clusters"]["exact"]["rq_total"], 0, "{s}");
    assert_eq!(s["listeners"][HTTP]["rq_total"], 4, "{s}");
    assert_eq!(s["listeners"][HTTP]["rq_2xx"], 3, "{s}");
    assert_eq!(s["listeners"][HTTP]["rq_4xx"], 1, "{s}");
    // The listener accepted one connection per request (the client opens a new one each time).
    assert_eq!(s["listeners"][HTTP]["cx_total"], 4, "{s}");
    let prom = h.proxy.stats().render_prometheus();
    assert!(
        prom.contains("meshfast_cluster_requests_total{cluster=\"api\",class=\"2xx\"} 3"),
        "{prom}"
    );
}

#[test]
fn a_request_without_any_authority_is_400_dpe() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new(1);
    let _u = routing_setup(&h);
    let addr = h.addr(HTTP);
    let answer = h.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // HTTP/1.0 needs no Host header; the proxy needs one to route.
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-meshfast-flags: dpe"),
        "{answer}"
    );
}
