//! Request routing, with no I/O: pick the virtual host by Host/:authority, then
//! the first route whose every condition holds (Istio's "first match wins";
//! there is no specificity sorting).
//!
//! A [`Table`] is built once per snapshot from [`meshfast_ir::RouteTable`];
//! lookups allocate nothing except when a route matches on query parameters.

mod matcher;
mod path;

pub use matcher::{Miss, RequestHead, RouteMatcher, StringMatcher};
pub use path::{normalize as normalize_path, Normalization};

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("route {route:?}: invalid regex {pattern:?}: {source}")]
    Regex {
        route: String,
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
}

/// A built route: its matcher plus whatever the caller attached (`A`).
#[derive(Debug)]
pub struct Route<A> {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: A,
}

#[derive(Debug)]
pub struct VirtualHost<A> {
    pub name: String,
    pub routes: Vec<Route<A>>,
}

/// Virtual hosts indexed by domain: exact first, then the longest `*.suffix`
/// wildcard, then `*` (Envoy's order).
#[derive(Debug)]
pub struct Table<A> {
    pub virtual_hosts: Vec<VirtualHost<A>>,
    exact: HashMap<String, usize>,
    /// (suffix including the leading dot, vhost index), longest suffix first.
    wildcards: Vec<(String, usize)>,
    any: Option<usize>,
}

// === impl Table ===

impl<A> Table<A> {
    /// Builds the table; `action` turns each IR route action into the caller's type.
    pub fn build<E>(
        ir: &meshfast_ir::RouteTable,
        mut action: impl FnMut(&meshfast_ir::VirtualHost, &meshfast_ir::Route) -> Result<A, E>,
    ) -> Result<Self, E>
    where
        E: From<BuildError>,
    {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        let mut any = None;
        let mut virtual_hosts = Vec::with_capacity(ir.virtual_hosts.len());
        for (index, vh) in ir.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    any.get_or_insert(index);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    wildcards.push((suffix.to_owned(), index));
                } else {
                    // The first virtual host to claim a domain keeps it.
                    exact.entry(domain).or_insert(index);
                }
            }
            let mut routes = Vec::with_capacity(vh.routes.len());
            for route in &vh.routes {
                routes.push(Route {
                    name: route.name.clone(),
                    matcher: RouteMatcher::build(&route.name, &route.matcher)?,
                    action: action(vh, route)?,
                });
            }
            virtual_hosts.push(VirtualHost {
                name: vh.name.clone(),
                routes,
            });
        }
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(Self {
            virtual_hosts,
            exact,
            wildcards,
            any,
        })
    }

    /// The virtual host serving `authority` (any case; with or without port).
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost<A>> {
        let index = self.find_host(authority)?;
        self.virtual_hosts.get(index)
    }

    fn find_host(&self, authority: &str) -> Option<usize> {
        let lowered;
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        if let Some(&i) = self.exact.get(authority) {
            return Some(i);
        }
        if !self.wildcards.is_empty() {
            // Wildcards match the host part; try with the port first, then without.
            let host = strip_port(authority);
            for candidate in [authority, host] {
                for (suffix, i) in &self.wildcards {
                    if candidate.len() > suffix.len() && candidate.ends_with(suffix.as_str()) {
                        return Some(*i);
                    }
                }
            }
        }
        self.any
    }

    /// The first route of the authority's virtual host that matches `head`.
    pub fn find<'a>(
        &'a self,
        head: &RequestHead<'_>,
    ) -> Option<(&'a VirtualHost<A>, &'a Route<A>)> {
        let vh = self.virtual_host(head.authority)?;
        vh.routes
            .iter()
            .find(|r| r.matcher.matches(head))
            .map(|r| (vh, r))
    }
}

/// `host:port` → `host`; leaves IPv6 literals (`[::1]:80` → `[::1]`) intact.
pub fn strip_port(authority: &str) -> &str {
    if let Some(end) = authority.rfind(']') {
        return &authority[..=end];
    }
    match authority.rfind(':') {
        Some(i) if authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests;
