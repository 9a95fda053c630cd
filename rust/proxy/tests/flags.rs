//! Response flags are meshfast's own report of what it did: kept in the
//! request's context and rendered once. An upstream's `x-meshfast-flags` (or a
//! client's) never passes for ours, in the header or in the counters.

mod support;

use meshfast_proxy::ir;
use support::*;

const LISTENER: &str = "http";

fn planted(flags: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request(
        "GET",
        "svc",
        "/",
        &[("x-reply-x-meshfast-flags", flags)],
        bytes::Bytes::new(),
    )
}

#[test]
fn an_upstreams_flags_header_is_not_reported_as_ours() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&to_upstream(&up));
    let r = h.send(LISTENER, planted("UH,URX,NR"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-meshfast-flags"),
        None,
        "the upstream's flags leaked"
    );
    for flag in ["UH", "URX", "NR"] {
        assert_eq!(h.cluster_flag("c", flag), 0, "{flag} counted");
    }
}

#[test]
fn our_own_flags_replace_an_upstreams() {
    let h = Harness::new(1);
    let up = h.upstream("failing", 503);
    h.apply(&single_route(
        ir::RouteAction {
            clusters: to("c"),
            retry: Some(ir::RetryPolicy {
                attempts: 1,
                retry_on: vec!["5xx".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
        vec![cluster("c", &[&up.address()])],
    ));
    let r = h.send(LISTENER, planted("NR,FI"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-meshfast-flags"), Some("URX"));
    assert_eq!(h.cluster_flag("c", "URX"), 1);
    assert_eq!(h.cluster_flag("c", "NR") + h.cluster_flag("c", "FI"), 0);
}

#[test]
fn a_clients_flags_header_is_not_forwarded() {
    let h = Harness::new(1);
    let mut up = h.upstream("up", 200);
    h.apply(&to_upstream(&up));
    let req = request(
        "GET",
        "svc",
        "/",
        &[("x-meshfast-flags", "UH")],
        bytes::Bytes::new(),
    );
    let r = h.send(LISTENER, req);
    assert_eq!(r.status, 200);
    let seen = up.next_request(&h);
    assert!(seen.headers.get("x-meshfast-flags").is_none());
}
