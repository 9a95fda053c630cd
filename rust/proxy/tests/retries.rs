//! Retry policies through real sockets: 5xx and connect failures retried onto
//! healthy endpoints, bodies replayed, limits honoured and counted (URX).

mod support;

use meshfast_proxy::ir;
use support::*;

fn retry(attempts: u32, on: &[&str]) -> Option<ir::RetryPolicy> {
    Some(ir::RetryPolicy {
        attempts,
        retry_on: on.iter().map(|s| (*s).to_owned()).collect(),
        previous_hosts: true,
        ..Default::default()
    })
}

fn retrying(cluster: &str, policy: Option<ir::RetryPolicy>) -> ir::RouteAction {
    ir::RouteAction {
        clusters: to(cluster),
        retry: policy,
        ..Default::default()
    }
}

#[test]
fn retry_on_5xx_moves_past_a_failing_endpoint() {
    let h = Harness::new(2);
    let failing = h.upstream("failing", 503);
    let ok1 = echo("ok1", 200);
    let ok2 = echo("ok2", 200);
    let addrs = [
        failing.address(),
        ok1.address().to_string(),
        ok2.address().to_string(),
    ];
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    h.apply(&single_route(
        retrying("c", retry(3, &["5xx"])),
        vec![cluster("c", &addrs)],
    ));
    for i in 0..12 {
        let r = h.get("svc", &format!("/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(matches!(r.upstream(), "ok1" | "ok2"), "{}", r.upstream());
        assert_eq!(r.header("x-meshfast-flags"), None);
    }
    // Round robin over three endpoints sent some first tries to the failing one.
    assert!(failing.hits() >= 1, "the failing endpoint was never tried");
    assert_eq!(h.cluster_stat("c", "rq_2xx"), 12);
    assert_eq!(h.cluster_stat("c", "rq_5xx"), 0);
}

#[test]
fn without_a_retry_policy_the_5xx_reaches_the_client() {
    let h = Harness::new(2);
    let failing = h.upstream("failing", 503);
    let ok = echo("ok", 200);
    h.apply(&single_route(
        retrying("c", None),
        vec![cluster(
            "c",
            &[&failing.address(), &ok.address().to_string()],
        )],
    ));
    let statuses: Vec<u16> = (0..6).map(|_| h.get("svc", "/").status.as_u16()).collect();
    // Round robin alternates: half the requests met the failing endpoint.
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(failing.hits(), 3);
}

#[test]
fn retried_request_bodies_are_replayed_whole() {
    let h = Harness::new(1);
    let failing = h.upstream("failing", 503);
    let mut ok = h.upstream("ok", 200);
    h.apply(&single_route(
        retrying("c", retry(2, &["5xx"])),
        vec![cluster("c", &[&failing.address(), &ok.address()])],
    ));
    for i in 0..4 {
        let body = format!("payload number {i}").repeat(100);
        let r = h.send(HTTP, request("POST", "svc", "/upload", &[], body.clone()));
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = ok.next_request(&h);
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.body, body.as_bytes(), "request {i}");
    }
    assert!(failing.hits() >= 1, "the failing endpoint was never tried");
}

#[test]
fn retry_on_connect_failure_skips_a_closed_port() {
    let h = Harness::new(2);
    let ok = echo("ok", 200);
    let dead = closed_port();
    h.apply(&single_route(
        retrying("c", retry(2, &["connect-failure"])),
        vec![cluster("c", &[&dead, &ok.address().to_string()])],
    ));
    for i in 0..8 {
        let r = h.get("svc", "/");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.upstream(), "ok");
    }
    assert_eq!(h.cluster_flag("c", "UF"), 0);
}

#[test]
fn without_retries_a_closed_port_is_503_uf() {
    let h = Harness::new(1);
    let dead = closed_port();
    h.apply(&single_route(
        retrying("c", None),
        vec![cluster("c", &[&dead])],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-meshfast-flags"), Some("UF"));
    assert!(r.text().contains("connection failure"), "{}", r.text());
    assert_eq!(h.cluster_flag("c", "UF"), 1);
    assert_eq!(h.listener_stat(HTTP, "rq_5xx"), 1);
}

#[test]
fn exhausted_retries_pass_the_last_answer_on_with_urx() {
    let h = Harness::new(1);
    let failing = h.upstream("failing", 503);
    h.apply(&single_route(
        retrying("c", retry(2, &["5xx"])),
        vec![cluster("c", &[&failing.address()])],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.upstream(), "failing", "the upstream's own answer");
    assert_eq!(r.header("x-meshfast-flags"), Some("URX"));
    assert_eq!(failing.hits(), 3, "the first try and two retries");
    assert_eq!(h.cluster_flag("c", "URX"), 1);
    assert_eq!(
        h.cluster_stat("c", "rq_total"),
        1,
        "retries are one request"
    );
    assert_eq!(h.cluster_stat("c", "rq_5xx"), 1);
}

#[test]
fn statuses_outside_retry_on_are_not_retried() {
    let h = Harness::new(1);
    let missing = h.upstream("missing", 404);
    h.apply(&single_route(
        retrying("c", retry(3, &["5xx", "gateway-error"])),
        vec![cluster("c", &[&missing.address()])],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-meshfast-flags"), None);
    assert_eq!(missing.hits(), 1);
}

#[test]
fn retriable_status_codes_retry_only_the_listed_codes() {
    let h = Harness::new(1);
    let conflict = h.upstream("conflict", 409);
    h.apply(&single_route(
        retrying(
            "c",
            Some(ir::RetryPolicy {
                attempts: 1,
                retry_on: vec!["retriable-status-codes".into()],
                retriable_status_codes: vec![409],
                ..Default::default()
            }),
        ),
        vec![cluster("c", &[&conflict.address()])],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.status, 409);
    assert_eq!(conflict.hits(), 2, "one retry of the 409");
    assert_eq!(r.header("x-meshfast-flags"), Some("URX"));
}

#[test]
fn an_upstream_hanging_up_before_answering_is_503_uc() {
    let h = Harness::new(1);
    let hang = h.hang_up();
    h.apply(&single_route(
        retrying("c", None),
        vec![cluster("c", &[&hang.address()])],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-meshfast-flags"), Some("UC"));
    assert!(r.text().contains("connection termination"), "{}", r.text());
    assert_eq!(h.cluster_flag("c", "UC"), 1);
}

#[test]
fn retry_on_reset_moves_past_an_upstream_that_hangs_up() {
    let h = Harness::new(2);
    let hang = h.hang_up();
    let ok = echo("ok", 200);
    h.apply(&single_route(
        retrying("c", retry(2, &["reset"])),
        vec![cluster("c", &[&hang.address(), &ok.address().to_string()])],
    ));
    for i in 0..6 {
        let r = h.get("svc", "/");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.upstream(), "ok");
    }
    let hung_up = hang.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(hung_up >= 1, "the hanging-up endpoint was never tried");
}

/// An echo that never answers within any test's lifetime.
fn hanging_echo() -> meshfast_proxy::echo::Echo {
    meshfast_proxy::echo::Echo::start(
        "127.0.0.1:0",
        meshfast_proxy::echo::EchoConfig {
            name: "hanging".into(),
            status: 200,
            delay_ms: 600_000,
        },
        1,
    )
    .expect("echo starts")
}

#[test]
fn route_timeout_answers_504_ut_when_the_upstream_never_answers() {
    let h = Harness::new(1);
    let slow = hanging_echo();
    h.apply(&single_route(
        ir::RouteAction {
            clusters: to("c"),
            timeout_ms: 200,
            ..Default::default()
        },
        vec![cluster("c", &[&slow.address().to_string()])],
    ));
    let r = h.get("svc", "/");
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-meshfast-flags"), Some("UT"));
    assert_eq!(r.text(), "upstream request timeout\n");
}

#[test]
fn per_try_timeout_retries_onto_an_answering_endpoint() {
    let h = Harness::new(1);
    let slow = hanging_echo();
    let ok = echo("ok", 200);
    h.apply(&single_route(
        retrying(
            "c",
            Some(ir::RetryPolicy {
                attempts: 2,
                per_try_timeout_ms: 200,
                retry_on: vec!["5xx".into()],
                previous_hosts: true,
                ..Default::default()
            }),
        ),
        vec![cluster(
            "c",
            &[&slow.address().to_string(), &ok.address().to_string()],
        )],
    ));
    // Round robin: one of the two requests starts on the hanging endpoint.
    for _ in 0..2 {
        let r = h.get("svc", "/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.upstream(), "ok");
    }
}

#[test]
fn retried_chunked_request_bodies_are_replayed_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new(1);
    let failing = h.upstream("failing", 503);
    let mut ok = h.upstream("ok", 200);
    h.apply(&single_route(
        retrying("c", retry(2, &["5xx"])),
        vec![cluster("c", &[&failing.address(), &ok.address()])],
    ));
    let addr = h.addr(HTTP);
    // Two requests: round robin starts one of them on the failing endpoint.
    for i in 0..2 {
        let answer = h.block_on(async {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                b"POST /chunked HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\
                  Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            )
            .await
            .expect("write");
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.expect("read");
            String::from_utf8_lossy(&out).into_owned()
        });
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
        let seen = ok.next_request(&h);
        assert_eq!(seen.body, &b"hello world"[..], "request {i}");
    }
    assert!(failing.hits() >= 1, "the failing endpoint was never tried");
}
