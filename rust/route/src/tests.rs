use super::*;
use meshfast_ir as ir;

fn sm(kind: ir::MatchKind, value: &str) -> Option<ir::StringMatch> {
    Some(ir::StringMatch {
        kind,
        value: value.into(),
        ignore_case: false,
    })
}

fn route(name: &str, matcher: ir::RouteMatch) -> ir::Route {
    ir::Route {
        name: name.into(),
        matcher,
        action: ir::RouteAction::default(),
        stat_prefix: None,
    }
}

fn table(vhosts: Vec<ir::VirtualHost>) -> Table<String> {
    let ir = ir::RouteTable {
        name: "t".into(),
        virtual_hosts: vhosts,
    };
    Table::build::<BuildError>(&ir, |_, r| Ok(r.name.clone())).expect("build")
}

fn vhost(name: &str, domains: &[&str], routes: Vec<ir::Route>) -> ir::VirtualHost {
    ir::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
    }
}

fn head<'a>(authority: &'a str, path: &'a str, headers: &'a http::HeaderMap) -> RequestHead<'a> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    RequestHead {
        method: "GET",
        path,
        query,
        authority,
        scheme: "http",
        headers,
    }
}

fn found(
    t: &Table<String>,
    authority: &str,
    path: &str,
    headers: &http::HeaderMap,
) -> Option<String> {
    t.find(&head(authority, path, headers))
        .map(|(_, r)| r.action.clone())
}

#[test]
fn host_precedence_exact_then_longest_wildcard_then_any() {
    let catch_all = || vec![route("r", ir::RouteMatch::default())];
    let t = table(vec![
        vhost("any", &["*"], vec![route("any", ir::RouteMatch::default())]),
        vhost(
            "short",
            &["*.com"],
            vec![route("short", ir::RouteMatch::default())],
        ),
        vhost(
            "long",
            &["*.example.com"],
            vec![route("long", ir::RouteMatch::default())],
        ),
        vhost("exact", &["a.example.com", "a.example.com:80"], catch_all()),
    ]);
    let h = http::HeaderMap::new();
    assert_eq!(found(&t, "a.example.com", "/", &h).as_deref(), Some("r"));
    assert_eq!(found(&t, "A.Example.COM:80", "/", &h).as_deref(), Some("r"));
    assert_eq!(
        found(&t, "b.example.com:9080", "/", &h).as_deref(),
        Some("long")
    );
    assert_eq!(found(&t, "x.com", "/", &h).as_deref(), Some("short"));
    assert_eq!(found(&t, "other", "/", &h).as_deref(), Some("any"));
}

#[test]
fn unknown_host_without_catch_all_has_no_route() {
    let t = table(vec![vhost(
        "a",
        &["a"],
        vec![route("r", ir::RouteMatch::default())],
    )]);
    assert!(found(&t, "b", "/", &http::HeaderMap::new()).is_none());
}

#[test]
fn first_match_wins_without_specificity_sorting() {
    let t = table(vec![vhost(
        "a",
        &["a"],
        vec![
            route(
                "broad",
                ir::RouteMatch {
                    path: sm(ir::MatchKind::Prefix, "/"),
                    ..Default::default()
                },
            ),
            route(
                "narrow",
                ir::RouteMatch {
                    path: sm(ir::MatchKind::Exact, "/x"),
                    ..Default::default()
                },
            ),
        ],
    )]);
    assert_eq!(
        found(&t, "a", "/x", &http::HeaderMap::new()).as_deref(),
        Some("broad")
    );
}

#[test]
fn uri_exact_prefix_regex_and_ignore_case() {
    let t = table(vec![vhost(
        "a",
        &["a"],
        vec![
            route(
                "exact",
                ir::RouteMatch {
                    path: sm(ir::MatchKind::Exact, "/login"),
                    ..Default::default()
                },
            ),
            route(
                "ci",
                ir::RouteMatch {
                    path: Some(ir::StringMatch {
                        kind: ir::MatchKind::Prefix,
                        value: "/API".into(),
                        ignore_case: true,
                    }),
                    ..Default::default()
                },
            ),
            route(
                "regex",
                ir::RouteMatch {
                    path: sm(ir::MatchKind::Regex, r"/v\d+/items"),
                    ..Default::default()
                },
            ),
        ],
    )]);
    let h = http::HeaderMap::new();
    assert_eq!(
        found(&t, "a", "/login?next=1", &h).as_deref(),
        Some("exact")
    );
    assert_eq!(found(&t, "a", "/login2", &h), None);
    assert_eq!(found(&t, "a", "/api/x", &h).as_deref(), Some("ci"));
    assert_eq!(found(&t, "a", "/v12/items", &h).as_deref(), Some("regex"));
    // Regexes are anchored: a partial match is no match.
    assert_eq!(found(&t, "a", "/v12/items/3", &h), None);
}

#[test]
fn headers_exact_prefix_regex_presence_and_without() {
    let hm = |name: &str, value: Option<ir::StringMatch>, invert: bool| ir::HeaderMatch {
        name: name.into(),
        value,
        invert,
    };
    let t = table(vec![vhost(
        "a",
        &["a"],
        vec![
            route(
                "jason",
                ir::RouteMatch {
                    headers: vec![hm("end-user", sm(ir::MatchKind::Exact, "jason"), false)],
                    ..Default::default()
                },
            ),
            route(
                "pre",
                ir::RouteMatch {
                    headers: vec![hm("x-ver", sm(ir::MatchKind::Prefix, "v2"), false)],
                    ..Default::default()
                },
            ),
            route(
                "re",
                ir::RouteMatch {
                    headers: vec![hm("x-id", sm(ir::MatchKind::Regex, "[0-9]+"), false)],
                    ..Default::default()
                },
            ),
            route(
                "present",
                ir::RouteMatch {
                    headers: vec![hm("x-debug", None, false)],
                    ..Default::default()
                },
            ),
            route(
                "not-bot",
                ir::RouteMatch {
                    headers: vec![hm("user-agent", sm(ir::MatchKind::Prefix, "bot"), true)],
                    ..Default::default()
                },
            ),
            route("rest", ir::RouteMatch::default()),
        ],
    )]);
    let with = |pairs: &[(&str, &str)]| {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    };
    assert_eq!(
        found(&t, "a", "/", &with(&[("end-user", "jason")])).as_deref(),
        Some("jason")
    );
    assert_eq!(
        found(&t, "a", "/", &with(&[("x-ver", "v2.1")])).as_deref(),
        Some("pre")
    );
    assert_eq!(
        found(&t, "a", "/", &with(&[("x-id", "123")])).as_deref(),
        Some("re")
    );
    assert_eq!(
        found(&t, "a", "/", &with(&[("x-debug", "")])).as_deref(),
        Some("present")
    );
    // The missing user-agent counts as "" for withoutHeaders: not a bot.
    assert_eq!(found(&t, "a", "/", &with(&[])).as_deref(), Some("not-bot"));
    assert_eq!(
        found(&t, "a", "/", &with(&[("user-agent", "bot/1")])).as_deref(),
        Some("rest")
    );
}

#[test]
fn method_and_query_params() {
    let t = table(vec![vhost(
        "a",
        &["a"],
        vec![
            route(
                "post-debug",
                ir::RouteMatch {
                    method: sm(ir::MatchKind::Exact, "POST"),
                    query_params: vec![ir::QueryMatch {
                        name: "debug".into(),
                        value: sm(ir::MatchKind::Exact, "1"),
                    }],
                    ..Default::default()
                },
            ),
            route(
                "has-q",
                ir::RouteMatch {
                    query_params: vec![ir::QueryMatch {
                        name: "q".into(),
                        value: None,
                    }],
                    ..Default::default()
                },
            ),
        ],
    )]);
    let h = http::HeaderMap::new();
    let mut post = head("a", "/", &h);
    post.method = "POST";
    post.query = Some("x=2&debug=1");
    assert_eq!(
        t.find(&post).map(|(_, r)| r.action.as_str()),
        Some("post-debug")
    );
    assert_eq!(found(&t, "a", "/?debug=1", &h), None);
    assert_eq!(found(&t, "a", "/s?q", &h).as_deref(), Some("has-q"));
}

#[test]
fn bad_regex_is_a_build_error() {
    let ir = ir::RouteTable {
        name: "t".into(),
        virtual_hosts: vec![vhost(
            "a",
            &["a"],
            vec![route(
                "bad",
                ir::RouteMatch {
                    path: sm(ir::MatchKind::Regex, "(unclosed"),
                    ..Default::default()
                },
            )],
        )],
    };
    let err = Table::<()>::build::<BuildError>(&ir, |_, _| Ok(())).expect_err("bad regex");
    assert!(err.to_string().contains("(unclosed"), "{err}");
}

#[test]
fn strip_port_keeps_ipv6_literals() {
    assert_eq!(strip_port("a:80"), "a");
    assert_eq!(strip_port("a"), "a");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
}

#[test]
fn first_miss_names_the_condition_and_agrees_with_matches() {
    let m = |mm: ir::RouteMatch| RouteMatcher::build("r", &mm).expect("build");
    let full = m(ir::RouteMatch {
        path: sm(ir::MatchKind::Prefix, "/api"),
        method: sm(ir::MatchKind::Exact, "GET"),
        headers: vec![ir::HeaderMatch {
            name: "X-User".into(),
            value: sm(ir::MatchKind::Exact, "jason"),
            invert: false,
        }],
        query_params: vec![ir::QueryMatch {
            name: "v".into(),
            value: None,
        }],
        ..Default::default()
    });
    let mut jason = http::HeaderMap::new();
    jason.insert("x-user", http::HeaderValue::from_static("jason"));
    let none = http::HeaderMap::new();
    let cases: [(&str, &http::HeaderMap, Option<Miss>); 5] = [
        ("/api/x?v=1", &jason, None),
        ("/web?v=1", &jason, Some(Miss::Path)),
        ("/api/x?v=1", &none, Some(Miss::Header("x-user".into()))),
        ("/api/x", &jason, Some(Miss::Query("v".into()))),
        // The first failing condition is the one named, in `matches`' order.
        ("/web", &none, Some(Miss::Path)),
    ];
    for (path, headers, miss) in cases {
        let h = head("a", path, headers);
        assert_eq!(full.first_miss(&h), miss, "{path}");
        assert_eq!(full.matches(&h), miss.is_none(), "{path}");
    }
    let mut post = head("a", "/api", &jason);
    post.method = "POST";
    assert_eq!(full.first_miss(&post), Some(Miss::Method));
    assert_eq!(Miss::Header("x-user".into()).to_string(), "headers[x-user]");
    assert_eq!(Miss::Path.to_string(), "uri");
}
