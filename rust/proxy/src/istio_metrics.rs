//! Istio's standard metrics (`istio_requests_total`, the request duration and
//! size histograms, the TCP counters) with Istio's labels, rendered at
//! `/stats/prometheus` beside meshfast's own counters.
//!
//! The labels a request cannot change — reporter, this workload, the
//! destination service — are resolved once per cluster (and per listener, for
//! requests that reach no cluster) when a snapshot is built: an
//! [`IstioSet`], kept by the registry across swaps. The labels a request does
//! change (response code and flags, gRPC status, protocol, the client's
//! identity on the inbound side) pick one of the set's [`SLOTS`] series in a
//! fixed open-addressed table, claimed by compare-and-swap: the data path
//! costs atomics only (and one allocation the first time a series is seen).
//! Cardinality is bounded: at most [`SLOTS`] series per set; a request whose
//! labels find the table full is counted in
//! `meshfast_istio_series_overflow_total` and nowhere else.

use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Series per label set (per cluster, per listener).
pub const SLOTS: usize = 64;

/// Istio's (Envoy's default) duration buckets, ms, with Envoy's rendering.
const DURATION_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
const DURATION_LE: [&str; 19] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1.8e+06", "3.6e+06",
];
/// Istio's byte-size buckets.
const BYTES: [u64; 10] = [
    1,
    10,
    100,
    1000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];
const BYTES_LE: [&str; 10] = [
    "1", "10", "100", "1000", "10000", "100000", "1e+06", "1e+07", "1e+08", "1e+09",
];

const UNKNOWN: &str = "unknown";

/// This workload, as the control layer knows it (`--namespace`, `--labels`,
/// `--workload`, the `--certs` identity).
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub app: String,
    pub version: String,
    /// SPIFFE ID; empty: none.
    pub principal: String,
}

/// What a request adds to its set's labels.
#[derive(Debug, Clone, Copy)]
pub struct Dynamic<'a> {
    pub code: u16,
    pub flags: crate::flags::Flags,
    /// `grpc-status` of the response head, when it has one.
    pub grpc_status: Option<u8>,
    pub grpc: bool,
    /// The client's SPIFFE ID (inbound, over mTLS).
    pub peer: Option<&'a str>,
}

impl Dynamic<'_> {
    fn key(&self, destination: bool) -> u64 {
        let mut k = u64::from(self.code)
            | u64::from(self.flags.bits()) << 16
            | u64::from(self.grpc_status.map_or(0, |g| u16::from(g) + 1)) << 32
            | u64::from(self.grpc) << 41;
        if let Some(p) = self.peer.filter(|_| destination) {
            // Odd multiplier: a bijection, so one identity's keys stay distinct;
            // two identities meet only by a 64-bit hash collision.
            k = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hash(p.as_bytes());
        }
        k | 1 << 63 // 0 is an empty slot
    }
}

/// FxHash-style: for telling identities apart in a key, not for security.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, b| {
        (h.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

/// The registry's part: this workload, and every label set ever resolved.
#[derive(Debug, Default)]
pub struct Istio {
    workload: RwLock<Workload>,
    sets: Mutex<BTreeMap<String, Arc<IstioSet>>>,
    overflow: Arc<AtomicU64>,
}

impl Istio {
    /// Applies to label sets resolved from now on (call before the first install).
    pub fn set_workload(&self, w: Workload) {
        *self.workload.write() = w;
    }

    /// The set of requests (and TCP connections) sent to `cluster`.
    pub fn for_cluster(&self, cluster: &str) -> Arc<IstioSet> {
        let mut parts = cluster.split('|');
        let direction = parts.next().unwrap_or_default();
        let host = parts.nth(2).filter(|h| !h.is_empty());
        self.set(direction == "inbound", host)
    }

    /// The set of requests that reached no cluster on `listener`.
    pub fn for_listener(&self, listener: &str) -> Arc<IstioSet> {
        self.set(listener.starts_with("inbound"), None)
    }

    fn set(&self, destination: bool, host: Option<&str>) -> Arc<IstioSet> {
        let fixed = Fixed::new(&self.workload.read(), destination, host);
        let key = fixed.key();
        self.sets
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(IstioSet::new(fixed, self.overflow.clone())))
            .clone()
    }

    pub fn render(&self, out: &mut String) {
        let sets: Vec<_> = self.sets.lock().values().cloned().collect();
        let series: Vec<&Series> = sets.iter().flat_map(|s| s.all_series()).collect();
        family(out, "istio_requests_total", "counter", "requests");
        for s in &series {
            let _ = writeln!(
                out,
                "istio_requests_total{{{}}} {}",
                s.labels,
                s.requests.load(Relaxed)
            );
        }
        family(
            out,
            "istio_request_duration_milliseconds",
            "histogram",
            "request duration, to the response's last byte",
        );
        for s in &series {
            s.duration.render(
                out,
                "istio_request_duration_milliseconds",
                &s.labels,
                &DURATION_LE,
                |sum| format!("{}", sum as f64 / 1000.0),
            );
        }
        for (name, help, pick) in [
            (
                "istio_request_bytes",
                "request body bytes",
                (|s: &Series| &s.request_bytes) as fn(&Series) -> &Histogram<10>,
            ),
            ("istio_response_bytes", "response body bytes", |s| {
                &s.response_bytes
            }),
        ] {
            family(out, name, "histogram", help);
            for s in &series {
                pick(s).render(out, name, &s.labels, &BYTES_LE, |sum| sum.to_string());
            }
        }
        let tcp: Vec<_> = sets
            .iter()
            .filter(|s| s.tcp.opened.load(Relaxed) > 0)
            .collect();
        for (name, help, get) in [
            (
                "istio_tcp_connections_opened_total",
                "TCP connections opened",
                (|t: &Tcp| &t.opened) as fn(&Tcp) -> &AtomicU64,
            ),
            (
                "istio_tcp_connections_closed_total",
                "TCP connections closed",
                |t| &t.closed,
            ),
            (
                "istio_tcp_sent_bytes_total",
                "bytes sent to the downstream",
                |t| &t.sent,
            ),
            (
                "istio_tcp_received_bytes_total",
                "bytes received from the downstream",
                |t| &t.received,
            ),
        ] {
            family(out, name, "counter", help);
            for s in &tcp {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    s.tcp_labels,
                    get(&s.tcp).load(Relaxed)
                );
            }
        }
        family(
            out,
            "meshfast_istio_series_overflow_total",
            "counter",
            "requests not counted in Istio's metrics: their label set's series table was full",
        );
        let _ = writeln!(
            out,
            "meshfast_istio_series_overflow_total {}",
            self.overflow.load(Relaxed)
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The labels fixed for a set, in Istio's order where they come.
#[derive(Debug, Clone)]
struct Fixed {
    destination: bool,
    /// `reporter` .. `source_workload_namespace`, as rendered; for a
    /// destination reporter the client's namespace is per series.
    source_workload: String,
    source_namespace: String,
    /// The own principal (source reporter); per series otherwise.
    source_principal: String,
    source_app: String,
    source_version: String,
    destination_workload: String,
    destination_namespace: String,
    destination_principal: String,
    destination_service: String,
    destination_service_name: String,
    destination_service_namespace: String,
    destination_version: String,
}

impl Fixed {
    fn new(w: &Workload, destination: bool, host: Option<&str>) -> Self {
        let or_unknown = |s: &str| {
            if s.is_empty() {
                UNKNOWN.to_owned()
            } else {
                s.to_owned()
            }
        };
        let (service, name, namespace) = match host {
            Some(h) => {
                // `name.namespace.svc.…` is a Kubernetes service; other hosts
                // (ServiceEntries) are their own name.
                let labels: Vec<&str> = h.split('.').collect();
                match labels.as_slice() {
                    [name, ns, "svc", ..] => (h.to_owned(), (*name).to_owned(), (*ns).to_owned()),
                    _ => (h.to_owned(), h.to_owned(), UNKNOWN.to_owned()),
                }
            }
            None => (UNKNOWN.into(), UNKNOWN.into(), UNKNOWN.into()),
        };
        let me = (
            or_unknown(&w.name),
            or_unknown(&w.namespace),
            or_unknown(&w.principal),
            or_unknown(&w.app),
            or_unknown(&w.version),
        );
        let unknown = || UNKNOWN.to_owned();
        if destination {
            Self {
                destination,
                source_workload: unknown(),
                source_namespace: unknown(),
                source_principal: unknown(),
                source_app: unknown(),
                source_version: unknown(),
                destination_workload: me.0,
                destination_namespace: me.1,
                destination_principal: me.2,
                destination_service: service,
                destination_service_name: name,
                destination_service_namespace: namespace,
                destination_version: me.4,
            }
        } else {
            Self {
                destination,
                source_workload: me.0,
                source_namespace: me.1,
                source_principal: me.2,
                source_app: me.3,
                source_version: me.4,
                destination_workload: unknown(),
                destination_namespace: unknown(),
                destination_principal: unknown(),
                destination_service: service,
                destination_service_name: name,
                destination_service_namespace: namespace,
                destination_version: unknown(),
            }
        }
    }

    fn key(&self) -> String {
        format!("{self:?}")
    }

    /// Every label, with the request's (`peer`: the client's identity on the
    /// inbound side) and the protocol's.
    fn render(&self, peer: Option<&str>, rest: &str, policy: &str) -> String {
        let (principal, namespace) = match (self.destination, peer) {
            (true, Some(p)) => (
                p.to_owned(),
                spiffe_namespace(p).unwrap_or(UNKNOWN).to_owned(),
            ),
            (true, None) => (UNKNOWN.to_owned(), UNKNOWN.to_owned()),
            (false, _) => (self.source_principal.clone(), self.source_namespace.clone()),
        };
        let e = |s: &str| crate::stats::escape(s);
        format!(
            "reporter=\"{}\",source_workload=\"{}\",source_workload_namespace=\"{}\",\
             source_principal=\"{}\",source_app=\"{}\",source_version=\"{}\",\
             destination_workload=\"{}\",destination_workload_namespace=\"{}\",\
             destination_principal=\"{}\",destination_service=\"{}\",\
             destination_service_name=\"{}\",destination_service_namespace=\"{}\",\
             destination_version=\"{}\",{rest},connection_security_policy=\"{policy}\"",
            if self.destination {
                "destination"
            } else {
                "source"
            },
            e(&self.source_workload),
            e(&namespace),
            e(&principal),
            e(&self.source_app),
            e(&self.source_version),
            e(&self.destination_workload),
            e(&self.destination_namespace),
            e(&self.destination_principal),
            e(&self.destination_service),
            e(&self.destination_service_name),
            e(&self.destination_service_namespace),
            e(&self.destination_version),
        )
    }
}

/// `spiffe://td/ns/NS/sa/SA` → NS.
fn spiffe_namespace(id: &str) -> Option<&str> {
    let mut parts = id.strip_prefix("spiffe://")?.split('/').skip(1);
    (parts.next()? == "ns").then_some(())?;
    parts.next()
}

/// The requests and TCP connections of one label set.
#[derive(Debug)]
pub struct IstioSet {
    fixed: Fixed,
    slots: Box<[Slot]>,
    overflow: Arc<AtomicU64>,
    pub tcp: Tcp,
    tcp_labels: String,
}

#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    series: OnceLock<Box<Series>>,
}

/// TCP connections (one set of counters: no response code).
#[derive(Debug, Default)]
pub struct Tcp {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

impl IstioSet {
    fn new(fixed: Fixed, overflow: Arc<AtomicU64>) -> Self {
        let policy = if fixed.destination { "none" } else { UNKNOWN };
        let tcp_labels = fixed.render(
            None,
            "request_protocol=\"tcp\",response_flags=\"-\"",
            policy,
        );
        Self {
            fixed,
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            overflow,
            tcp: Tcp::default(),
            tcp_labels,
        }
    }

    /// The series of `d`: found, claimed, or None (the table is full: counted).
    pub fn series(&self, d: &Dynamic<'_>) -> Option<u16> {
        let key = d.key(self.fixed.destination);
        let start = (key ^ key >> 29) as usize % SLOTS;
        for i in 0..SLOTS {
            let index = (start + i) % SLOTS;
            let slot = &self.slots[index];
            let mut found = slot.key.load(Acquire);
            if found == 0 {
                found = match slot.key.compare_exchange(0, key, AcqRel, Acquire) {
                    Ok(_) => key,
                    Err(other) => other,
                };
            }
            if found == key {
                slot.series
                    .get_or_init(|| Box::new(Series::new(self.labels(d))));
                return Some(index as u16);
            }
        }
        self.overflow.fetch_add(1, Relaxed);
        None
    }

    fn labels(&self, d: &Dynamic<'_>) -> String {
        let grpc = d.grpc_status.map(|g| g.to_string()).unwrap_or_default();
        let flags = if d.flags.is_empty() {
            "-".to_owned()
        } else {
            d.flags.render()
        };
        let rest = format!(
            "request_protocol=\"{}\",response_code=\"{}\",grpc_response_status=\"{grpc}\",response_flags=\"{flags}\"",
            if d.grpc { "grpc" } else { "http" },
            d.code,
        );
        let policy = match (self.fixed.destination, d.peer) {
            (false, _) => UNKNOWN,
            (true, Some(_)) => "mutual_tls",
            (true, None) => "none",
        };
        self.fixed.render(d.peer, &rest, policy)
    }

    /// Counts one finished request in series `index`.
    pub fn record(&self, index: u16, duration: Duration, received: u64, sent: u64) {
        let Some(s) = self
            .slots
            .get(usize::from(index))
            .and_then(|s| s.series.get())
        else {
            return;
        };
        s.requests.fetch_add(1, Relaxed);
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let ms = us as f64 / 1000.0;
        s.duration
            .observe(DURATION_MS.iter().position(|le| ms <= *le), us);
        s.request_bytes
            .observe(BYTES.iter().position(|le| received <= *le), received);
        s.response_bytes
            .observe(BYTES.iter().position(|le| sent <= *le), sent);
    }

    /// Every request's duration so far, summed over the set's series: counts
    /// per bucket of [`DURATION_MS`] and a last one above them all (the
    /// dashboard's latency percentiles).
    pub fn duration_buckets(&self) -> (&'static [f64], Vec<u64>) {
        let mut counts = vec![0u64; DURATION_MS.len() + 1];
        for s in self.all_series() {
            let mut within = 0;
            for (i, b) in s.duration.buckets.iter().enumerate() {
                let n = b.load(Relaxed);
                counts[i] += n;
                within += n;
            }
            counts[DURATION_MS.len()] += s.duration.count.load(Relaxed).saturating_sub(within);
        }
        (&DURATION_MS, counts)
    }

    fn all_series(&self) -> impl Iterator<Item = &Series> {
        self.slots
            .iter()
            .filter_map(|s| s.series.get().map(|b| &**b))
    }
}

#[derive(Debug)]
struct Series {
    labels: String,
    requests: AtomicU64,
    duration: Histogram<19>,
    request_bytes: Histogram<10>,
    response_bytes: Histogram<10>,
}

impl Series {
    fn new(labels: String) -> Self {
        Self {
            labels,
            requests: AtomicU64::new(0),
            duration: Histogram::default(),
            request_bytes: Histogram::default(),
            response_bytes: Histogram::default(),
        }
    }
}

/// Counts per bucket (not cumulative: rendering adds them up), the sum and
/// the count.
#[derive(Debug)]
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    sum: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// `bucket`: the first whose bound holds the value (None: past the last).
    fn observe(&self, bucket: Option<usize>, sum: u64) {
        if let Some(b) = bucket {
            self.buckets[b].fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(sum, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(
        &self,
        out: &mut String,
        name: &str,
        labels: &str,
        le: &[&str; N],
        sum: impl Fn(u64) -> String,
    ) {
        let mut cumulative = 0;
        for (b, le) in self.buckets.iter().zip(le) {
            cumulative += b.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            sum(self.sum.load(Relaxed))
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{Flags, ResponseFlag};

    fn ok(code: u16) -> Dynamic<'static> {
        Dynamic {
            code,
            flags: Flags::default(),
            grpc_status: None,
            grpc: false,
            peer: None,
        }
    }

    #[test]
    fn series_are_found_again_and_the_table_is_bounded() {
        let istio = Istio::default();
        let set = istio.for_cluster("outbound|80||reviews.default.svc.cluster.local");
        let a = set.series(&ok(200)).expect("room");
        assert_eq!(set.series(&ok(200)), Some(a));
        let mut uh = ok(503);
        uh.flags.insert(ResponseFlag::NoHealthyUpstream);
        assert_ne!(set.series(&uh), Some(a));
        let mut claimed = 2;
        for code in 300..600 {
            if set.series(&ok(code)).is_some() {
                claimed += 1;
            }
        }
        assert_eq!(claimed, SLOTS, "every slot used once");
        assert!(istio.overflow.load(Relaxed) > 0);
        // The same cluster resolves to the same set (counters survive swaps).
        let again = istio.for_cluster("outbound|80||reviews.default.svc.cluster.local");
        assert!(Arc::ptr_eq(&set, &again));
    }

    #[test]
    fn a_request_renders_with_istios_labels_and_buckets() {
        let istio = Istio::default();
        istio.set_workload(Workload {
            namespace: "shop".into(),
            name: "front".into(),
            app: "front".into(),
            version: "v2".into(),
            principal: String::new(),
        });
        let set = istio.for_cluster("outbound|9080|v1|reviews.default.svc.cluster.local");
        let i = set.series(&ok(200)).expect("room");
        set.record(i, Duration::from_micros(7_500), 0, 1234);
        let mut out = String::new();
        istio.render(&mut out);
        let labels = "reporter=\"source\",source_workload=\"front\",source_workload_namespace=\"shop\",\
            source_principal=\"unknown\",source_app=\"front\",source_version=\"v2\",\
            destination_workload=\"unknown\",destination_workload_namespace=\"unknown\",\
            destination_principal=\"unknown\",destination_service=\"reviews.default.svc.cluster.local\",\
            destination_service_name=\"reviews\",destination_service_namespace=\"default\",\
            destination_version=\"unknown\",request_protocol=\"http\",response_code=\"200\",\
            grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"";
        assert!(
            out.contains(&format!("istio_requests_total{{{labels}}} 1\n")),
            "{out}"
        );
        let d = "istio_request_duration_milliseconds";
        assert!(out.contains(&format!("{d}_bucket{{{labels},le=\"5\"}} 0\n")));
        assert!(out.contains(&format!("{d}_bucket{{{labels},le=\"10\"}} 1\n")));
        assert!(out.contains(&format!("{d}_sum{{{labels}}} 7.5\n")));
        let r = "istio_response_bytes";
        assert!(out.contains(&format!("{r}_bucket{{{labels},le=\"1000\"}} 0\n")));
        assert!(out.contains(&format!("{r}_bucket{{{labels},le=\"10000\"}} 1\n")));
        assert!(out.contains(&format!(
            "istio_request_bytes_bucket{{{labels},le=\"1\"}} 1\n"
        )));
    }

    #[test]
    fn inbound_takes_the_clients_identity() {
        assert_eq!(
            spiffe_namespace("spiffe://cluster.local/ns/web/sa/x"),
            Some("web")
        );
        assert_eq!(spiffe_namespace("spiffe://cluster.local/x"), None);
        let istio = Istio::default();
        let set = istio.for_listener("inbound");
        let peer = Dynamic {
            peer: Some("spiffe://cluster.local/ns/web/sa/x"),
            ..ok(200)
        };
        let (a, b) = (set.series(&peer), set.series(&ok(200)));
        assert_ne!(a, b);
        let mut out = String::new();
        set.record(a.expect("room"), Duration::ZERO, 0, 0);
        istio.render(&mut out);
        assert!(out.contains("reporter=\"destination\",source_workload=\"unknown\",source_workload_namespace=\"web\",source_principal=\"spiffe://cluster.local/ns/web/sa/x\""), "{out}");
        assert!(
            out.contains("connection_security_policy=\"mutual_tls\"} 1"),
            "{out}"
        );
    }
}
