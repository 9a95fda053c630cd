//! Property tests of routing: lookups never panic on any authority, path,
//! query or header, and matches agree with simple models (prefix is a plain
//! byte-prefix test, exact is equality, first match wins, hosts are
//! case-insensitive).

// The models lowercase whole strings on purpose: they should not share the
// matcher's own byte-wise comparisons.
#![allow(clippy::manual_ignore_case_cmp)]

use meshfast_ir as ir;
use meshfast_route::{strip_port, BuildError, RequestHead, StringMatcher, Table};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Paths: mostly path-like, sometimes anything at all.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![3 => "(/[a-zA-Z0-9._~%-]{0,6}){0,4}", 1 => any::<String>()]
}

fn any_host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9.-]{0,12}(:[0-9]{1,5})?",
        1 => "\\[[0-9a-f:]{0,10}\\](:[0-9]{1,5})?",
        1 => any::<String>(),
    ]
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        "\\*\\.[a-c]{1,3}(\\.[a-c]{1,2})?",
        "[a-cA-C]{1,3}(\\.[a-c]{1,2})?(:[0-9]{1,2})?",
        any::<String>(),
    ]
}

fn kind() -> impl Strategy<Value = ir::MatchKind> {
    prop_oneof![
        Just(ir::MatchKind::Exact),
        Just(ir::MatchKind::Prefix),
        Just(ir::MatchKind::Regex)
    ]
}

fn string_match() -> impl Strategy<Value = ir::StringMatch> {
    // Regexes from a small set of valid and invalid patterns; plain values
    // anything.
    let regex = prop_oneof![
        Just(".*".to_owned()),
        Just("/a+/[0-9]*".to_owned()),
        Just("(".to_owned()),
        Just("x|y|".to_owned()),
        Just("\\p{L}+".to_owned()),
    ];
    (kind(), any_path(), regex, any::<bool>()).prop_map(|(kind, plain, regex, ignore_case)| {
        ir::StringMatch {
            kind,
            value: if kind == ir::MatchKind::Regex {
                regex
            } else {
                plain
            },
            ignore_case,
        }
    })
}

const HEADER_NAMES: [&str; 4] = ["x-a", "x-b", "x-variant", "Bad Name"];

fn header_match() -> impl Strategy<Value = ir::HeaderMatch> {
    (
        prop::sample::select(&HEADER_NAMES[..]),
        option::of(string_match()),
        any::<bool>(),
    )
        .prop_map(|(name, value, invert)| ir::HeaderMatch {
            name: name.to_owned(),
            value,
            invert,
        })
}

fn route_match() -> impl Strategy<Value = ir::RouteMatch> {
    (
        option::of(string_match()),
        option::of(string_match()),
        option::of(string_match()),
        vec(header_match(), 0..3),
        vec(
            ("[a-z]{1,3}", option::of(string_match()))
                .prop_map(|(name, value)| ir::QueryMatch { name, value }),
            0..2,
        ),
    )
        .prop_map(
            |(path, method, authority, headers, query_params)| ir::RouteMatch {
                path,
                method,
                authority,
                scheme: None,
                headers,
                query_params,
            },
        )
}

fn table_ir() -> impl Strategy<Value = ir::RouteTable> {
    vec((vec(domain(), 0..4), vec(route_match(), 0..4)), 0..4).prop_map(|vhosts| ir::RouteTable {
        name: "t".into(),
        virtual_hosts: vhosts
            .into_iter()
            .enumerate()
            .map(|(v, (domains, matches))| ir::VirtualHost {
                name: format!("vh{v}"),
                domains,
                routes: matches
                    .into_iter()
                    .enumerate()
                    .map(|(r, matcher)| ir::Route {
                        name: format!("vh{v}/r{r}"),
                        matcher,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn headers() -> impl Strategy<Value = http::HeaderMap> {
    vec(
        (
            prop::sample::select(&HEADER_NAMES[..3]),
            vec(any::<u8>(), 0..12),
        ),
        0..5,
    )
    .prop_map(|pairs| {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            // Bytes a header value cannot hold are simply not sent.
            if let Ok(v) = http::HeaderValue::from_bytes(&value) {
                map.append(name, v);
            }
        }
        map
    })
}

fn build(t: &ir::RouteTable) -> Result<Table<String>, BuildError> {
    Table::build(t, |_, r| Ok::<_, BuildError>(r.name.clone()))
}

fn head<'a>(
    authority: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    method: &'a str,
    headers: &'a http::HeaderMap,
) -> RequestHead<'a> {
    RequestHead {
        method,
        path,
        query,
        authority,
        scheme: "http",
        headers,
    }
}

fn matcher(kind: ir::MatchKind, value: &str, ignore_case: bool) -> StringMatcher {
    StringMatcher::build(
        "r",
        &ir::StringMatch {
            kind,
            value: value.to_owned(),
            ignore_case,
        },
    )
    .expect("plain matchers always build")
}

/// A string that sometimes starts with `prefix` (in some casing), sometimes not.
fn maybe_prefixed() -> impl Strategy<Value = (String, String)> {
    (any_path(), any_path(), 0u8..4).prop_map(|(prefix, rest, how)| {
        let s = match how {
            0 => format!("{prefix}{rest}"),
            1 => format!("{}{rest}", prefix.to_ascii_uppercase()),
            2 => prefix.chars().take(prefix.chars().count() / 2).collect(),
            _ => rest,
        };
        (prefix, s)
    })
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn lookups_never_panic(
        t in table_ir(),
        authority in any_host(),
        path in any_path(),
        query in option::of(any::<String>()),
        method in prop_oneof![Just("GET".to_owned()), any::<String>()],
        headers in headers(),
    ) {
        // Some generated tables have invalid regexes: a build error, not a panic.
        if let Ok(table) = build(&t) {
            let h = head(&authority, &path, query.as_deref(), &method, &headers);
            if let Some((vh, route)) = table.find(&h) {
                let own = format!("{}/", vh.name);
                prop_assert!(route.action.starts_with(&own), "{} is not in {}", route.action, vh.name);
            }
            let _ = table.virtual_host(&authority);
        }
    }

    #[test]
    fn strip_port_never_panics_and_removes_only_a_numeric_port(
        s in any::<String>(),
        host in "[a-z0-9.-]{0,12}",
        v6 in "\\[[0-9a-f:]{0,10}\\]",
        port in "[0-9]{1,5}",
    ) {
        let stripped = strip_port(&s);
        prop_assert!(s.starts_with(stripped));
        let with_port = format!("{host}:{port}");
        prop_assert_eq!(strip_port(&with_port), host.as_str());
        prop_assert_eq!(strip_port(&host), host.as_str());
        let v6_with_port = format!("{v6}:{port}");
        prop_assert_eq!(strip_port(&v6_with_port), v6.as_str());
        prop_assert_eq!(strip_port(&v6), v6.as_str());
    }

    #[test]
    fn prefix_match_is_a_byte_prefix_test((prefix, s) in maybe_prefixed()) {
        prop_assert_eq!(
            matcher(ir::MatchKind::Prefix, &prefix, false).matches(&s),
            s.starts_with(&prefix)
        );
        prop_assert_eq!(
            matcher(ir::MatchKind::Prefix, &prefix, true).matches(&s),
            s.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase())
        );
    }

    #[test]
    fn exact_match_is_equality((value, s) in maybe_prefixed()) {
        prop_assert_eq!(matcher(ir::MatchKind::Exact, &value, false).matches(&s), s == value);
        prop_assert_eq!(
            matcher(ir::MatchKind::Exact, &value, true).matches(&s),
            s.to_ascii_lowercase() == value.to_ascii_lowercase()
        );
        // An escaped literal regex is anchored: it matches exactly the literal.
        let literal = matcher(ir::MatchKind::Regex, &regex::escape(&value), false);
        prop_assert_eq!(literal.matches(&s), s == value);
    }

    #[test]
    fn first_matching_prefix_route_wins(
        prefixes in vec("(/[ab]{0,2}){0,3}", 1..6),
        path in "(/[ab]{0,2}){0,4}",
        authority in any_host(),
    ) {
        let t = ir::RouteTable {
            name: "t".into(),
            virtual_hosts: vec![ir::VirtualHost {
                name: "any".into(),
                domains: vec!["*".into()],
                routes: prefixes
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ir::Route {
                        name: i.to_string(),
                        matcher: ir::RouteMatch {
                            path: Some(ir::StringMatch {
                                kind: ir::MatchKind::Prefix,
                                value: p.clone(),
                                ignore_case: false,
                            }),
                            ..Default::default()
                        },
                        ..Default::default()
                    })
                    .collect(),
            }],
        };
        let table = build(&t).expect("prefix routes build");
        let headers = http::HeaderMap::new();
        let found = table
            .find(&head(&authority, &path, None, "GET", &headers))
            .map(|(_, r)| r.action.clone());
        let model = prefixes
            .iter()
            .position(|p| path.starts_with(p.as_str()))
            .map(|i| i.to_string());
        prop_assert_eq!(found, model);
    }

    #[test]
    fn exact_domains_win_and_hosts_ignore_case(
        t in table_ir(),
        pick in any::<prop::sample::Index>(),
        upper in any::<bool>(),
    ) {
        let Ok(table) = build(&t) else { return Ok(()) };
        // An exact domain of some virtual host, asked for in any case.
        let exact: Vec<(usize, String)> = t
            .virtual_hosts
            .iter()
            .enumerate()
            .flat_map(|(i, vh)| vh.domains.iter().map(move |d| (i, d.to_ascii_lowercase())))
            .filter(|(_, d)| d != "*" && !d.starts_with('*'))
            .collect();
        if exact.is_empty() {
            return Ok(());
        }
        let (_, domain) = &exact[pick.index(exact.len())];
        let first_owner = exact.iter().find(|(_, d)| d == domain).map(|(i, _)| *i);
        let asked = if upper { domain.to_ascii_uppercase() } else { domain.clone() };
        let got = table.virtual_host(&asked).map(|vh| vh.name.clone());
        prop_assert_eq!(got, first_owner.map(|i| format!("vh{i}")));
    }

    #[test]
    fn header_presence_and_exact_value_follow_the_model(
        present in option::of("[ -~]{0,8}"),
        wanted in option::of("[ -~]{0,8}"),
        invert in any::<bool>(),
    ) {
        let t = ir::RouteTable {
            name: "t".into(),
            virtual_hosts: vec![ir::VirtualHost {
                name: "any".into(),
                domains: vec!["*".into()],
                routes: vec![ir::Route {
                    name: "r".into(),
                    matcher: ir::RouteMatch {
                        headers: vec![ir::HeaderMatch {
                            name: "X-Variant".into(),
                            value: wanted.clone().map(|value| ir::StringMatch {
                                kind: ir::MatchKind::Exact,
                                value,
                                ignore_case: false,
                            }),
                            invert,
                        }],
                        ..Default::default()
                    },
                    ..Default::default()
                }],
            }],
        };
        let table = build(&t).expect("builds");
        let mut headers = http::HeaderMap::new();
        if let Some(v) = &present {
            headers.insert("x-variant", http::HeaderValue::from_str(v).expect("visible ASCII"));
        }
        let matched = table.find(&head("h", "/", None, "GET", &headers)).is_some();
        // http trims nothing: the value is compared as sent.
        let holds = match (&wanted, &present) {
            (None, p) => p.is_some(),
            (Some(w), Some(p)) => w == p,
            // A missing header reads as "" for withoutHeaders only.
            (Some(w), None) => invert && w.is_empty(),
        };
        prop_assert_eq!(matched, holds != invert);
    }
}
