//! Per-route behaviour beyond forwarding, built once per snapshot from the
//! IR: redirects, direct responses, rewrites, faults and CORS.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;
use meshfast_ir as ir;
use meshfast_route::StringMatcher;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("route {route:?}: invalid rewrite regex {pattern:?}: {source}")]
    Regex {
        route: String,
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("route {route:?}: invalid status {status}")]
    Status { route: String, status: u16 },
    #[error(transparent)]
    Match(#[from] meshfast_route::BuildError),
}

/// How much of the path a prefix rewrite replaces, from the route's path match.
#[derive(Debug, Clone)]
pub enum MatchedPrefix {
    /// Prefix or exact match: this many leading bytes.
    Len(usize),
    /// Regex match: the whole path.
    Whole,
}

impl MatchedPrefix {
    pub fn of(m: &ir::RouteMatch) -> Self {
        match &m.path {
            // Envoy routes without a path match are `prefix: /`.
            None => Self::Len(1),
            Some(p) if p.kind == ir::MatchKind::Regex => Self::Whole,
            Some(p) => Self::Len(p.value.len()),
        }
    }

    /// `path` with the matched prefix replaced by `with` (query kept).
    pub fn replace(&self, path_and_query: &str, with: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let rest = match self {
            Self::Len(n) => path.get(*n..).unwrap_or(""),
            Self::Whole => "",
        };
        let mut out = String::with_capacity(with.len() + rest.len() + 16);
        out.push_str(with);
        out.push_str(rest);
        if out.is_empty() {
            out.push('/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

#[derive(Debug)]
pub struct RedirectRt {
    spec: ir::Redirect,
    pub code: StatusCode,
}

impl RedirectRt {
    pub fn build(route: &str, r: &ir::Redirect) -> Result<Self, ActionError> {
        let code = if r.code == 0 { 301 } else { r.code };
        Ok(Self {
            spec: r.clone(),
            code: StatusCode::from_u16(code).map_err(|_| ActionError::Status {
                route: route.to_owned(),
                status: code,
            })?,
        })
    }

    /// The `Location` for a request to `scheme://authority` + `path_and_query`.
    pub fn location(
        &self,
        scheme: &str,
        authority: &str,
        path_and_query: &str,
        matched: &MatchedPrefix,
    ) -> String {
        let r = &self.spec;
        let scheme = r.scheme.as_deref().unwrap_or(scheme);
        let (req_host, req_port) = split_port(authority);
        let host = r.authority.as_deref().map_or(req_host, |a| split_port(a).0);
        let port = match (r.port, r.derive_port.as_deref()) {
            (Some(p), _) if p > 0 => Some(p.to_string()),
            (_, Some("FROM_REQUEST_PORT")) => req_port.map(str::to_owned),
            (_, Some("FROM_PROTOCOL_DEFAULT")) => None,
            // Changing the scheme drops the old scheme's port; otherwise keep it.
            _ if r.scheme.is_some() || r.authority.is_some() => None,
            _ => req_port.map(str::to_owned),
        };
        let path = if let Some(p) = &r.path {
            // `uri` replaces the whole path; the query string stays.
            match path_and_query.split_once('?') {
                Some((_, q)) => format!("{p}?{q}"),
                None => p.clone(),
            }
        } else if let Some(prefix) = &r.prefix_rewrite {
            matched.replace(path_and_query, prefix)
        } else {
            path_and_query.to_owned()
        };
        match port {
            Some(port) => format!("{scheme}://{host}:{port}{path}"),
            None => format!("{scheme}://{host}{path}"),
        }
    }
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host = meshfast_route::strip_port(authority);
    let port = authority.get(host.len() + 1..).filter(|p| !p.is_empty());
    (host, port)
}

#[derive(Debug)]
pub struct DirectRt {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

impl DirectRt {
    pub fn build(route: &str, d: &ir::DirectResponse) -> Result<Self, ActionError> {
        Ok(Self {
            status: StatusCode::from_u16(d.status).map_err(|_| ActionError::Status {
                route: route.to_owned(),
                status: d.status,
            })?,
            body: d.body.as_ref().map(|b| Bytes::copy_from_slice(b)),
        })
    }
}

#[derive(Debug)]
pub struct RewriteRt {
    pub uri: Option<String>,
    pub authority: Option<HeaderValue>,
    pub regex: Option<(regex::Regex, String)>,
}

impl RewriteRt {
    pub fn build(route: &str, r: &ir::Rewrite) -> Result<Self, ActionError> {
        let regex = match &r.regex {
            None => None,
            Some(rr) => {
                let re = regex::RegexBuilder::new(&rr.pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ActionError::Regex {
                        route: route.to_owned(),
                        pattern: rr.pattern.clone(),
                        source: Box::new(e),
                    })?;
                // RE2/Envoy write captures as \1; the regex crate as ${1}.
                Some((re, to_regex_crate_replacement(&rr.substitution)))
            }
        };
        Ok(Self {
            uri: r.uri.clone(),
            authority: r
                .authority
                .as_deref()
                .and_then(|a| HeaderValue::from_str(a).ok()),
            regex,
        })
    }

    /// The rewritten path (and query), or None when the path stays.
    pub fn path(&self, path_and_query: &str, matched: &MatchedPrefix) -> Option<String> {
        if let Some(uri) = &self.uri {
            return Some(matched.replace(path_and_query, uri));
        }
        let (re, with) = self.regex.as_ref()?;
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut out = re.replace_all(path, with.as_str()).into_owned();
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

fn to_regex_crate_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug)]
pub struct FaultRt {
    pub delay: Option<(Duration, u32)>,
    pub abort: Option<(Abort, u32)>,
}

#[derive(Debug, Clone, Copy)]
pub enum Abort {
    Http(StatusCode),
    Grpc(u32),
}

impl FaultRt {
    pub fn build(route: &str, f: &ir::Fault) -> Result<Self, ActionError> {
        let delay = (f.delay_millionths > 0 && f.delay_ms > 0)
            .then(|| (Duration::from_millis(f.delay_ms), f.delay_millionths));
        let abort = match (f.abort_http_status, f.abort_grpc_status) {
            _ if f.abort_millionths == 0 => None,
            (Some(s), _) => Some((
                Abort::Http(StatusCode::from_u16(s).map_err(|_| ActionError::Status {
                    route: route.to_owned(),
                    status: s,
                })?),
                f.abort_millionths,
            )),
            (None, Some(g)) => Some((Abort::Grpc(g), f.abort_millionths)),
            (None, None) => None,
        };
        Ok(Self { delay, abort })
    }
}

/// True with probability `millionths` / 1,000,000.
pub fn roll(millionths: u32) -> bool {
    millionths >= 1_000_000 || fastrand::u32(..1_000_000) < millionths
}

#[derive(Debug)]
pub struct CorsRt {
    origins: Vec<StringMatcher>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
    pub forward_unmatched_preflights: bool,
}

impl CorsRt {
    pub fn build(route: &str, c: &ir::Cors) -> Result<Self, ActionError> {
        let join = |v: &[String]| {
            (!v.is_empty())
                .then(|| HeaderValue::from_str(&v.join(",")).ok())
                .flatten()
        };
        Ok(Self {
            origins: c
                .allow_origins
                .iter()
                .map(|m| StringMatcher::build(route, m))
                .collect::<Result<_, _>>()?,
            methods: join(&c.allow_methods),
            headers: join(&c.allow_headers),
            expose: join(&c.expose_headers),
            max_age: c.max_age_s.map(HeaderValue::from),
            credentials: c.allow_credentials == Some(true),
            forward_unmatched_preflights: c.forward_unmatched_preflights,
        })
    }

    /// Envoy also lets a matcher that matches the literal `*` allow any origin.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|m| m.matches(origin) || m.matches("*"))
    }

    /// Headers of the answer to an allowed preflight.
    pub fn preflight(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        h.insert("access-control-allow-origin", origin.clone());
        if let Some(v) = &self.methods {
            h.insert("access-control-allow-methods", v.clone());
        }
        if let Some(v) = &self.headers {
            h.insert("access-control-allow-headers", v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert("access-control-max-age", v.clone());
        }
        if self.credentials {
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Headers added to an actual response for an allowed origin.
    pub fn actual(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        h.insert("access-control-allow-origin", origin.clone());
        if let Some(v) = &self.expose {
            h.insert("access-control-expose-headers", v.clone());
        }
        if self.credentials {
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
