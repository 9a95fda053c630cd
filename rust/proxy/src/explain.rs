//! `meshfast explain`'s question to the data plane: which route of a listener
//! a request takes, and the first condition each earlier route fails. Asked
//! of the same route table, host lookup and path normalization the workers
//! use, so the answer cannot drift from what is served. No I/O.

use meshfast_ir as ir;
use meshfast_route::{normalize_path, BuildError, RequestHead, Table};
use serde::Serialize;

/// The request, as `explain` is given it.
#[derive(Debug)]
pub struct Question<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// Host or `:authority`, with its port if the client sends one.
    pub authority: &'a str,
    /// Path and query, as sent: normalized here as the workers would.
    pub target: &'a str,
    pub headers: &'a http::HeaderMap,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Answer {
    /// The path routes see (normalized).
    pub path: String,
    /// The virtual host the authority selects; None: no route (404 `NR`).
    pub virtual_host: Option<String>,
    /// The routes of that virtual host up to the one taken, in order.
    pub routes: Vec<Tried>,
    /// Index in `routes` of the route taken; None: none matches (404 `NR`).
    pub matched: Option<usize>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Tried {
    pub name: String,
    /// The first condition it fails (`uri`, `method`, `headers[x-user]`, …);
    /// None for the route taken.
    pub miss: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no listener named {0:?}")]
    NoListener(String),
    #[error("listener {0:?} does not route HTTP")]
    NotHttp(String),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Which route of `listener` in `snap` the request takes, and why not the others.
pub fn explain(
    snap: &ir::Snapshot,
    listener: &str,
    q: &Question<'_>,
) -> Result<Answer, ExplainError> {
    let l = snap
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .ok_or_else(|| ExplainError::NoListener(listener.to_owned()))?;
    let table = l
        .route_table
        .as_ref()
        .and_then(|name| snap.route_tables.iter().find(|t| &t.name == name))
        .ok_or_else(|| ExplainError::NotHttp(listener.to_owned()))?;
    let table = Table::build::<BuildError>(table, |_, _| Ok(()))?;
    let (path, query) = match q.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (q.target, None),
    };
    let path = normalize_path(path, snap.path_normalization.into()).into_owned();
    let head = RequestHead {
        method: q.method,
        path: &path,
        query,
        authority: q.authority,
        scheme: q.scheme,
        headers: q.headers,
    };
    let Some(vh) = table.virtual_host(q.authority) else {
        return Ok(Answer {
            path,
            virtual_host: None,
            routes: Vec::new(),
            matched: None,
        });
    };
    let mut routes = Vec::new();
    let mut matched = None;
    for route in &vh.routes {
        let miss = route.matcher.first_miss(&head);
        let taken = miss.is_none();
        routes.push(Tried {
            name: route.name.clone(),
            miss: miss.map(|m| m.to_string()),
        });
        if taken {
            matched = Some(routes.len() - 1);
            break;
        }
    }
    Ok(Answer {
        path,
        virtual_host: Some(vh.name.clone()),
        routes,
        matched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> ir::Snapshot {
        let route = |name: &str, path: Option<&str>| ir::Route {
            name: name.into(),
            matcher: ir::RouteMatch {
                path: path.map(|p| ir::StringMatch {
                    kind: ir::MatchKind::Prefix,
                    value: p.into(),
                    ignore_case: false,
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        ir::Snapshot {
            listeners: vec![ir::Listener {
                name: "outbound".into(),
                route_table: Some("t".into()),
                ..Default::default()
            }],
            route_tables: vec![ir::RouteTable {
                name: "t".into(),
                virtual_hosts: vec![ir::VirtualHost {
                    name: "reviews".into(),
                    domains: vec!["reviews".into()],
                    routes: vec![route("admin", Some("/admin")), route("rest", None)],
                }],
            }],
            ..Default::default()
        }
    }

    fn ask(target: &str, authority: &str) -> Answer {
        let h = http::HeaderMap::new();
        let q = Question {
            method: "GET",
            scheme: "http",
            authority,
            target,
            headers: &h,
        };
        explain(&snapshot(), "outbound", &q).expect("explain")
    }

    #[test]
    fn the_path_is_normalized_as_the_workers_do_before_routes_see_it() {
        let a = ask("/public/../admin/x?y=1", "reviews");
        assert_eq!(a.path, "/admin/x");
        assert_eq!(a.matched, Some(0));
        let a = ask("/web", "reviews");
        assert_eq!(
            a.routes,
            vec![
                Tried {
                    name: "admin".into(),
                    miss: Some("uri".into())
                },
                Tried {
                    name: "rest".into(),
                    miss: None
                },
            ]
        );
        assert_eq!(a.matched, Some(1));
    }

    #[test]
    fn an_unknown_host_or_listener_is_said_so() {
        let a = ask("/", "ratings");
        assert_eq!((a.virtual_host, a.matched), (None, None));
        let h = http::HeaderMap::new();
        let q = Question {
            method: "GET",
            scheme: "http",
            authority: "reviews",
            target: "/",
            headers: &h,
        };
        assert!(matches!(
            explain(&snapshot(), "inbound", &q),
            Err(ExplainError::NoListener(_))
        ));
    }
}
