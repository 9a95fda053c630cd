//! Path normalization (Istio's `pathNormalization`): a route that answers 403
//! for prefix `/admin` cannot be bypassed with dot segments, escapes or
//! backslashes, and the upstream receives the path that was matched.

mod support;

use meshfast_proxy::ir;
use support::*;

/// `/admin` answers 403 locally; everything else goes to `up`.
fn guarded(up: &Upstream, how: ir::PathNormalization) -> ir::Snapshot {
    let deny = ir::Route {
        name: "deny".into(),
        matcher: path(ir::MatchKind::Prefix, "/admin"),
        action: ir::RouteAction {
            direct_response: Some(ir::DirectResponse {
                status: 403,
                body: None,
            }),
            ..Default::default()
        },
        stat_prefix: None,
    };
    let rest = route("rest", path(ir::MatchKind::Prefix, "/"), "c");
    ir::Snapshot {
        path_normalization: how,
        ..http_snapshot(
            1,
            vec![vhost("vh", &["*"], vec![deny, rest])],
            vec![cluster("c", &[&up.address()])],
        )
    }
}

const BYPASSES: [&str; 8] = [
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/./admin",
    "/%61dmin",
    "/%61dmin/../admin/x",
    "/a/b/../../admin?q=1",
    "/admin/.",
];

#[test]
fn a_guarded_prefix_cannot_be_bypassed_by_default() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&guarded(&up, ir::PathNormalization::default()));
    for sent in BYPASSES {
        let r = h.get("svc", sent);
        assert_eq!(r.status, 403, "{sent} got through");
    }
    assert_eq!(up.hits(), 0);
    // BASE keeps empty segments (as Istio's does): `//admin` is another path.
    assert_eq!(h.get("svc", "//admin").status, 200);
}

#[test]
fn merge_slashes_also_closes_double_slashes() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&guarded(&up, ir::PathNormalization::MergeSlashes));
    for sent in ["//admin", "/public//..//admin", "///admin/x"] {
        assert_eq!(h.get("svc", sent).status, 403, "{sent}");
    }
    assert_eq!(up.hits(), 0);
}

#[test]
fn decode_and_merge_slashes_decodes_escaped_slashes() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&guarded(&up, ir::PathNormalization::MergeSlashes));
    assert_eq!(h.get("svc", "/x%2F..%2Fadmin").status, 200, "kept escaped");
    h.apply(&guarded(&up, ir::PathNormalization::DecodeAndMergeSlashes));
    assert_eq!(h.get("svc", "/x%2F..%2Fadmin").status, 403);
    assert_eq!(h.get("svc", "/x%5C..%5Cadmin").status, 403);
}

#[test]
fn the_upstream_gets_the_normalized_path_and_the_query_as_sent() {
    let h = Harness::new(1);
    let mut up = h.upstream("up", 200);
    h.apply(&guarded(&up, ir::PathNormalization::Base));
    let r = h.get("svc", "/public/./a/../%7Euser/%2fx?q=%2e%2e&b=/../");
    assert_eq!(r.status, 200);
    let seen = up.next_request(&h);
    assert_eq!(seen.path, "/public/~user/%2Fx?q=%2e%2e&b=/../");
}

#[test]
fn none_forwards_the_path_as_sent() {
    let h = Harness::new(1);
    let mut up = h.upstream("up", 200);
    h.apply(&guarded(&up, ir::PathNormalization::None));
    assert_eq!(h.get("svc", "/public/../admin").status, 200);
    assert_eq!(up.next_request(&h).path, "/public/../admin");
}

#[test]
fn a_backslash_path_never_reaches_the_guarded_route_s_upstream() {
    let h = Harness::new(1);
    let up = h.upstream("up", 200);
    h.apply(&guarded(&up, ir::PathNormalization::Base));
    let addr = h.addr(HTTP);
    // Raw bytes: client libraries refuse to send a backslash.
    let raw = b"GET /public\\..\\admin HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n";
    let status = h.block_on(raw_status(addr, raw, false));
    assert!(
        status.starts_with("HTTP/1.1 403") || status.starts_with("HTTP/1.1 400"),
        "{status}"
    );
    assert_eq!(up.hits(), 0);
}
