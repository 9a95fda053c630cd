//! The tracer: sampling, and the span batch the workers fill for the Python
//! exporter to take.
//!
//! A request's trace context is read and its upstream headers written in the
//! decode phase ([`Tracer::begin`]); only a sampled request gets a span
//! ([`Open`], boxed: an unsampled one allocates nothing for it), completed
//! in the log phase and recorded when its response body ends. Recording
//! encodes the span into one bounded [`SpanBatch`] under a short lock; the
//! exporter swaps the batch out ([`Tracer::take`]) off the workers. A full
//! batch (the exporter behind or gone) drops spans, counted: a worker never
//! waits for the exporter.

use crate::spans::{SpanBatch, SpanRecord, FLAG_ERROR, FLAG_SAMPLED, FLAG_UPSTREAM};
use crate::stats::TraceStats;
use crate::trace_context::{self, SpanContext};
use http::Request;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The most spans one batch holds before new ones are dropped.
pub const MAX_SPANS: usize = 16384;
/// The most bytes one batch holds (a span is ~200-600 bytes).
pub const MAX_BYTES: usize = 8 << 20;
/// Sampling is decided in millionths.
const MILLION: u32 = 1_000_000;

#[derive(Debug)]
pub struct Tracer {
    /// Millionths of requests sampled when the caller did not decide.
    sampling: u32,
    batch: Mutex<SpanBatch>,
    stats: Arc<TraceStats>,
}

#[derive(Debug, thiserror::Error)]
#[error("trace sampling must be a percentage from 0 to 100, not {0}")]
pub struct SamplingError(pub f64);

// === impl Tracer ===

impl Tracer {
    /// `percent` of requests whose caller did not decide are sampled (0 and
    /// 100 exact).
    pub fn new(percent: f64, stats: Arc<TraceStats>) -> Result<Arc<Self>, SamplingError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(SamplingError(percent));
        }
        Ok(Arc::new(Self {
            sampling: (percent * 10_000.0).round() as u32,
            batch: Mutex::new(SpanBatch::new(MAX_SPANS, MAX_BYTES)),
            stats,
        }))
    }

    fn sample(&self) -> bool {
        self.sampling >= MILLION || (self.sampling > 0 && fastrand::u32(..MILLION) < self.sampling)
    }

    /// Reads the request's trace context and writes this sidecar's span into
    /// its headers (the upstream request's parent); a sampled request gets
    /// its span, opened now.
    pub fn begin<B>(self: &Arc<Self>, req: &mut Request<B>, inbound: bool) -> Option<Box<Open>> {
        let incoming = trace_context::extract(req.headers());
        let span = SpanContext::child(&incoming, || self.sample());
        span.inject(req.headers_mut(), incoming.b3);
        if !span.sampled {
            self.stats.unsampled.fetch_add(1, Relaxed);
            return None;
        }
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Some(Box::new(Open {
            tracer: self.clone(),
            started: Instant::now(),
            upstream: None,
            received: None,
            record: SpanRecord {
                trace_id: span.trace_id,
                span_id: span.span_id,
                parent_id: span.parent_id,
                start_unix_ns: u64::try_from(start.as_nanos()).unwrap_or(u64::MAX),
                kind: u8::from(!inbound),
                flags: FLAG_SAMPLED,
                method: req.method().as_str().to_owned(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned(),
                ..Default::default()
            },
        }))
    }

    fn record(&self, span: &SpanRecord) {
        if self.batch.lock().push(span) {
            self.stats.recorded.fetch_add(1, Relaxed);
        } else {
            self.stats.dropped.fetch_add(1, Relaxed);
        }
    }

    /// The spans recorded since the last call, as one encoded batch (its
    /// header counts the spans dropped meanwhile), and a new batch begun.
    pub fn take(&self) -> Vec<u8> {
        let fresh = SpanBatch::new(MAX_SPANS, MAX_BYTES);
        let full = std::mem::replace(&mut *self.batch.lock(), fresh);
        full.finish()
    }
}

/// A sampled request's span while the request is served.
#[derive(Debug)]
pub struct Open {
    tracer: Arc<Tracer>,
    started: Instant,
    /// The upstream's time to its response head, when one answered.
    pub upstream: Option<Duration>,
    /// The request body's bytes, known or counted as it streams.
    pub received: Option<crate::access_log::Received>,
    pub record: SpanRecord,
}

/// What the log phase knows of a finished request.
pub struct Ending<'a> {
    pub status: u16,
    pub authority: &'a str,
    pub cluster: Option<&'a str>,
    pub route: Option<&'a str>,
    pub request_id: Option<&'a http::HeaderValue>,
    pub response_flags: String,
    pub peer: SocketAddr,
}

// === impl Open ===

impl Open {
    /// The log phase's facts; the span is recorded when [`Open::finish`]
    /// runs (the response body's end).
    pub fn end(&mut self, e: Ending<'_>) {
        let r = &mut self.record;
        r.status = e.status;
        // Istio's span name: the destination's `host:port/*` (its route decorator).
        r.name = format!("{}/*", e.authority);
        r.authority.push_str(e.authority);
        r.cluster.push_str(e.cluster.unwrap_or(""));
        r.route.push_str(e.route.unwrap_or(""));
        if let Some(id) = e.request_id.and_then(|v| v.to_str().ok()) {
            r.request_id.push_str(id);
        }
        r.peer = e.peer.to_string();
        if let Some(d) = self.upstream {
            r.upstream_ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            r.flags |= FLAG_UPSTREAM;
        }
        if e.status >= 500 || e.status == 0 {
            r.flags |= FLAG_ERROR;
        }
        r.response_flags = e.response_flags;
    }

    pub fn sent(&mut self, n: usize) {
        self.record.bytes_out += n as u64;
    }

    /// A try goes to `address` (the last one is the span's `upstream_address`).
    pub fn upstream_host(&mut self, address: &str) {
        self.record.upstream.clear();
        self.record.upstream.push_str(address);
    }

    /// Records the span: its response has ended (or was cut off).
    pub fn finish(mut self: Box<Self>) {
        let elapsed = self.started.elapsed();
        self.record.duration_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(r) = &self.received {
            self.record.bytes_in = r.bytes();
        }
        self.tracer.record(&self.record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn tracer(percent: f64) -> Arc<Tracer> {
        Tracer::new(percent, Arc::default()).expect("valid")
    }

    fn begin(t: &Arc<Tracer>, h: &mut HeaderMap) -> Option<Box<Open>> {
        let mut req = Request::new(());
        *req.headers_mut() = std::mem::take(h);
        let open = t.begin(&mut req, false);
        *h = std::mem::take(req.headers_mut());
        open
    }

    #[test]
    fn sampling_zero_and_hundred_are_exact() {
        let (none, all) = (tracer(0.0), tracer(100.0));
        for _ in 0..1000 {
            assert!(begin(&none, &mut HeaderMap::new()).is_none());
            assert!(begin(&all, &mut HeaderMap::new()).is_some());
        }
        assert!(Tracer::new(100.5, Arc::default()).is_err());
        assert!(Tracer::new(-1.0, Arc::default()).is_err());
        assert!(Tracer::new(f64::NAN, Arc::default()).is_err());
    }

    #[test]
    fn the_callers_decision_wins() {
        let none = tracer(0.0);
        let mut h = HeaderMap::new();
        h.insert("x-b3-sampled", "1".parse().expect("valid"));
        assert!(begin(&none, &mut h).is_some());
        assert_eq!(h["x-b3-sampled"], "1");
        let all = tracer(100.0);
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .expect("valid"),
        );
        assert!(begin(&all, &mut h).is_none());
        let tp = h["traceparent"].to_str().expect("valid");
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-00"), "{tp}");
    }

    #[test]
    fn finished_spans_are_taken_in_one_batch() {
        let t = tracer(100.0);
        let mut h = HeaderMap::new();
        let mut open = begin(&t, &mut h).expect("sampled");
        open.upstream = Some(Duration::from_millis(3));
        open.end(Ending {
            status: 503,
            authority: "a:80",
            cluster: Some("outbound|80||a"),
            route: None,
            request_id: None,
            response_flags: "UF".into(),
            peer: "127.0.0.1:9".parse().expect("valid"),
        });
        let id = open.record.span_id;
        open.finish();
        let bytes = t.take();
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 1);
        let span_at = 12 + 16;
        assert_eq!(
            u64::from_le_bytes(bytes[span_at..span_at + 8].try_into().expect("valid")),
            id
        );
        // The next batch starts empty.
        assert_eq!(t.take().len(), 12);
        assert_eq!(t.stats.recorded.load(Relaxed), 1);
    }
}
