//! Answers the proxy gives itself: direct responses, redirects, fault
//! injection (abort at 100%, delay flag), none of which reach the upstream.

mod support;

use meshfast_proxy::ir;
use support::*;

/// One route with `action` in front of a recording upstream (cluster `c`).
fn setup(h: &Harness, action: ir::RouteAction) -> Upstream {
    let up = h.upstream("up", 200);
    h.apply(&single_route(
        ir::RouteAction {
            clusters: to("c"),
            ..action
        },
        vec![cluster("c", &[&up.address()])],
    ));
    up
}

#[test]
fn direct_response_answers_with_its_status_body_and_headers() {
    let h = Harness::new(1);
    let up = setup(
        &h,
        ir::RouteAction {
            direct_response: Some(ir::DirectResponse {
                status: 418,
                body: Some(b"short and stout".to_vec().into()),
            }),
            response_headers: ir::HeaderOps {
                set: vec![ir::HeaderValue {
                    name: "x-local".into(),
                    value: "yes".into(),
                }],
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let r = h.get("svc", "/teapot");
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "short and stout");
    assert_eq!(r.header("x-local"), Some("yes"));
    assert_eq!(r.header("x-meshfast-flags"), None);
    assert_eq!(up.hits(), 0);
    assert_eq!(h.stats()["routes"]["vh/r"]["rq_4xx"], 1);
}

#[test]
fn direct_response_without_body_is_empty() {
    let h = Harness::new(1);
    let up = setup(
        &h,
        ir::RouteAction {
            direct_response: Some(ir::DirectResponse {
                status: 200,
                body: None,
            }),
            ..Default::default()
        },
    );
    let r = h.get("svc", "/");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{}", r.text());
    assert_eq!(up.hits(), 0);
}

fn redirect(r: ir::Redirect) -> ir::RouteAction {
    ir::RouteAction {
        redirect: Some(r),
        ..Default::default()
    }
}

#[test]
fn redirect_replaces_scheme_authority_and_path_keeping_the_query() {
    let h = Harness::new(1);
    let up = setup(
        &h,
        redirect(ir::Redirect {
            scheme: Some("https".into()),
            authority: Some("new.example".into()),
            path: Some("/moved".into()),
            code: 302,
            ..Default::default()
        }),
    );
    let r = h.get("old.example:8080", "/somewhere?q=1");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://new.example/moved?q=1"),
        "a new scheme drops the old port"
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn redirect_defaults_to_301_and_keeps_the_request_port() {
    let h = Harness::new(1);
    setup(
        &h,
        redirect(ir::Redirect {
            path: Some("/new".into()),
            ..Default::default()
        }),
    );
    let r = h.get("svc.example:8080", "/old");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://svc.example:8080/new"));
}

#[test]
fn redirect_prefix_rewrite_replaces_the_matched_prefix() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&http_snapshot(
        1,
        vec![vhost(
            "vh",
            &["*"],
            vec![
                ir::Route {
                    name: "old".into(),
                    matcher: path(ir::MatchKind::Prefix, "/old"),
                    action: redirect(ir::Redirect {
                        prefix_rewrite: Some("/new".into()),
                        code: 308,
                        ..Default::default()
                    }),
                    stat_prefix: None,
                },
                route("rest", ir::RouteMatch::default(), "c"),
            ],
        )],
        vec![cluster("c", &[&up.address()])],
    ));
    let r = h.get("svc", "/old/page?x=y");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("http://svc/new/page?x=y"));
    // Other paths still reach the upstream.
    assert_eq!(h.get("svc", "/other").status, 200);
    assert_eq!(up.hits(), 1);
}

fn fault(f: ir::Fault) -> ir::RouteAction {
    ir::RouteAction {
        fault: Some(f),
        ..Default::default()
    }
}

#[test]
fn fault_abort_at_100_percent_answers_its_status_with_fi() {
    let h = Harness::new(2);
    let up = setup(
        &h,
        fault(ir::Fault {
            abort_http_status: Some(429),
            abort_millionths: 1_000_000,
            ..Default::default()
        }),
    );
    for _ in 0..5 {
        let r = h.get("svc", "/");
        assert_eq!(r.status, 429);
        assert_eq!(r.header("x-meshfast-flags"), Some("FI"));
        assert_eq!(r.text(), "fault filter abort\n");
    }
    assert_eq!(up.hits(), 0);
    let s = h.stats();
    assert_eq!(s["routes"]["vh/r"]["response_flags"]["FI"], 5, "{s}");
    assert_eq!(s["listeners"][HTTP]["rq_4xx"], 5, "{s}");
}

#[test]
fn fault_abort_at_0_percent_lets_everything_through() {
    let h = Harness::new(1);
    let up = setup(
        &h,
        fault(ir::Fault {
            abort_http_status: Some(500),
            abort_millionths: 0,
            ..Default::default()
        }),
    );
    for _ in 0..5 {
        assert_eq!(h.get("svc", "/").status, 200);
    }
    assert_eq!(up.hits(), 5);
}

#[test]
fn grpc_fault_abort_answers_200_with_grpc_status() {
    let h = Harness::new(1);
    let up = setup(
        &h,
        fault(ir::Fault {
            abort_grpc_status: Some(14),
            abort_millionths: 1_000_000,
            ..Default::default()
        }),
    );
    let r = h.send(
        HTTP,
        request(
            "POST",
            "svc",
            "/pkg.Service/Method",
            &[("content-type", "application/grpc")],
            "",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.header("x-meshfast-flags"), Some("FI"));
    assert_eq!(up.hits(), 0);
}

#[test]
fn fault_delay_is_flagged_di_and_the_request_still_goes_through() {
    let h = Harness::new(1);
    let up = setup(
        &h,
        fault(ir::Fault {
            delay_ms: 1,
            delay_millionths: 1_000_000,
            ..Default::default()
        }),
    );
    let r = h.get("svc", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), "up");
    assert_eq!(r.header("x-meshfast-flags"), Some("DI"));
    assert_eq!(up.hits(), 1);
}
