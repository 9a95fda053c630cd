//! The built form of a snapshot: everything a worker needs per request,
//! resolved once (regexes compiled, clusters linked, selectors built) so the
//! request path only reads.

use crate::actions::{
    ActionError, CorsRt, DirectRt, FaultRt, MatchedPrefix, RedirectRt, RewriteRt,
};
use crate::cluster::{ClusterRt, EndpointStates};
use crate::headers::{HeaderError, HeaderOps};
use crate::retry::RetryRt;
use crate::stats::{self, Counters, Scope};
use crate::tls::{self, TlsError};
use meshfast_balance::Wrr;
use meshfast_ir as ir;
use meshfast_route::Table;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A filter's time budget per phase when the IR gives none (and the most it may give).
const DEFAULT_FILTER_TIMEOUT_MS: u64 = 1_000;
const MAX_FILTER_TIMEOUT_MS: u64 = 600_000;
const FILTER_GRACE_MS: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Route(#[from] meshfast_route::BuildError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("listener {listener:?}: route table {table:?} does not exist")]
    UnknownRouteTable { listener: String, table: String },
    #[error("duplicate {what} name {name:?}")]
    Duplicate { what: &'static str, name: String },
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Authz(#[from] crate::authz::AuthzError),
}

#[derive(Debug)]
pub struct Runtime {
    pub version: u64,
    /// Some cluster sends to original destinations: accepted connections
    /// must look theirs up.
    pub needs_original_dst: bool,
    /// Indexed by the listener id the [`crate::Proxy`] assigned.
    pub listeners: Vec<Option<ListenerRt>>,
    pub clusters: Vec<Arc<ClusterRt>>,
    /// How request paths are normalized before routing and forwarding.
    pub path_normalization: meshfast_route::Normalization,
    /// Whether `x-envoy-original-dst-host` may name an original destination.
    pub original_dst_header: bool,
    /// Limits on client connections.
    pub downstream: DownstreamRt,
    /// The sidecar's own addresses (every listener of this snapshot, and
    /// those the control layer protects, e.g. its admin API): never an
    /// original destination, so no request is proxied into the sidecar itself.
    pub own_addresses: Vec<std::net::SocketAddr>,
    pub protected: Arc<parking_lot::RwLock<Vec<std::net::SocketAddr>>>,
    /// The Python filter dispatcher that goes with this snapshot's filter ids:
    /// installed together, so a request never mixes one snapshot's ids with
    /// another's filters.
    pub filters: Option<Hook>,
    /// The access log, when on: the proxy's, given to every snapshot.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// The tracer, when tracing is on: the proxy's, given to every snapshot.
    pub tracer: Option<Arc<crate::tracer::Tracer>>,
}

/// A filter hook shared by the snapshots that use it.
#[derive(Clone)]
pub struct Hook(pub Arc<Box<dyn crate::filters::FilterHook>>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

#[derive(Debug)]
pub struct ListenerRt {
    pub name: String,
    pub stats: Arc<Counters>,
    /// Istio's metrics of requests that reached no cluster.
    pub istio: Arc<crate::istio_metrics::IstioSet>,
    pub kind: ListenerKind,
    /// The workload's AuthorizationPolicies (inbound listeners of a workload
    /// that has some; None costs nothing).
    pub authz: Option<Arc<crate::authz::Enforcer>>,
}

pub enum ListenerKind {
    Http(Arc<Table<RouteRt>>, Option<tls::ListenerTls>),
    Tcp(Vec<TcpRouteRt>),
    Tls(Vec<SniRouteRt>),
}

impl std::fmt::Debug for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(_, tls) => write!(f, "Http(tls: {})", tls.is_some()),
            Self::Tcp(r) => write!(f, "Tcp({} routes)", r.len()),
            Self::Tls(r) => write!(f, "Tls({} routes)", r.len()),
        }
    }
}

impl ListenerKind {
    fn build(
        l: &ir::Listener,
        tables: &HashMap<&str, Arc<Table<RouteRt>>>,
        by_name: &HashMap<&str, Arc<ClusterRt>>,
    ) -> Result<Self, BuildError> {
        Ok(match l.protocol {
            ir::ListenerProtocol::Http => {
                let name = l.route_table.clone().unwrap_or_default();
                let table = tables.get(name.as_str()).cloned().ok_or_else(|| {
                    BuildError::UnknownRouteTable {
                        listener: l.name.clone(),
                        table: name,
                    }
                })?;
                let tls = l.tls.as_ref().map(tls::listener_tls).transpose()?;
                ListenerKind::Http(table, tls)
            }
            ir::ListenerProtocol::Tls => ListenerKind::Tls(
                l.sni_routes
                    .iter()
                    .map(|r| {
                        Ok(SniRouteRt {
                            name: r.name.clone(),
                            sni_hosts: r.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                            destinations: Destinations::build(&r.clusters, by_name)?,
                        })
                    })
                    .collect::<Result<_, BuildError>>()?,
            ),
            ir::ListenerProtocol::Tcp => ListenerKind::Tcp(
                l.tcp_routes
                    .iter()
                    .map(|r| {
                        Ok(TcpRouteRt {
                            name: r.name.clone(),
                            destinations: Destinations::build(&r.clusters, by_name)?,
                        })
                    })
                    .collect::<Result<_, BuildError>>()?,
            ),
        })
    }
}

/// Limits on client connections, defaults filled in.
#[derive(Debug, Clone, Copy)]
pub struct DownstreamRt {
    pub request_headers_timeout: Duration,
    pub idle_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub max_connections: usize,
}

impl DownstreamRt {
    pub const REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const MAX_CONNECTIONS: usize = 65_536;

    fn build(d: &ir::Downstream) -> Self {
        let ms = |v: u64, default: Duration| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(v)
            }
        };
        Self {
            request_headers_timeout: ms(
                d.request_headers_timeout_ms,
                Self::REQUEST_HEADERS_TIMEOUT,
            ),
            idle_timeout: ms(d.idle_timeout_ms, Self::IDLE_TIMEOUT),
            stream_idle_timeout: ms(d.stream_idle_timeout_ms, Self::STREAM_IDLE_TIMEOUT),
            max_connections: match d.max_connections {
                0 => Self::MAX_CONNECTIONS,
                n => n as usize,
            },
        }
    }
}

#[derive(Debug)]
pub struct SniRouteRt {
    pub name: String,
    pub sni_hosts: Vec<String>,
    pub destinations: Destinations,
}

#[derive(Debug)]
pub struct RouteRt {
    pub stats: Arc<Counters>,
    pub destinations: Destinations,
    pub timeout: Option<Duration>,
    /// Answers locally instead of forwarding.
    pub local: Option<LocalAction>,
    pub matched: MatchedPrefix,
    pub rewrite: Option<RewriteRt>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub retry: Option<RetryRt>,
    pub fault: Option<FaultRt>,
    pub mirrors: Vec<MirrorRt>,
    pub cors: Option<CorsRt>,
    /// Python filters, by the control layer's ids; empty for most routes.
    pub filters: Vec<u32>,
    /// Answer when a filter fails and the control layer does not say which
    /// (the first filter's setting; 500 by default).
    pub filter_failure: http::StatusCode,
    /// Body bytes the route's filters read (the largest of their limits; 0: none).
    pub filter_request_body: usize,
    pub filter_response_body: usize,
    /// How long a worker waits for the filters of one phase: their budgets
    /// added up, plus a grace second (the control layer enforces each budget;
    /// this bounds a stuck Trio loop).
    pub filter_budget: Duration,
    /// `vhost/route`, as filters see it.
    pub name: String,
}

#[derive(Debug)]
pub enum LocalAction {
    Redirect(RedirectRt),
    Direct(DirectRt),
}

#[derive(Debug)]
pub struct MirrorRt {
    /// None: the mirror's cluster does not exist (counted, never fails the request).
    pub cluster: Option<Arc<ClusterRt>>,
    pub millionths: u32,
}

impl RouteRt {
    fn build(
        vh: &ir::VirtualHost,
        route: &ir::Route,
        registry: &stats::Registry,
        by_name: &HashMap<&str, Arc<ClusterRt>>,
    ) -> Result<Self, BuildError> {
        let a = &route.action;
        let name = route.name.as_str();
        let local = match (&a.redirect, &a.direct_response) {
            (Some(r), _) => Some(LocalAction::Redirect(RedirectRt::build(name, r)?)),
            (None, Some(d)) => Some(LocalAction::Direct(DirectRt::build(name, d)?)),
            (None, None) => None,
        };
        Ok(Self {
            stats: registry.get(
                Scope::Route,
                &route
                    .stat_prefix
                    .clone()
                    .unwrap_or_else(|| format!("{}/{}", vh.name, route.name)),
            ),
            destinations: Destinations::build(&a.clusters, by_name)?,
            timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
            local,
            matched: MatchedPrefix::of(&route.matcher),
            rewrite: a
                .rewrite
                .as_ref()
                .map(|r| RewriteRt::build(name, r))
                .transpose()?,
            request_headers: HeaderOps::build(&a.request_headers)?,
            response_headers: HeaderOps::build(&a.response_headers)?,
            retry: a.retry.as_ref().map(RetryRt::build),
            fault: a
                .fault
                .as_ref()
                .map(|f| FaultRt::build(name, f))
                .transpose()?,
            mirrors: a
                .mirrors
                .iter()
                .map(|m| MirrorRt {
                    cluster: by_name.get(m.cluster.as_str()).cloned(),
                    millionths: m.millionths,
                })
                .collect(),
            cors: a
                .cors
                .as_ref()
                .map(|c| CorsRt::build(name, c))
                .transpose()?,
            filters: a.filters.iter().map(|f| f.id).collect(),
            filter_failure: a
                .filters
                .first()
                .and_then(|f| http::StatusCode::from_u16(f.failure_status).ok())
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
            filter_request_body: a
                .filters
                .iter()
                .map(|f| f.request_body_limit as usize)
                .max()
                .unwrap_or(0),
            filter_response_body: a
                .filters
                .iter()
                .map(|f| f.response_body_limit as usize)
                .max()
                .unwrap_or(0),
            filter_budget: Duration::from_millis(
                a.filters
                    .iter()
                    .map(|f| match f.timeout_ms {
                        0 => DEFAULT_FILTER_TIMEOUT_MS,
                        t => t.min(MAX_FILTER_TIMEOUT_MS),
                    })
                    .sum::<u64>()
                    + FILTER_GRACE_MS,
            ),
            name: format!("{}/{}", vh.name, route.name),
        })
    }
}

#[derive(Debug)]
pub struct TcpRouteRt {
    pub name: String,
    pub destinations: Destinations,
}

/// Weighted clusters; `cluster: None` where the named cluster does not exist
/// (a 503 NC for the requests sent there, as Envoy does).
#[derive(Debug)]
pub struct Destinations {
    clusters: Vec<Destination>,
    picker: Wrr,
}

#[derive(Debug)]
pub struct Destination {
    pub cluster: Option<Arc<ClusterRt>>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

impl Destinations {
    fn build(
        weighted: &[ir::WeightedCluster],
        by_name: &HashMap<&str, Arc<ClusterRt>>,
    ) -> Result<Self, BuildError> {
        let mut clusters = Vec::with_capacity(weighted.len());
        for w in weighted {
            clusters.push(Destination {
                cluster: by_name.get(w.cluster.as_str()).cloned(),
                request_headers: HeaderOps::build(&w.request_headers)?,
                response_headers: HeaderOps::build(&w.response_headers)?,
            });
        }
        let weights: Vec<u32> = weighted.iter().map(|w| w.weight).collect();
        Ok(Self {
            clusters,
            picker: Wrr::new(&weights),
        })
    }

    /// None when there is no destination at all.
    pub fn pick(&self) -> Option<&Destination> {
        let index = match self.clusters.len() {
            0 => return None,
            1 => 0,
            _ => self.picker.next(),
        };
        self.clusters.get(index)
    }
}

// === impl Runtime ===

impl Runtime {
    /// An empty runtime: every request gets a 404 NR until config arrives.
    pub fn empty() -> Self {
        Self {
            filters: None,
            access_log: None,
            tracer: None,
            path_normalization: meshfast_route::Normalization::default(),
            original_dst_header: false,
            downstream: DownstreamRt::build(&ir::Downstream::default()),
            own_addresses: Vec::new(),
            protected: Arc::default(),
            needs_original_dst: false,
            version: 0,
            listeners: Vec::new(),
            clusters: Vec::new(),
        }
    }

    pub fn build(
        snap: &ir::Snapshot,
        listener_ids: &HashMap<String, usize>,
        registry: &stats::Registry,
        loads: &EndpointStates,
    ) -> Result<Self, BuildError> {
        let mut clusters = Vec::with_capacity(snap.clusters.len());
        let mut by_name: HashMap<&str, Arc<ClusterRt>> = HashMap::new();
        for c in &snap.clusters {
            let cluster = Arc::new(ClusterRt::build(c, registry, loads)?);
            if by_name.insert(c.name.as_str(), cluster.clone()).is_some() {
                return Err(BuildError::Duplicate {
                    what: "cluster",
                    name: c.name.clone(),
                });
            }
            clusters.push(cluster);
        }

        let mut tables: HashMap<&str, Arc<Table<RouteRt>>> = HashMap::new();
        for t in &snap.route_tables {
            let table = Table::build(t, |vh, route| RouteRt::build(vh, route, registry, &by_name))?;
            if tables.insert(t.name.as_str(), Arc::new(table)).is_some() {
                return Err(BuildError::Duplicate {
                    what: "route table",
                    name: t.name.clone(),
                });
            }
        }

        // Built once, shared by every inbound listener of their protocol.
        let authz_http = crate::authz::Enforcer::build(&snap.authz, registry)?;
        let authz_tcp = crate::authz::Enforcer::build(&snap.authz_tcp, registry)?;
        let size = listener_ids.values().max().map_or(0, |m| m + 1);
        let mut listeners: Vec<Option<ListenerRt>> = (0..size).map(|_| None).collect();
        for l in &snap.listeners {
            let Some(&id) = listener_ids.get(&l.name) else {
                continue;
            };
            let kind = ListenerKind::build(l, &tables, &by_name)?;
            let authz = match l.protocol {
                _ if !l.authz => None,
                ir::ListenerProtocol::Http => authz_http.clone(),
                ir::ListenerProtocol::Tcp => authz_tcp.clone(),
                // Passthrough TLS: no inbound listener is one.
                ir::ListenerProtocol::Tls => None,
            };
            listeners[id] = Some(ListenerRt {
                name: l.name.clone(),
                stats: registry.get(Scope::Listener, &l.name),
                istio: registry.istio.for_listener(&l.name),
                kind,
                authz,
            });
        }
        // Built: endpoints this snapshot no longer names are forgotten.
        let live = snap
            .clusters
            .iter()
            .flat_map(|c| {
                c.endpoints
                    .iter()
                    .map(|e| (c.name.as_str(), e.address.as_str()))
            })
            .collect();
        loads.retain(&live);
        Ok(Self {
            filters: None,
            access_log: None,
            tracer: None,
            path_normalization: snap.path_normalization.into(),
            original_dst_header: snap.original_dst_header,
            downstream: DownstreamRt::build(&snap.downstream),
            own_addresses: Vec::new(),
            protected: Arc::default(),
            needs_original_dst: clusters.iter().any(|c| c.original_dst),
            version: snap.version,
            listeners,
            clusters,
        })
    }

    /// Whether `dst` is the sidecar itself: one of its addresses, or the port
    /// of one of them on a loopback or unspecified IP (a wildcard listener
    /// answers there too).
    pub fn is_own(&self, dst: std::net::SocketAddr) -> bool {
        // `::ffff:127.0.0.1` is 127.0.0.1: compare IPv4-mapped addresses as IPv4.
        let dst = std::net::SocketAddr::new(dst.ip().to_canonical(), dst.port());
        let protected = self.protected.read();
        self.own_addresses
            .iter()
            .chain(protected.iter())
            .any(|own| {
                own.port() == dst.port()
                    && (own.ip() == dst.ip()
                        || own.ip().is_unspecified()
                        || dst.ip().is_loopback()
                        || dst.ip().is_unspecified())
            })
    }

    pub fn listener(&self, id: usize) -> Option<&ListenerRt> {
        self.listeners.get(id).and_then(Option::as_ref)
    }

    /// `/clusters`: endpoints, weights, live in-flight counts, health and
    /// (with a failure-rate breaker) each endpoint's breaker state and rate;
    /// the durations of the requests to the cluster's host (Istio's buckets).
    pub fn clusters_json(&self) -> String {
        let clusters: Vec<serde_json::Value> = self
            .clusters
            .iter()
            .map(|c| {
                let (bounds, counts) = c.istio.duration_buckets();
                serde_json::json!({
                    "name": c.name,
                    "latency_ms": {"bounds_ms": bounds, "counts": counts},
                    "protocol": format!("{:?}", c.protocol).to_lowercase(),
                    "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
                    "endpoints": c.endpoints.iter().enumerate().map(|(i, e)| {
                        let mut json = serde_json::json!({
                            "address": e.address,
                            "weight": e.weight,
                            "priority": e.priority,
                            "rq_active": e.load.get(),
                            "health": c.health_json(i),
                        });
                        if let Some(b) = c.breaker_json(i) {
                            json["breaker"] = b;
                        }
                        if let Some(ms) = c.ewma_ms(i) {
                            json["ewma_ms"] = serde_json::json!(ms);
                        }
                        json
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({"version": self.version, "clusters": clusters}).to_string()
    }
}

#[cfg(test)]
mod tests;
