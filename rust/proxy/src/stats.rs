//! Counters per listener, route and cluster: atomics bumped on the data path,
//! rendered on demand off it (JSON for `/stats`, Prometheus text).
//!
//! Counters live in a [`Registry`] keyed by scope and name, not in the
//! snapshot, so they keep counting across config swaps.

use crate::flags::ResponseFlag;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Listener,
    Route,
    Cluster,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Listener => "listener",
            Self::Route => "route",
            Self::Cluster => "cluster",
        }
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub rq_total: AtomicU64,
    /// Completed responses by status class: 1xx .. 5xx.
    pub rq_class: [AtomicU64; 5],
    pub rq_active: AtomicU64,
    pub cx_total: AtomicU64,
    pub cx_active: AtomicU64,
    /// Listeners: connections closed at accept, over the connection cap.
    /// Clusters: Envoy's `upstream_cx_overflow`, times a request found the
    /// cluster at `maxConnections` (it waits as pending, or a TCP
    /// connection is closed).
    pub cx_overflow: AtomicU64,
    /// Clusters: Envoy's `upstream_rq_pending_overflow`, requests failed
    /// with `UO` past `http1MaxPendingRequests`.
    pub rq_pending_overflow: AtomicU64,
    /// Clusters: Envoy's `upstream_rq_active_overflow`, requests failed
    /// with `UO` past `http2MaxRequests`.
    pub rq_active_overflow: AtomicU64,
    /// Clusters: Envoy's `upstream_rq_retry_overflow`, retries not made
    /// past `maxRetries`.
    pub rq_retry_overflow: AtomicU64,
    /// Clusters: connection-pool limits' gauges (only limited ones count).
    pub breaker: crate::breaker::Gauges,
    /// Listeners: connections closed for sending no request head in time.
    pub cx_headers_timeout: AtomicU64,
    /// Listeners: connections closed after the idle timeout.
    pub cx_idle_timeout: AtomicU64,
    /// Listeners: connections cut with requests in flight but no byte moving
    /// for the stream idle timeout (a client that stopped reading).
    pub cx_stream_idle_timeout: AtomicU64,
    /// Listeners: HTTP/2 connections closed for overdrawing their budget of
    /// control frames (PING, SETTINGS, PRIORITY, WINDOW_UPDATE floods).
    pub cx_h2_flood: AtomicU64,
    /// Listeners: connections closed for an opening that is neither HTTP/1.x
    /// nor HTTP/2 (an invalid HTTP/2 preface).
    pub cx_protocol_error: AtomicU64,
    /// Body bytes received from the downstream (listener) or sent upstream (cluster).
    pub bytes_in: AtomicU64,
    /// Body bytes sent to the downstream (listener) or received from upstream (cluster).
    pub bytes_out: AtomicU64,
    pub flags: [AtomicU64; ResponseFlag::ALL.len()],
    /// Outlier ejections (clusters).
    pub ejections: AtomicU64,
}

// === impl Counters ===

impl Counters {
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.rq_class[class].fetch_add(1, Relaxed);
    }

    pub fn flag(&self, flag: ResponseFlag) {
        self.flags[flag.index()].fetch_add(1, Relaxed);
    }
}

/// One AuthorizationPolicy's counts, by its `namespace/name`.
#[derive(Debug, Default)]
pub struct PolicyCounters {
    /// Requests (connections) this ALLOW policy let through.
    pub allowed: AtomicU64,
    /// Requests (connections) this DENY policy refused (for
    /// [`crate::authz::UNMATCHED`]: those no ALLOW policy matched).
    pub denied: AtomicU64,
    /// Requests this AUDIT or dry-run policy matched (never enforced).
    pub shadow_matched: AtomicU64,
}

/// Guards an `active` gauge: +1 now, -1 on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Counters>, fn(&Counters) -> &AtomicU64);

impl ActiveGuard {
    pub fn connection(c: &Arc<Counters>) -> Self {
        c.cx_total.fetch_add(1, Relaxed);
        c.cx_active.fetch_add(1, Relaxed);
        Self(c.clone(), |c| &c.cx_active)
    }

    pub fn request(c: &Arc<Counters>) -> Self {
        c.rq_total.fetch_add(1, Relaxed);
        c.rq_active.fetch_add(1, Relaxed);
        Self(c.clone(), |c| &c.rq_active)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Relaxed);
    }
}

/// The access log's lines: written, dropped (its queue was full: the writer
/// is behind, or blocked on a full disk or a pipe nobody reads) and lost to
/// write errors.
#[derive(Debug, Default)]
pub struct LogStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

/// Spans: recorded into the batch, dropped (the batch was full: the
/// exporter is behind), requests not sampled; and the exporter's own counts,
/// reported by it (spans sent, failed after retries, dropped from its queue).
#[derive(Debug, Default)]
pub struct TraceStats {
    pub recorded: AtomicU64,
    pub dropped: AtomicU64,
    pub unsampled: AtomicU64,
    pub exported: AtomicU64,
    pub export_failed: AtomicU64,
    pub export_dropped: AtomicU64,
}

impl TraceStats {
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 6] {
        [
            (
                "spans_recorded",
                "spans recorded by the workers",
                &self.recorded,
            ),
            (
                "spans_dropped",
                "spans dropped: the batch was full (the exporter is behind)",
                &self.dropped,
            ),
            (
                "requests_unsampled",
                "requests not sampled",
                &self.unsampled,
            ),
            (
                "spans_exported",
                "spans the collector accepted",
                &self.exported,
            ),
            (
                "spans_export_failed",
                "spans lost after the export retries failed",
                &self.export_failed,
            ),
            (
                "spans_export_dropped",
                "spans dropped: the exporter's queue was full",
                &self.export_dropped,
            ),
        ]
    }
}

/// Every counter set ever created, by scope and name. Only touched when a
/// snapshot is built and when stats are rendered, never per request.
#[derive(Debug, Default)]
pub struct Registry {
    sets: Mutex<BTreeMap<(Scope, String), Arc<Counters>>>,
    policies: Mutex<BTreeMap<String, Arc<PolicyCounters>>>,
    /// The access log's (zero while it is off).
    pub access_log: Arc<LogStats>,
    /// Istio's standard metrics.
    pub istio: crate::istio_metrics::Istio,
    /// Tracing's (zero while it is off).
    pub tracing: Arc<TraceStats>,
}

// === impl Registry ===

impl Registry {
    pub fn get(&self, scope: Scope, name: &str) -> Arc<Counters> {
        self.sets
            .lock()
            .entry((scope, name.to_owned()))
            .or_default()
            .clone()
    }

    /// The counters of one AuthorizationPolicy.
    pub fn policy(&self, name: &str) -> Arc<PolicyCounters> {
        self.policies
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn policy_snapshot(&self) -> Vec<(String, Arc<PolicyCounters>)> {
        let policies = self.policies.lock();
        policies
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn snapshot(&self) -> Vec<((Scope, String), Arc<Counters>)> {
        self.sets
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn render_json(&self) -> String {
        let mut out = serde_json::Map::new();
        for ((scope, name), c) in self.snapshot() {
            let key = format!("{}s", scope.as_str());
            let group = out
                .entry(key)
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            let mut flags = serde_json::Map::new();
            for f in ResponseFlag::ALL {
                let n = c.flags[f.index()].load(Relaxed);
                if n > 0 {
                    flags.insert(f.as_str().into(), n.into());
                }
            }
            let mut obj = serde_json::json!({
                "rq_total": c.rq_total.load(Relaxed),
                "rq_active": c.rq_active.load(Relaxed),
                "rq_1xx": c.rq_class[0].load(Relaxed),
                "rq_2xx": c.rq_class[1].load(Relaxed),
                "rq_3xx": c.rq_class[2].load(Relaxed),
                "rq_4xx": c.rq_class[3].load(Relaxed),
                "rq_5xx": c.rq_class[4].load(Relaxed),
                "bytes_in": c.bytes_in.load(Relaxed),
                "bytes_out": c.bytes_out.load(Relaxed),
                "response_flags": flags,
            });
            match scope {
                Scope::Listener => {
                    obj["cx_total"] = c.cx_total.load(Relaxed).into();
                    obj["cx_active"] = c.cx_active.load(Relaxed).into();
                    obj["cx_overflow"] = c.cx_overflow.load(Relaxed).into();
                    obj["cx_headers_timeout"] = c.cx_headers_timeout.load(Relaxed).into();
                    obj["cx_idle_timeout"] = c.cx_idle_timeout.load(Relaxed).into();
                    obj["cx_stream_idle_timeout"] = c.cx_stream_idle_timeout.load(Relaxed).into();
                    obj["cx_h2_flood"] = c.cx_h2_flood.load(Relaxed).into();
                    obj["cx_protocol_error"] = c.cx_protocol_error.load(Relaxed).into();
                }
                // Upstream connections opened (pool misses), and outlier ejections.
                Scope::Cluster => {
                    obj["cx_total"] = c.cx_total.load(Relaxed).into();
                    obj["ejections_total"] = c.ejections.load(Relaxed).into();
                    // Connection-pool limits, by Envoy's names.
                    obj["upstream_cx_overflow"] = c.cx_overflow.load(Relaxed).into();
                    obj["upstream_rq_pending_overflow"] =
                        c.rq_pending_overflow.load(Relaxed).into();
                    obj["upstream_rq_active_overflow"] = c.rq_active_overflow.load(Relaxed).into();
                    obj["upstream_rq_retry_overflow"] = c.rq_retry_overflow.load(Relaxed).into();
                    // What the limits count now (only limited resources are counted).
                    let b = &c.breaker;
                    obj["connection_pool"] = serde_json::json!({
                        "connections": b.connections(),
                        "pending": b.pending(),
                        "requests": b.requests(),
                        "retries": b.retries(),
                    });
                }
                Scope::Route => {}
            }
            if let serde_json::Value::Object(g) = group {
                g.insert(name, obj);
            }
        }
        let policies = self.policy_snapshot();
        if !policies.is_empty() {
            let by_name = policies
                .into_iter()
                .map(|(name, c)| {
                    let counts = serde_json::json!({
                        "allowed": c.allowed.load(Relaxed),
                        "denied": c.denied.load(Relaxed),
                        "shadow_matched": c.shadow_matched.load(Relaxed),
                    });
                    (name, counts)
                })
                .collect();
            out.insert("authz_policies".into(), serde_json::Value::Object(by_name));
        }
        let log = &self.access_log;
        out.insert(
            "access_log".into(),
            serde_json::json!({
                "written": log.written.load(Relaxed),
                "dropped": log.dropped.load(Relaxed),
                "write_errors": log.errors.load(Relaxed),
            }),
        );
        let tracing: serde_json::Map<_, _> = self
            .tracing
            .counters()
            .iter()
            .map(|(name, _, n)| ((*name).to_owned(), n.load(Relaxed).into()))
            .collect();
        out.insert("tracing".into(), tracing.into());
        serde_json::Value::Object(out).to_string()
    }

    pub fn render_prometheus(&self) -> String {
        let sets = self.snapshot();
        let mut out = String::with_capacity(4096);
        for scope in [Scope::Listener, Scope::Route, Scope::Cluster] {
            let in_scope: Vec<_> = sets
                .iter()
                .filter(|((sc, _), _)| *sc == scope)
                .map(|((_, name), c)| (escape(name), c))
                .collect();
            if !in_scope.is_empty() {
                write_scope(&mut out, scope, &in_scope);
            }
        }
        let policies = self.policy_snapshot();
        if !policies.is_empty() {
            let _ = writeln!(
                out,
                "# HELP meshfast_authz_policy_requests_total requests (TCP: connections) by AuthorizationPolicy and result"
            );
            let _ = writeln!(out, "# TYPE meshfast_authz_policy_requests_total counter");
            for (name, c) in policies {
                let name = escape(&name);
                for (result, n) in [
                    ("allowed", &c.allowed),
                    ("denied", &c.denied),
                    ("shadow_matched", &c.shadow_matched),
                ] {
                    let n = n.load(Relaxed);
                    let _ = writeln!(
                        out,
                        "meshfast_authz_policy_requests_total{{policy=\"{name}\",result=\"{result}\"}} {n}"
                    );
                }
            }
        }
        self.istio.render(&mut out);
        let log = &self.access_log;
        for (name, help, n) in [
            ("written", "access log lines written", &log.written),
            (
                "dropped",
                "access log lines dropped: the writer's queue was full",
                &log.dropped,
            ),
            (
                "write_errors",
                "access log lines lost to write errors",
                &log.errors,
            ),
        ] {
            let _ = writeln!(out, "# HELP meshfast_access_log_{name}_total {help}");
            let _ = writeln!(out, "# TYPE meshfast_access_log_{name}_total counter");
            let _ = writeln!(out, "meshfast_access_log_{name}_total {}", n.load(Relaxed));
        }
        for (name, help, n) in self.tracing.counters() {
            let _ = writeln!(out, "# HELP meshfast_tracing_{name}_total {help}");
            let _ = writeln!(out, "# TYPE meshfast_tracing_{name}_total counter");
            let _ = writeln!(out, "meshfast_tracing_{name}_total {}", n.load(Relaxed));
        }
        out
    }
}

/// (name, type, help, the scopes that have it, read) of one Prometheus family.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    &'static [Scope],
    fn(&Counters) -> u64,
);

const ALL_SCOPES: &[Scope] = &[Scope::Listener, Scope::Route, Scope::Cluster];
const LISTENER: &[Scope] = &[Scope::Listener];

const CLUSTER: &[Scope] = &[Scope::Cluster];

const FAMILIES: [Family; 15] = [
    (
        "requests_active",
        "gauge",
        "requests in flight",
        ALL_SCOPES,
        |c| c.rq_active.load(Relaxed),
    ),
    (
        "bytes_in_total",
        "counter",
        "body bytes in (from downstream / to upstream)",
        ALL_SCOPES,
        |c| c.bytes_in.load(Relaxed),
    ),
    (
        "bytes_out_total",
        "counter",
        "body bytes out (to downstream / from upstream)",
        ALL_SCOPES,
        |c| c.bytes_out.load(Relaxed),
    ),
    (
        "connections_total",
        "counter",
        "connections opened (downstream: accepted; upstream: dialed)",
        &[Scope::Listener, Scope::Cluster],
        |c| c.cx_total.load(Relaxed),
    ),
    (
        "connections_active",
        "gauge",
        "downstream connections open",
        LISTENER,
        |c| c.cx_active.load(Relaxed),
    ),
    (
        "connections_overflow_total",
        "counter",
        "connections closed at accept: over the connection cap",
        LISTENER,
        |c| c.cx_overflow.load(Relaxed),
    ),
    (
        "connections_headers_timeout_total",
        "counter",
        "connections closed for sending no request head in time",
        LISTENER,
        |c| c.cx_headers_timeout.load(Relaxed),
    ),
    (
        "connections_idle_timeout_total",
        "counter",
        "connections closed after the idle timeout",
        LISTENER,
        |c| c.cx_idle_timeout.load(Relaxed),
    ),
    (
        "connections_stream_idle_timeout_total",
        "counter",
        "connections cut with requests in flight and no byte moving",
        LISTENER,
        |c| c.cx_stream_idle_timeout.load(Relaxed),
    ),
    (
        "connections_h2_flood_total",
        "counter",
        "HTTP/2 connections closed for a flood of control frames",
        LISTENER,
        |c| c.cx_h2_flood.load(Relaxed),
    ),
    (
        "connections_protocol_error_total",
        "counter",
        "connections closed for an opening that is neither HTTP/1.x nor HTTP/2",
        LISTENER,
        |c| c.cx_protocol_error.load(Relaxed),
    ),
    (
        "upstream_cx_overflow_total",
        "counter",
        "requests (or TCP connections) that found the cluster at maxConnections",
        CLUSTER,
        |c| c.cx_overflow.load(Relaxed),
    ),
    (
        "upstream_rq_pending_overflow_total",
        "counter",
        "requests failed with UO past http1MaxPendingRequests",
        CLUSTER,
        |c| c.rq_pending_overflow.load(Relaxed),
    ),
    (
        "upstream_rq_active_overflow_total",
        "counter",
        "requests failed with UO past http2MaxRequests",
        CLUSTER,
        |c| c.rq_active_overflow.load(Relaxed),
    ),
    (
        "upstream_rq_retry_overflow_total",
        "counter",
        "retries not made past maxRetries",
        CLUSTER,
        |c| c.rq_retry_overflow.load(Relaxed),
    ),
];

/// Every family of one scope, for its counter sets (`(escaped name, counters)`).
fn write_scope(out: &mut String, scope: Scope, sets: &[(String, &Arc<Counters>)]) {
    let s = scope.as_str();
    let _ = writeln!(
        out,
        "# HELP meshfast_{s}_requests_total responses by status class"
    );
    let _ = writeln!(out, "# TYPE meshfast_{s}_requests_total counter");
    for (name, c) in sets {
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n = c.rq_class[i].load(Relaxed);
            let _ = writeln!(
                out,
                "meshfast_{s}_requests_total{{{s}=\"{name}\",class=\"{class}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP meshfast_{s}_response_flags_total requests by Envoy response flag (counted on every listener, route and cluster the request reached)"
    );
    let _ = writeln!(out, "# TYPE meshfast_{s}_response_flags_total counter");
    for (name, c) in sets {
        for f in ResponseFlag::ALL {
            let (flag, n) = (f.as_str(), c.flags[f.index()].load(Relaxed));
            let _ = writeln!(
                out,
                "meshfast_{s}_response_flags_total{{{s}=\"{name}\",flag=\"{flag}\"}} {n}"
            );
        }
    }
    for (family, kind, help, scopes, get) in &FAMILIES {
        if !scopes.contains(&scope) {
            continue;
        }
        let _ = writeln!(out, "# HELP meshfast_{s}_{family} {help}");
        let _ = writeln!(out, "# TYPE meshfast_{s}_{family} {kind}");
        for (name, c) in sets {
            let _ = writeln!(out, "meshfast_{s}_{family}{{{s}=\"{name}\"}} {}", get(c));
        }
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_lookup_and_render() {
        let r = Registry::default();
        let c = r.get(Scope::Cluster, "outbound|80||a");
        c.response(503);
        c.flag(ResponseFlag::UpstreamConnectFailure);
        assert!(Arc::ptr_eq(&c, &r.get(Scope::Cluster, "outbound|80||a")));
        let json: serde_json::Value = serde_json::from_str(&r.render_json()).expect("json");
        assert_eq!(json["clusters"]["outbound|80||a"]["rq_5xx"], 1);
        assert_eq!(
            json["clusters"]["outbound|80||a"]["response_flags"]["UF"],
            1
        );
        let prom = r.render_prometheus();
        assert!(prom.contains(
            "meshfast_cluster_requests_total{cluster=\"outbound|80||a\",class=\"5xx\"} 1"
        ));
    }

    #[test]
    fn policy_counters_render() {
        let r = Registry::default();
        let p = r.policy("default/frontend-only");
        p.denied.fetch_add(2, Relaxed);
        assert!(Arc::ptr_eq(&p, &r.policy("default/frontend-only")));
        let json: serde_json::Value = serde_json::from_str(&r.render_json()).expect("json");
        assert_eq!(json["authz_policies"]["default/frontend-only"]["denied"], 2);
        assert!(r.render_prometheus().contains(
            "meshfast_authz_policy_requests_total{policy=\"default/frontend-only\",result=\"denied\"} 2"
        ));
        // No policies, no section.
        let empty: serde_json::Value =
            serde_json::from_str(&Registry::default().render_json()).expect("json");
        assert!(empty.get("authz_policies").is_none());
    }

    #[test]
    fn guards_restore_gauges() {
        let c = Arc::new(Counters::default());
        {
            let _a = ActiveGuard::connection(&c);
            let _b = ActiveGuard::request(&c);
            assert_eq!(c.cx_active.load(Relaxed), 1);
            assert_eq!(c.rq_active.load(Relaxed), 1);
        }
        assert_eq!(c.cx_active.load(Relaxed), 0);
        assert_eq!(c.rq_active.load(Relaxed), 0);
        assert_eq!(c.cx_total.load(Relaxed), 1);
    }
}
