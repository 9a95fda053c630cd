use super::*;
use ir::{AuthzAction, AuthzAttribute as A, AuthzCondition, AuthzMatch as M, AuthzValue};

fn v(kind: M, value: &str) -> AuthzValue {
    AuthzValue {
        kind,
        value: value.into(),
    }
}

fn cond(attribute: A, values: Vec<AuthzValue>, not_values: Vec<AuthzValue>) -> AuthzCondition {
    AuthzCondition {
        attribute,
        key: String::new(),
        values,
        not_values,
    }
}

fn policy(name: &str, action: AuthzAction, rules: Vec<ir::AuthzRule>) -> ir::AuthzPolicy {
    ir::AuthzPolicy {
        name: name.into(),
        action,
        dry_run: false,
        rules,
    }
}

fn when(conds: Vec<AuthzCondition>) -> ir::AuthzRule {
    ir::AuthzRule {
        when: conds,
        ..Default::default()
    }
}

struct Req {
    headers: http::HeaderMap,
    principal: Option<&'static str>,
    path: &'static str,
    method: &'static str,
    authority: &'static str,
}

impl Req {
    fn new() -> Self {
        Self {
            headers: http::HeaderMap::new(),
            principal: None,
            path: "/",
            method: "GET",
            authority: "example.com",
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            principal: self.principal,
            peer: Some("10.1.2.3".parse().expect("parses")),
            destination: Some("127.0.0.1:9080".parse().expect("parses")),
            sni: None,
            request: Some(RequestFacts {
                authority: self.authority,
                method: self.method,
                path: self.path,
                headers: &self.headers,
            }),
        }
    }
}

fn build(p: Vec<ir::AuthzPolicy>) -> Policies {
    Policies::build(&p).expect("builds").expect("has policies")
}

#[test]
fn no_policies_builds_nothing() {
    assert!(Policies::build(&[]).expect("builds").is_none());
}

#[test]
fn allow_nothing_denies_and_allow_all_allows() {
    let r = Req::new();
    let nothing = build(vec![policy("ns/none", AuthzAction::Allow, vec![])]);
    assert_eq!(
        nothing.verdict(&r.facts()),
        Verdict {
            allowed: false,
            by: None
        }
    );
    let all = build(vec![policy(
        "ns/all",
        AuthzAction::Allow,
        vec![ir::AuthzRule::default()],
    )]);
    assert_eq!(
        all.verdict(&r.facts()),
        Verdict {
            allowed: true,
            by: Some(0)
        }
    );
    // An ALLOW-nothing policy beside a DENY one still denies what no ALLOW allows.
    let deny_only = build(vec![policy("ns/d", AuthzAction::Deny, vec![])]);
    assert!(deny_only.verdict(&r.facts()).allowed);
}

#[test]
fn deny_wins_over_allow() {
    let r = Req::new();
    let p = build(vec![
        policy("ns/all", AuthzAction::Allow, vec![ir::AuthzRule::default()]),
        policy(
            "ns/deny",
            AuthzAction::Deny,
            vec![when(vec![cond(
                A::Method,
                vec![v(M::Exact, "GET")],
                vec![],
            )])],
        ),
    ]);
    assert_eq!(
        p.verdict(&r.facts()),
        Verdict {
            allowed: false,
            by: Some(1)
        }
    );
}

#[test]
fn string_kinds_and_not_values() {
    let c = |values, not| {
        build(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![when(vec![cond(A::Path, values, not)])],
        )])
    };
    let mut r = Req::new();
    r.path = "/api/v1/items";
    assert!(
        c(vec![v(M::Prefix, "/api/")], vec![])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        c(vec![v(M::Suffix, "/items")], vec![])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        c(vec![v(M::Present, "")], vec![])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        !c(vec![v(M::Exact, "/api")], vec![])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        !c(vec![], vec![v(M::Prefix, "/api")])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        c(vec![], vec![v(M::Prefix, "/admin")])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        c(vec![v(M::Template, "/api/{*}/items")], vec![])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        c(vec![v(M::Template, "/{**}/items")], vec![])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        !c(vec![v(M::Template, "/{*}/items")], vec![])
            .verdict(&r.facts())
            .allowed
    );
}

#[test]
fn hosts_ignore_case_other_strings_do_not() {
    let host = |value: &str| {
        build(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![when(vec![cond(A::Host, vec![v(M::Suffix, value)], vec![])])],
        )])
    };
    let mut r = Req::new();
    r.authority = "API.Example.COM";
    assert!(host(".example.com").verdict(&r.facts()).allowed);
    let method = build(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![when(vec![cond(
            A::Method,
            vec![v(M::Exact, "get")],
            vec![],
        )])],
    )]);
    assert!(!method.verdict(&r.facts()).allowed);
}

#[test]
fn absent_attributes_match_no_value_and_every_not_value() {
    let r = Req::new();
    let p = |values, not| {
        build(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![when(vec![cond(A::SourcePrincipal, values, not)])],
        )])
    };
    assert!(
        !p(vec![v(M::Present, "")], vec![])
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        p(vec![], vec![v(M::Present, "")])
            .verdict(&r.facts())
            .allowed
    );
    let jwt = build(vec![policy(
        "p",
        AuthzAction::Allow,
        vec![when(vec![cond(
            A::RequestAuth,
            vec![v(M::Present, "")],
            vec![],
        )])],
    )]);
    assert!(!jwt.verdict(&r.facts()).allowed);
}

#[test]
fn principals_by_regex_and_exact() {
    let mut r = Req::new();
    r.principal = Some("spiffe://cluster.local/ns/default/sa/frontend");
    let p = |value: AuthzValue| {
        build(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![when(vec![cond(A::SourcePrincipal, vec![value], vec![])])],
        )])
    };
    assert!(
        p(v(M::Exact, "spiffe://cluster.local/ns/default/sa/frontend"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        p(v(M::Regex, ".*/ns/default/.*"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(!p(v(M::Regex, ".*/ns/other/.*")).verdict(&r.facts()).allowed);
    // Regexes are anchored.
    assert!(!p(v(M::Regex, "ns/default")).verdict(&r.facts()).allowed);
}

#[test]
fn ips_and_ports() {
    let r = Req::new();
    let p = |attribute, value: AuthzValue| {
        build(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![when(vec![cond(attribute, vec![value], vec![])])],
        )])
    };
    assert!(
        p(A::SourceIp, v(M::Cidr, "10.1.0.0/16"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        p(A::RemoteIp, v(M::Cidr, "10.1.2.3"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        !p(A::SourceIp, v(M::Cidr, "10.2.0.0/16"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        p(A::SourceIp, v(M::Cidr, "0.0.0.0/0"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        p(A::DestinationPort, v(M::Port, "9080"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        !p(A::DestinationPort, v(M::Port, "80"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(
        p(A::DestinationIp, v(M::Cidr, "127.0.0.0/8"))
            .verdict(&r.facts())
            .allowed
    );
    assert!(in_cidr(
        "::ffff:10.0.0.1".parse().expect("parses"),
        "10.0.0.0".parse().expect("parses"),
        8
    ));
}

#[test]
fn headers_join_repeated_values() {
    let mut r = Req::new();
    r.headers.append("x-a", "1".parse().expect("parses"));
    r.headers.append("x-a", "2".parse().expect("parses"));
    let p = |value: AuthzValue| {
        build(vec![policy(
            "p",
            AuthzAction::Allow,
            vec![when(vec![AuthzCondition {
                attribute: A::Header,
                key: "X-A".into(),
                values: vec![value],
                not_values: vec![],
            }])],
        )])
    };
    assert!(p(v(M::Exact, "1,2")).verdict(&r.facts()).allowed);
    assert!(!p(v(M::Exact, "1")).verdict(&r.facts()).allowed);
}

#[test]
fn from_entries_or_conditions_and() {
    let mut r = Req::new();
    r.method = "POST";
    let rule = ir::AuthzRule {
        from: vec![
            vec![cond(
                A::SourceIp,
                vec![v(M::Cidr, "192.168.0.0/16")],
                vec![],
            )],
            vec![cond(A::SourceIp, vec![v(M::Cidr, "10.0.0.0/8")], vec![])],
        ],
        to: vec![vec![
            cond(A::Method, vec![v(M::Exact, "POST")], vec![]),
            cond(A::Path, vec![v(M::Exact, "/")], vec![]),
        ]],
        when: vec![],
    };
    let p = build(vec![policy("p", AuthzAction::Allow, vec![rule])]);
    assert!(p.verdict(&r.facts()).allowed);
    r.path = "/x";
    assert!(!p.verdict(&r.facts()).allowed);
}

#[test]
fn audit_and_dry_run_are_counted_not_enforced() {
    let r = Req::new();
    let mut dry = policy("ns/dry", AuthzAction::Deny, vec![ir::AuthzRule::default()]);
    dry.dry_run = true;
    let p = build(vec![
        dry,
        policy(
            "ns/audit",
            AuthzAction::Audit,
            vec![ir::AuthzRule::default()],
        ),
    ]);
    assert!(p.verdict(&r.facts()).allowed);
    assert_eq!(p.shadow_matches(&r.facts()).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn bad_values_are_build_errors() {
    let bad = |attribute, value| {
        Policies::build(&[policy(
            "ns/p",
            AuthzAction::Allow,
            vec![when(vec![cond(attribute, vec![value], vec![])])],
        )])
        .is_err()
    };
    assert!(bad(A::SourceIp, v(M::Cidr, "10.0.0.0/33")));
    assert!(bad(A::SourceIp, v(M::Cidr, "nope")));
    assert!(bad(A::DestinationPort, v(M::Port, "70000")));
    assert!(bad(A::Path, v(M::Regex, "(")));
}
