//! Conditions on one request: path, method, authority, scheme, headers, query.

use crate::BuildError;
use meshfast_ir as ir;

/// What a route may look at. Built by the proxy from the request parts
/// without copying.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// Regexes from config may come from untrusted tenants: bound what they cost.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug)]
pub enum StringMatcher {
    Exact { value: String, ignore_case: bool },
    Prefix { value: String, ignore_case: bool },
    Regex(regex::Regex),
}

// === impl StringMatcher ===

impl StringMatcher {
    pub fn build(route: &str, m: &ir::StringMatch) -> Result<Self, BuildError> {
        Ok(match m.kind {
            ir::MatchKind::Exact => Self::Exact {
                value: m.value.clone(),
                ignore_case: m.ignore_case,
            },
            ir::MatchKind::Prefix => Self::Prefix {
                value: m.value.clone(),
                ignore_case: m.ignore_case,
            },
            ir::MatchKind::Regex => {
                // Istio/Envoy regexes must match the whole value.
                let anchored = format!("^(?:{})$", m.value);
                let re = regex::RegexBuilder::new(&anchored)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .case_insensitive(m.ignore_case)
                    .build()
                    .map_err(|e| BuildError::Regex {
                        route: route.to_owned(),
                        pattern: m.value.clone(),
                        source: Box::new(e),
                    })?;
                Self::Regex(re)
            }
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            Self::Exact {
                value,
                ignore_case: false,
            } => s == value,
            Self::Exact {
                value,
                ignore_case: true,
            } => s.eq_ignore_ascii_case(value),
            Self::Prefix {
                value,
                ignore_case: false,
            } => s.starts_with(value.as_str()),
            Self::Prefix {
                value,
                ignore_case: true,
            } => {
                s.len() >= value.len()
                    && s.as_bytes()[..value.len()].eq_ignore_ascii_case(value.as_bytes())
            }
            Self::Regex(re) => re.is_match(s),
        }
    }
}

#[derive(Debug)]
struct HeaderMatcher {
    name: http::HeaderName,
    /// None: presence.
    value: Option<StringMatcher>,
    invert: bool,
}

#[derive(Debug)]
struct QueryMatcher {
    name: String,
    value: Option<StringMatcher>,
}

/// Every present condition must hold.
#[derive(Debug, Default)]
pub struct RouteMatcher {
    path: Option<StringMatcher>,
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    scheme: Option<StringMatcher>,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryMatcher>,
}

// === impl RouteMatcher ===

impl RouteMatcher {
    pub fn build(route: &str, m: &ir::RouteMatch) -> Result<Self, BuildError> {
        let opt = |s: &Option<ir::StringMatch>| -> Result<Option<StringMatcher>, BuildError> {
            s.as_ref()
                .map(|s| StringMatcher::build(route, s))
                .transpose()
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for h in &m.headers {
            // Header names that are not valid tokens can never be present.
            let Ok(name) = http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
            else {
                continue;
            };
            headers.push(HeaderMatcher {
                name,
                value: opt(&h.value)?,
                invert: h.invert,
            });
        }
        let mut query = Vec::with_capacity(m.query_params.len());
        for q in &m.query_params {
            query.push(QueryMatcher {
                name: q.name.clone(),
                value: opt(&q.value)?,
            });
        }
        Ok(Self {
            path: opt(&m.path)?,
            method: opt(&m.method)?,
            authority: opt(&m.authority)?,
            scheme: opt(&m.scheme)?,
            headers,
            query,
        })
    }

    pub fn matches(&self, head: &RequestHead<'_>) -> bool {
        let check = |m: &Option<StringMatcher>, v: &str| m.as_ref().is_none_or(|m| m.matches(v));
        check(&self.path, head.path)
            && check(&self.method, head.method)
            && check(&self.authority, head.authority)
            && check(&self.scheme, head.scheme)
            && self.headers.iter().all(|h| h.matches(head.headers))
            && self.query.iter().all(|q| q.matches(head.query))
    }

    /// The first condition `head` fails, in the order [`Self::matches`] checks
    /// them; None when it matches. For `meshfast explain`: off the data path,
    /// so `matches` stays a plain conjunction.
    pub fn first_miss(&self, head: &RequestHead<'_>) -> Option<Miss> {
        let fails = |m: &Option<StringMatcher>, v: &str| m.as_ref().is_some_and(|m| !m.matches(v));
        if fails(&self.path, head.path) {
            return Some(Miss::Path);
        }
        if fails(&self.method, head.method) {
            return Some(Miss::Method);
        }
        if fails(&self.authority, head.authority) {
            return Some(Miss::Authority);
        }
        if fails(&self.scheme, head.scheme) {
            return Some(Miss::Scheme);
        }
        if let Some(h) = self.headers.iter().find(|h| !h.matches(head.headers)) {
            return Some(Miss::Header(h.name.to_string()));
        }
        if let Some(q) = self.query.iter().find(|q| !q.matches(head.query)) {
            return Some(Miss::Query(q.name.clone()));
        }
        None
    }
}

/// The condition a request failed (see [`RouteMatcher::first_miss`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    Path,
    Method,
    Authority,
    Scheme,
    /// The header by that name (absent, or a value that does not match).
    Header(String),
    /// The query parameter by that name.
    Query(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path => f.write_str("uri"),
            Self::Method => f.write_str("method"),
            Self::Authority => f.write_str("authority"),
            Self::Scheme => f.write_str("scheme"),
            Self::Header(name) => write!(f, "headers[{name}]"),
            Self::Query(name) => write!(f, "queryParams[{name}]"),
        }
    }
}

impl HeaderMatcher {
    fn matches(&self, headers: &http::HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let result = match (&self.value, values.next()) {
            (None, first) => first.is_some(),
            (Some(m), Some(first)) => {
                // Envoy matches a repeated header against its values joined by ",".
                match values.next() {
                    None => first.to_str().is_ok_and(|v| m.matches(v)),
                    Some(_) => {
                        let joined: Vec<&str> = headers
                            .get_all(&self.name)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .collect();
                        m.matches(&joined.join(","))
                    }
                }
            }
            // withoutHeaders treats a missing header as the empty string.
            (Some(m), None) => self.invert && m.matches(""),
        };
        result != self.invert
    }
}

impl QueryMatcher {
    fn matches(&self, query: Option<&str>) -> bool {
        let found = query.and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == self.name).then_some(v)
            })
        });
        match (&self.value, found) {
            (None, found) => found.is_some(),
            (Some(m), Some(v)) => m.matches(v),
            (Some(_), None) => false,
        }
    }
}
