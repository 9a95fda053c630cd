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
    /// How HTTP request paths are normalized before routing and forwarding.
    pub path_normalization: PathNormalization,
    /// Original-destination clusters may be told their destination by the
    /// client's `x-envoy-original-dst-host` (Envoy's `use_http_header`, off by
    /// default: any client could then pick any address).
    pub original_dst_header: bool,
    /// Limits on client connections.
    pub downstream: Downstream,
    /// The AuthorizationPolicies of this sidecar's workload, evaluated on
    /// listeners with `authz` set: as written, for HTTP listeners.
    pub authz: Vec<AuthzPolicy>,
    /// The same policies in Istio's TCP form (HTTP-only conditions dropped
    /// from DENY and AUDIT rules; ALLOW rules with one left out), for TCP
    /// listeners.
    pub authz_tcp: Vec<AuthzPolicy>,
}

/// Limits on client connections (Envoy's connection-manager timeouts and
/// connection cap). 0 stands for the default of each.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Downstream {
    /// A connection must deliver its first request head this soon after it
    /// was accepted (default 30 s).
    pub request_headers_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed
    /// (Envoy's `idle_timeout`, default 1 h).
    pub idle_timeout_ms: u64,
    /// A request whose client sends no byte of its body for this long ends
    /// with 408 `SI` (Envoy's `stream_idle_timeout`, default 5 min).
    pub stream_idle_timeout_ms: u64,
    /// Client connections open at once, all listeners and workers together;
    /// past it a new connection is closed as it is accepted (default 65,536).
    pub max_connections: u32,
}

/// Istio's meshConfig `pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathNormalization {
    None,
    /// RFC 3986: dot segments removed, unreserved escapes decoded (Istio's default).
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
    /// TLS passed through untouched, routed by the ClientHello's SNI.
    Tls,
}

/// A bound address. HTTP listeners route through `route_table` (after
/// terminating TLS when `tls` is set); TCP listeners pick a destination from
/// `tcp_routes` once per connection; TLS listeners route by SNI with `sni_routes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Listener {
    pub name: String,
    pub address: String,
    pub protocol: ListenerProtocol,
    pub route_table: Option<String>,
    pub tcp_routes: Vec<TcpRoute>,
    pub tls: Option<TlsServer>,
    pub sni_routes: Vec<SniRoute>,
    /// The workload's AuthorizationPolicies apply here (inbound listeners).
    pub authz: bool,
}

/// TLS termination (Gateway `tls.mode` SIMPLE / MUTUAL), from PEM files.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TlsServer {
    pub cert_chain: String,
    pub private_key: String,
    /// Client certificates must chain to these roots (MUTUAL).
    pub client_ca: Option<String>,
    /// `TLSV1_2` or `TLSV1_3`; None: TLS 1.2.
    pub min_version: Option<String>,
    /// Plaintext connections are served too (Istio's PERMISSIVE mesh inbound).
    pub permissive: bool,
    /// Requests carry the client's SPIFFE identity in `x-forwarded-client-cert`
    /// (any the client sent is removed first).
    pub forward_client_cert: bool,
}

/// First match wins: `sni_hosts` are exact names, `*.suffix` or `*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SniRoute {
    pub name: String,
    pub sni_hosts: Vec<String>,
    pub clusters: Vec<WeightedCluster>,
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
    /// Istio's `statPrefix`: the name this route's counters go under.
    pub stat_prefix: Option<String>,
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

/// What a matched route does. `redirect` and `direct_response` answer
/// locally; otherwise the request goes to one of `clusters`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RouteAction {
    pub clusters: Vec<WeightedCluster>,
    /// Whole-request timeout including retries; 0 disables it (Istio's default).
    pub timeout_ms: u64,
    pub redirect: Option<Redirect>,
    pub direct_response: Option<DirectResponse>,
    pub rewrite: Option<Rewrite>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub retry: Option<RetryPolicy>,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
    /// Python filters run on this route, in order (ids given by the control layer).
    pub filters: Vec<FilterRef>,
}

/// A Python `HttpFilter` attached to a route. The core calls the control
/// layer's dispatcher with these ids; it never sees the filter objects.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FilterRef {
    pub id: u32,
    pub name: String,
    /// The status of the local reply when the filter raises (Envoy-style 500).
    pub failure_status: u16,
    /// The filter's time budget per phase (0: the core's default, 1 s).
    pub timeout_ms: u64,
    /// Request body bytes buffered for the filter (0: headers only; more: 413).
    pub request_body_limit: u32,
    /// Response body bytes buffered for the filter (0: headers only; more: 500).
    pub response_body_limit: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
    /// Applied after the route's own header operations.
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

/// Istio's `headers.{request,response}`: `set` overwrites, `add` appends,
/// `remove` deletes; applied in the order remove, set, add.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HeaderOps {
    pub set: Vec<HeaderValue>,
    pub add: Vec<HeaderValue>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    /// Replaces the whole path.
    pub path: Option<String>,
    /// Replaces the matched prefix.
    pub prefix_rewrite: Option<String>,
    pub code: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Option<serde_bytes::ByteBuf>,
}

/// `uri` replaces the matched prefix (the whole path for exact matches, the
/// leading `/` for routes without a path match — Envoy's `prefix_rewrite`);
/// `regex` substitutes over the whole path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub regex: Option<RegexRewrite>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RegexRewrite {
    pub pattern: String,
    /// `\1`-style capture references.
    pub substitution: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RetryPolicy {
    /// Retries after the first try (Istio's `attempts`).
    pub attempts: u32,
    /// 0: no per-try timeout.
    pub per_try_timeout_ms: u64,
    /// Envoy `retry_on` conditions (`5xx`, `gateway-error`, `connect-failure`, ...).
    pub retry_on: Vec<String>,
    pub retriable_status_codes: Vec<u16>,
    pub backoff_base_ms: u64,
    /// Prefer another endpoint for each retry (Envoy's `previous_hosts`).
    pub previous_hosts: bool,
    /// Retry into the next locality priority (Envoy's `previous_priorities`).
    pub remote_localities: bool,
}

/// Percentages are in millionths (Istio's 1e-4 % precision).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Fault {
    pub delay_ms: u64,
    pub delay_millionths: u32,
    pub abort_http_status: Option<u16>,
    pub abort_grpc_status: Option<u32>,
    pub abort_millionths: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Mirror {
    pub cluster: String,
    pub millionths: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cors {
    pub allow_origins: Vec<StringMatch>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_s: Option<u64>,
    pub allow_credentials: Option<bool>,
    /// Istio's `unmatchedPreflights`: FORWARD (true, the default) or IGNORE.
    pub forward_unmatched_preflights: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    RoundRobin,
    #[default]
    LeastRequest,
    Random,
    /// meshfast extension (DestinationRule annotation `meshfast.io/load-balancer`):
    /// power of two choices over peak-EWMA latency × (in-flight + 1), as Linkerd.
    PeakEwma,
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
    /// Consistent hashing; when set it replaces `lb`.
    pub hash: Option<HashPolicy>,
    /// Passive health: eject endpoints that keep failing.
    pub outlier: Option<OutlierDetection>,
    /// Slow start for endpoints new to the cluster.
    pub warmup: Option<Warmup>,
    /// No endpoints: each request goes to its original destination (Istio's
    /// `resolution: NONE` and `loadBalancer.simple: PASSTHROUGH`).
    pub original_dst: bool,
    /// Originate TLS to the endpoints (DestinationRule `tls` SIMPLE / MUTUAL).
    pub tls: Option<UpstreamTls>,
    /// Connection-pool limits (DestinationRule `connectionPool`); None: none.
    pub limits: Option<ConnectionLimits>,
    /// The failure-rate circuit breaker per endpoint (the meshfast extension
    /// annotation `meshfast.io/failure-rate-breaker`); None: off.
    pub failure_rate: Option<FailureRateBreaker>,
}

/// meshfast's failure-rate breaker, per endpoint: an exponentially weighted
/// failure rate with time constant `tau_ms` (under a sustained failure
/// fraction p it follows p·(1 − e^(−t/τ))); above `threshold` (with at least
/// `min_requests` requests in the decayed window) the endpoint gets no
/// traffic for a cool-down that doubles with each opening up to
/// `max_cool_down_ms`, then `probes` requests are let through (half-open) and
/// the breaker closes when they all succeed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FailureRateBreaker {
    pub threshold: f64,
    pub tau_ms: u64,
    pub min_requests: u32,
    pub cool_down_ms: u64,
    pub max_cool_down_ms: u64,
    pub probes: u32,
}

impl Default for FailureRateBreaker {
    fn default() -> Self {
        Self {
            threshold: 0.2,
            tau_ms: 10_000,
            min_requests: 20,
            cool_down_ms: 5_000,
            max_cool_down_ms: 300_000,
            probes: 3,
        }
    }
}

/// Istio's `connectionPool` limits, Envoy's cluster circuit breakers: per
/// cluster per sidecar, shared by all workers. Istio's default for each,
/// 2^32-1 (`u32::MAX`), is no limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConnectionLimits {
    /// `tcp.maxConnections`: upstream connections open at once.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests waiting for a connection.
    pub max_pending_requests: u32,
    /// `http.http2MaxRequests`: requests in flight at once.
    pub max_requests: u32,
    /// `http.maxRetries`: retries in flight at once.
    pub max_retries: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
        }
    }
}

/// TLS origination from PEM files. Without `ca_certs` the system's roots are
/// trusted; without `sni` the request's host is sent (Envoy's auto SNI).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct UpstreamTls {
    pub ca_certs: Option<String>,
    /// Client certificate and key (MUTUAL).
    pub client_cert: Option<String>,
    pub private_key: Option<String>,
    pub sni: Option<String>,
    /// The server certificate must carry one of these DNS names (instead of the SNI).
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
    /// Istio's ISTIO_MUTUAL: the sidecar's mesh identity (`client_cert`,
    /// `private_key`, `ca_certs`) and SPIFFE checks of the server: one of
    /// `subject_alt_names` (URIs), else any identity of `trust_domain`.
    pub istio_mutual: bool,
    pub trust_domain: Option<String>,
}

/// Istio `outlierDetection` with its defaults already applied by compile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OutlierDetection {
    /// Eject after this many consecutive 5xx (or local failures); 0: off.
    pub consecutive_5xx: u32,
    /// Eject after this many consecutive 502/503/504 (or local failures); 0: off.
    pub consecutive_gateway: u32,
    pub interval_ms: u64,
    /// Ejection lasts base × times ejected (capped at 300 s).
    pub base_ejection_ms: u64,
    /// At most this share of endpoints ejected at once (at least one may be).
    pub max_ejection_percent: u32,
    /// Below this share of healthy endpoints, ignore ejections (panic); 0: never.
    pub min_health_percent: u32,
}

/// Istio `warmup` / `warmupDurationSecs`: a new endpoint's share grows from
/// `min_percent` to full over `duration_ms`, shaped by `aggression`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Warmup {
    pub duration_ms: u64,
    pub min_percent: f64,
    pub aggression: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HashSource {
    #[default]
    Header,
    Cookie,
    SourceIp,
    Query,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// Envoy's ring hash (Istio's default), `table_size` = minimum ring size.
    #[default]
    Ring,
    /// Maglev, `table_size` = lookup table size (a prime).
    Maglev,
}

/// Istio's `consistentHash`: what to hash, and how to map hashes to endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HashPolicy {
    pub source: HashSource,
    /// Header, cookie or query parameter name.
    pub name: String,
    /// Cookie only: when set and the cookie is absent, the proxy generates it
    /// with this max-age (0: a session cookie).
    pub cookie_ttl_ms: Option<u64>,
    pub cookie_path: Option<String>,
    pub algorithm: HashAlgorithm,
    pub table_size: u64,
}

/// `address` is `ip:port` or `hostname:port` (resolved when connecting).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Endpoint {
    pub address: String,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    /// `region/zone/subzone`, empty when unknown.
    pub locality: String,
    /// Failover order (0 first): traffic goes to the lowest priority that has
    /// a healthy endpoint. Set by locality failover; 0 otherwise.
    pub priority: u32,
}

/// One AuthorizationPolicy that applies to this sidecar's workload, in the
/// form the core evaluates: Istio's rule shape with every field turned into
/// a [`AuthzCondition`] on one request attribute (Istio's builder does the
/// same toward Envoy's RBAC filter).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthzPolicy {
    /// `namespace/name`: the name its counters go under.
    pub name: String,
    pub action: AuthzAction,
    /// `istio.io/dry-run: "true"`: evaluated and counted, never enforced.
    pub dry_run: bool,
    /// The policy matches when any rule does; no rules: it matches nothing.
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
    /// Counted, never affects the verdict.
    Audit,
}

/// A rule matches when one `from` entry (all its conditions), one `to`
/// entry, and every `when` condition match; an empty list matches anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthzRule {
    pub from: Vec<Vec<AuthzCondition>>,
    pub to: Vec<Vec<AuthzCondition>>,
    pub when: Vec<AuthzCondition>,
}

/// The request attribute a condition reads.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthzAttribute {
    /// The peer's SPIFFE ID (`spiffe://td/ns/NS/sa/SA`), from mesh mTLS.
    #[default]
    SourcePrincipal,
    /// The direct peer's IP (`source.ip`, `ipBlocks`).
    SourceIp,
    /// The original client's IP (`remote.ip`, `remoteIpBlocks`): the peer's
    /// IP, as no proxy in front is trusted (Envoy's `xff_num_trusted_hops: 0`).
    RemoteIp,
    DestinationIp,
    DestinationPort,
    /// The SNI the client sent in its TLS handshake.
    Sni,
    /// `:authority` (Host), compared case-insensitively.
    Host,
    Method,
    /// The normalized path, without the query.
    Path,
    /// The request header `key`.
    Header,
    /// JWT-derived (`requestPrincipals`, `request.auth.*`): absent until
    /// RequestAuthentication is served.
    RequestAuth,
    /// Envoy dynamic metadata (`experimental.envoy.filters.*`): always absent.
    Metadata,
}

/// Holds when the attribute matches one of `values` (or `values` is empty)
/// and none of `not_values`. An absent attribute matches no value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthzCondition {
    pub attribute: AuthzAttribute,
    /// The header name for [`AuthzAttribute::Header`].
    pub key: String,
    pub values: Vec<AuthzValue>,
    pub not_values: Vec<AuthzValue>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthzMatch {
    #[default]
    Exact,
    Prefix,
    Suffix,
    /// Present (and, but for headers, non-empty).
    Present,
    /// Anchored RE2-style regex over the whole value.
    Regex,
    /// `address/len` (or a bare address) against an IP attribute.
    Cidr,
    /// A port number against a port attribute.
    Port,
    /// Istio's path template: `{*}` one segment, `{**}` the rest.
    Template,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AuthzValue {
    pub kind: AuthzMatch,
    pub value: String,
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
