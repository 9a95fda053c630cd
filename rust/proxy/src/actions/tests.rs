use super::*;

fn prefix(value: &str) -> MatchedPrefix {
    MatchedPrefix::of(&ir::RouteMatch {
        path: Some(ir::StringMatch {
            kind: ir::MatchKind::Prefix,
            value: value.into(),
            ignore_case: false,
        }),
        ..Default::default()
    })
}

#[test]
fn prefix_rewrite_replaces_only_the_matched_prefix() {
    assert_eq!(
        prefix("/api/v1").replace("/api/v1/items?x=1", "/v2"),
        "/v2/items?x=1"
    );
    // Envoy's well-known gotcha: a route without a path match has prefix "/".
    let all = MatchedPrefix::of(&ir::RouteMatch::default());
    assert_eq!(all.replace("/foo", "/v2/"), "/v2/foo");
    assert_eq!(prefix("/x").replace("/x", ""), "/");
    assert_eq!(MatchedPrefix::Whole.replace("/a/b?q", "/c"), "/c?q");
}

#[test]
fn regex_rewrite_uses_re2_style_captures() {
    let rw = RewriteRt::build(
        "r",
        &ir::Rewrite {
            regex: Some(ir::RegexRewrite {
                pattern: "^/service/([^/]+)(/.*)$".into(),
                substitution: "\\2/instance/\\1".into(),
            }),
            ..Default::default()
        },
    )
    .expect("build");
    assert_eq!(
        rw.path("/service/foo/v1/api?a=1", &MatchedPrefix::Whole)
            .as_deref(),
        Some("/v1/api/instance/foo?a=1")
    );
}

#[test]
fn redirect_locations() {
    let r = |redirect: ir::Redirect| RedirectRt::build("r", &redirect).expect("build");
    let m = prefix("/old");
    let full = r(ir::Redirect {
        path: Some("/new".into()),
        ..Default::default()
    });
    assert_eq!(full.code, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        full.location("http", "a.com:8080", "/old/x?q=1", &m),
        "http://a.com:8080/new?q=1"
    );
    let https = r(ir::Redirect {
        scheme: Some("https".into()),
        authority: Some("b.com".into()),
        code: 308,
        ..Default::default()
    });
    assert_eq!(
        https.location("http", "a.com:8080", "/p", &m),
        "https://b.com/p"
    );
    let port = r(ir::Redirect {
        port: Some(9443),
        prefix_rewrite: Some("/n".into()),
        ..Default::default()
    });
    assert_eq!(
        port.location("http", "a.com", "/old/x", &m),
        "http://a.com:9443/n/x"
    );
}

#[test]
fn fault_percentages() {
    assert!(roll(1_000_000));
    assert!(!roll(0));
    let hits = (0..10_000).filter(|_| roll(500_000)).count();
    assert!((4_000..6_000).contains(&hits), "{hits}");
    let f = FaultRt::build(
        "r",
        &ir::Fault {
            abort_http_status: Some(555),
            abort_millionths: 0,
            ..Default::default()
        },
    )
    .expect("build");
    assert!(f.abort.is_none(), "a missing percentage injects nothing");
}
