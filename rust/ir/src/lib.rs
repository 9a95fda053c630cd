//! The intermediate representation (IR) of a meshfast config.
//!
//! Python compiles Istio resources into this flat, explicit form and encodes it
//! once with msgpack (`python/meshfast/config/ir.py` mirrors these types field
//! for field). The core never sees an Istio resource: everything it needs to
//! serve a request is spelled out here, already ordered and resolved.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One complete, versioned configuration. Swapped in whole, never patched.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Snapshot {
    pub version: u64,
    pub listeners: Vec<Listener>,
    pub route_tables: Vec<RouteTable>,
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
}

/// A bound address. HTTP listeners route through `route_table`; TCP listeners
/// pick a destination from `tcp_routes` once per connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Listener {
    pub name: String,
    pub address: String,
    pub protocol: ListenerProtocol,
    pub route_table: Option<String>,
    pub tcp_routes: Vec<TcpRoute>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TcpRoute {
    pub name: String,
    pub clusters: Vec<WeightedCluster>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Requests whose Host/:authority equals one of `domains` (lowercase; exact
/// `host` or `host:port`, a `*.suffix` wildcard, or `*`) use these routes, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Route {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
}

/// All present conditions must hold (AND). An empty match matches everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteMatch {
    pub path: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    #[default]
    Exact,
    Prefix,
    /// RE2-style, anchored: the whole value must match.
    Regex,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StringMatch {
    pub kind: MatchKind,
    pub value: String,
    pub ignore_case: bool,
}

/// `value: None` is a presence match. `invert` negates the whole condition
/// (Istio's `withoutHeaders`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HeaderMatch {
    pub name: String,
    pub value: Option<StringMatch>,
    pub invert: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct QueryMatch {
    pub name: String,
    pub value: Option<StringMatch>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteAction {
    pub clusters: Vec<WeightedCluster>,
    /// Whole-request timeout; 0 disables it (Istio's default).
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    RoundRobin,
    #[default]
    LeastRequest,
    Random,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    Tcp,
}

/// Envoy-style names: `outbound|<port>|<subset>|<fqdn>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cluster {
    pub name: String,
    pub lb: LbPolicy,
    pub protocol: UpstreamProtocol,
    pub connect_timeout_ms: u64,
    pub endpoints: Vec<Endpoint>,
}

/// `address` is `ip:port` or `hostname:port` (resolved when connecting).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Endpoint {
    pub address: String,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("snapshot is not valid msgpack IR: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
}

impl Snapshot {
    /// Decodes the msgpack bytes produced by `meshfast.config.ir.encode`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain structs of strings and integers cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_msgpack() {
        let snap = Snapshot {
            version: 3,
            clusters: vec![Cluster {
                name: "outbound|80||a.default.svc.cluster.local".into(),
                endpoints: vec![Endpoint {
                    address: "127.0.0.1:8080".into(),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let back = Snapshot::decode(&snap.encode()).expect("decode");
        assert_eq!(back, snap);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(Snapshot::decode(b"\xc1\xc1").is_err());
    }
}
