//! AuthorizationPolicy's verdict, sans-IO: the workload's policies, built
//! once per snapshot, and the facts of one request (or TCP connection) in;
//! allowed or denied (and by which policy) out. The HTTP phase
//! (`http/authz.rs`) and the TCP proxy gather the facts and act on it.
//!
//! Istio's order: a matching DENY policy denies; then, if the workload has
//! any ALLOW policy, one of them must match; with none, the request is
//! allowed. AUDIT and dry-run policies are only counted.

use meshfast_ir as ir;
use regex::Regex;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("AuthorizationPolicy {policy}: bad regex {pattern:?}: {error}")]
    Regex {
        policy: String,
        pattern: String,
        error: regex::Error,
    },
    #[error("AuthorizationPolicy {policy}: {value:?} is not an IP address or CIDR")]
    Cidr { policy: String, value: String },
    #[error("AuthorizationPolicy {policy}: {value:?} is not a port number")]
    Port { policy: String, value: String },
    #[error("AuthorizationPolicy {policy}: {name:?} is not a header name")]
    Header { policy: String, name: String },
}

/// What a request is, as far as policies ask. `request` is None on TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct Facts<'a> {
    /// The peer's SPIFFE ID (`spiffe://...`), when it came over mesh mTLS.
    pub principal: Option<&'a str>,
    pub peer: Option<IpAddr>,
    /// Where the connection was going (its original destination, else the
    /// listener's own address).
    pub destination: Option<SocketAddr>,
    pub sni: Option<&'a str>,
    pub request: Option<RequestFacts<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub authority: &'a str,
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// The verdict, and the policy that gave it (None: denied because no ALLOW
/// policy matched, or allowed because there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub by: Option<usize>,
}

/// The workload's policies, ready to evaluate.
#[derive(Debug)]
pub struct Policies {
    pub policies: Vec<Policy>,
    /// Some enforced ALLOW policy exists: requests none matches are denied.
    has_allow: bool,
    /// Some AUDIT or dry-run policy exists (only then is the counting pass run).
    has_shadow: bool,
}

#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub action: ir::AuthzAction,
    pub dry_run: bool,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    from: Vec<Vec<Condition>>,
    to: Vec<Vec<Condition>>,
    when: Vec<Condition>,
}

#[derive(Debug)]
struct Condition {
    attribute: Attribute,
    values: Vec<Value>,
    not_values: Vec<Value>,
}

#[derive(Debug)]
enum Attribute {
    Principal,
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Sni,
    Host,
    Method,
    Path,
    Header(http::HeaderName),
    /// JWT-derived and dynamic metadata: never present (yet).
    Absent,
}

#[derive(Debug)]
enum Value {
    /// The string, and whether case is ignored (`:authority`).
    Str(StrMatch, String, bool),
    Present,
    Regex(Regex),
    Cidr(IpAddr, u8),
    Port(u16),
}

#[derive(Debug, Clone, Copy)]
enum StrMatch {
    Exact,
    Prefix,
    Suffix,
}

/// One attribute's value for one request.
enum Fact<'a> {
    Str(Cow<'a, str>),
    Ip(IpAddr),
    Port(u16),
    Absent,
}

// === impl Policies ===

impl Policies {
    /// None when there are no policies: such listeners pay nothing.
    pub fn build(policies: &[ir::AuthzPolicy]) -> Result<Option<Self>, AuthzError> {
        if policies.is_empty() {
            return Ok(None);
        }
        let policies = policies
            .iter()
            .map(Policy::build)
            .collect::<Result<Vec<_>, _>>()?;
        let has_allow = policies
            .iter()
            .any(|p| !p.dry_run && p.action == ir::AuthzAction::Allow);
        let has_shadow = policies
            .iter()
            .any(|p| p.dry_run || p.action == ir::AuthzAction::Audit);
        Ok(Some(Self {
            policies,
            has_allow,
            has_shadow,
        }))
    }

    /// Istio's order: DENY, then ALLOW.
    pub fn verdict(&self, facts: &Facts<'_>) -> Verdict {
        let enforced = |action| {
            self.policies
                .iter()
                .enumerate()
                .filter(move |(_, p)| !p.dry_run && p.action == action)
        };
        if let Some((i, _)) = enforced(ir::AuthzAction::Deny).find(|(_, p)| p.matches(facts)) {
            return Verdict {
                allowed: false,
                by: Some(i),
            };
        }
        if !self.has_allow {
            return Verdict {
                allowed: true,
                by: None,
            };
        }
        let by = enforced(ir::AuthzAction::Allow)
            .find(|(_, p)| p.matches(facts))
            .map(|(i, _)| i);
        Verdict {
            allowed: by.is_some(),
            by,
        }
    }

    /// The AUDIT and dry-run policies that match (counted, never enforced).
    pub fn shadow_matches<'s>(&'s self, facts: &'s Facts<'_>) -> impl Iterator<Item = usize> + 's {
        self.policies
            .iter()
            .enumerate()
            .filter(move |(_, p)| {
                self.has_shadow
                    && (p.dry_run || p.action == ir::AuthzAction::Audit)
                    && p.matches(facts)
            })
            .map(|(i, _)| i)
    }
}

// === impl Policy ===

impl Policy {
    fn build(p: &ir::AuthzPolicy) -> Result<Self, AuthzError> {
        let conds = |list: &[ir::AuthzCondition]| {
            list.iter()
                .map(|c| Condition::build(c, &p.name))
                .collect::<Result<Vec<_>, _>>()
        };
        let rules = p
            .rules
            .iter()
            .map(|r| {
                Ok(Rule {
                    from: r.from.iter().map(|f| conds(f)).collect::<Result<_, _>>()?,
                    to: r.to.iter().map(|t| conds(t)).collect::<Result<_, _>>()?,
                    when: conds(&r.when)?,
                })
            })
            .collect::<Result<_, AuthzError>>()?;
        Ok(Self {
            name: p.name.clone(),
            action: p.action,
            dry_run: p.dry_run,
            rules,
        })
    }

    /// Any rule; no rules: nothing (Istio's allow-nothing `spec: {}`).
    fn matches(&self, facts: &Facts<'_>) -> bool {
        self.rules.iter().any(|r| r.matches(facts))
    }
}

impl Rule {
    fn matches(&self, facts: &Facts<'_>) -> bool {
        let entry = |e: &Vec<Condition>| e.iter().all(|c| c.matches(facts));
        (self.from.is_empty() || self.from.iter().any(entry))
            && (self.to.is_empty() || self.to.iter().any(entry))
            && self.when.iter().all(|c| c.matches(facts))
    }
}

// === impl Condition ===

impl Condition {
    fn build(c: &ir::AuthzCondition, policy: &str) -> Result<Self, AuthzError> {
        use ir::AuthzAttribute as A;
        let attribute = match c.attribute {
            A::SourcePrincipal => Attribute::Principal,
            A::SourceIp => Attribute::SourceIp,
            A::RemoteIp => Attribute::RemoteIp,
            A::DestinationIp => Attribute::DestinationIp,
            A::DestinationPort => Attribute::DestinationPort,
            A::Sni => Attribute::Sni,
            A::Host => Attribute::Host,
            A::Method => Attribute::Method,
            A::Path => Attribute::Path,
            A::Header => Attribute::Header(
                http::HeaderName::from_bytes(c.key.to_ascii_lowercase().as_bytes()).map_err(
                    |_| AuthzError::Header {
                        policy: policy.to_owned(),
                        name: c.key.clone(),
                    },
                )?,
            ),
            A::RequestAuth | A::Metadata => Attribute::Absent,
        };
        // `:authority` is case-insensitive (Istio's `hosts`).
        let fold = matches!(attribute, Attribute::Host);
        let values = |vs: &[ir::AuthzValue]| {
            vs.iter()
                .map(|v| Value::build(v, fold, policy))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            values: values(&c.values)?,
            not_values: values(&c.not_values)?,
            attribute,
        })
    }

    fn matches(&self, facts: &Facts<'_>) -> bool {
        let fact = self.attribute.of(facts);
        (self.values.is_empty() || self.values.iter().any(|v| v.matches(&fact)))
            && !self.not_values.iter().any(|v| v.matches(&fact))
    }
}

impl Attribute {
    fn of<'a>(&self, f: &Facts<'a>) -> Fact<'a> {
        let req = f.request.as_ref();
        let opt_str = |s: Option<&'a str>| s.map_or(Fact::Absent, |s| Fact::Str(Cow::Borrowed(s)));
        match self {
            Self::Principal => opt_str(f.principal),
            Self::SourceIp | Self::RemoteIp => f.peer.map_or(Fact::Absent, Fact::Ip),
            Self::DestinationIp => f.destination.map_or(Fact::Absent, |d| Fact::Ip(d.ip())),
            Self::DestinationPort => f.destination.map_or(Fact::Absent, |d| Fact::Port(d.port())),
            Self::Sni => opt_str(f.sni),
            Self::Host => opt_str(req.map(|r| r.authority)),
            Self::Method => opt_str(req.map(|r| r.method)),
            Self::Path => opt_str(req.map(|r| r.path)),
            Self::Header(name) => match req {
                Some(r) => header(r, name),
                None => Fact::Absent,
            },
            Self::Absent => Fact::Absent,
        }
    }
}

/// A header's value; several are joined with `,` (as Envoy's header
/// matcher sees them). Pseudo-headers are compiled to their own attributes.
fn header<'a>(r: &RequestFacts<'a>, name: &http::HeaderName) -> Fact<'a> {
    let mut all = r.headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Fact::Absent;
    };
    let first = String::from_utf8_lossy(first.as_bytes());
    let rest: Vec<_> = all.collect();
    if rest.is_empty() {
        return Fact::Str(first);
    }
    let mut joined = first.into_owned();
    for v in rest {
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Fact::Str(Cow::Owned(joined))
}

// === impl Value ===

impl Value {
    fn build(v: &ir::AuthzValue, fold: bool, policy: &str) -> Result<Self, AuthzError> {
        use ir::AuthzMatch as M;
        let text = |kind| Self::Str(kind, v.value.clone(), fold);
        let regex = |pattern: &str| {
            Regex::new(&format!("^(?:{pattern})$")).map_err(|error| AuthzError::Regex {
                policy: policy.to_owned(),
                pattern: v.value.clone(),
                error,
            })
        };
        Ok(match v.kind {
            M::Exact => text(StrMatch::Exact),
            M::Prefix => text(StrMatch::Prefix),
            M::Suffix => text(StrMatch::Suffix),
            M::Present => Self::Present,
            M::Regex => Self::Regex(regex(&v.value)?),
            M::Template => Self::Regex(regex(&template_regex(&v.value))?),
            M::Cidr => {
                let (ip, len) = cidr(&v.value).ok_or_else(|| AuthzError::Cidr {
                    policy: policy.to_owned(),
                    value: v.value.clone(),
                })?;
                Self::Cidr(ip, len)
            }
            M::Port => Self::Port(v.value.parse().map_err(|_| AuthzError::Port {
                policy: policy.to_owned(),
                value: v.value.clone(),
            })?),
        })
    }

    fn matches(&self, fact: &Fact<'_>) -> bool {
        match (self, fact) {
            (Self::Present, Fact::Str(s)) => !s.is_empty(),
            (Self::Present, Fact::Ip(_) | Fact::Port(_)) => true,
            (Self::Str(kind, v, fold), Fact::Str(s)) => {
                let (s, v) = (s.as_bytes(), v.as_bytes());
                let part = match kind {
                    StrMatch::Exact => Some(s),
                    StrMatch::Prefix => s.get(..v.len()),
                    StrMatch::Suffix => s.len().checked_sub(v.len()).map(|i| &s[i..]),
                };
                part.is_some_and(|p| {
                    if *fold {
                        p.eq_ignore_ascii_case(v)
                    } else {
                        p == v
                    }
                })
            }
            (Self::Regex(r), Fact::Str(s)) => r.is_match(s),
            (Self::Cidr(net, len), Fact::Ip(ip)) => in_cidr(*ip, *net, *len),
            (Self::Port(p), Fact::Port(q)) => p == q,
            _ => false,
        }
    }
}

/// `addr` or `addr/len`.
fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Istio's path templates as Envoy's `uri_template` reads them: `{*}` one
/// path segment, `{**}` any number of segments (`/` included).
fn template_regex(t: &str) -> String {
    const SEGMENT: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]";
    let mut out = String::new();
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{**}") {
            out.push_str(r"[a-zA-Z0-9\-._~%!$&'()+,;:@=/]*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{*}") {
            out.push_str(SEGMENT);
            out.push('+');
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

mod counted;

pub use counted::{Enforcer, UNMATCHED};

#[cfg(test)]
mod tests;
