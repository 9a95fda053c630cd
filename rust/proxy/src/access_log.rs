//! The access log: one JSON line per request, with Envoy's (and Istio's
//! default JSON format's) field names.
//!
//! The worker only collects facts into an [`Entry`] — header values are
//! `Bytes` clones, timings are clock reads — and hands it, at the end of the
//! response body, to a bounded queue. A dedicated thread formats and writes
//! the lines, so a full disk, a slow file or a pipe nobody reads never stalls
//! a request: when the queue is full the entry is dropped and counted.
//! When the log is off nothing of this exists: no entry is allocated.

use crate::cluster::ClusterRt;
use crate::flags::Flags;
use crate::stats::LogStats;
use http::{HeaderValue, Method, Uri, Version};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Entries waiting for the writer; past this they are dropped (and counted).
pub const QUEUE: usize = 8192;

macro_rules! fields {
    ($($variant:ident = $name:literal,)*) => {
        /// A field of a line.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Field { $($variant,)* }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }
        }
    };
}

fields! {
    StartTime = "start_time",
    Method = "method",
    Path = "path",
    Protocol = "protocol",
    ResponseCode = "response_code",
    ResponseFlags = "response_flags",
    BytesReceived = "bytes_received",
    BytesSent = "bytes_sent",
    Duration = "duration",
    UpstreamServiceTime = "upstream_service_time",
    UpstreamHost = "upstream_host",
    UpstreamCluster = "upstream_cluster",
    RouteName = "route_name",
    XForwardedFor = "x_forwarded_for",
    UserAgent = "user_agent",
    RequestId = "request_id",
    Authority = "authority",
    TraceId = "trace_id",
    DownstreamPeerIdentity = "downstream_peer_identity",
    DownstreamRemoteAddress = "downstream_remote_address",
}

impl Field {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.as_str() == name)
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("unknown access log field {0:?} (known: {known})", known = known_fields())]
    UnknownField(String),
    #[error("no access log field given")]
    NoFields,
    #[error("cannot open the access log {path}: {error}")]
    Open { path: String, error: std::io::Error },
    #[error("cannot start the access log writer: {0}")]
    Spawn(std::io::Error),
}

fn known_fields() -> String {
    Field::ALL
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The fields of a line, in their order.
pub fn parse_fields<S: AsRef<str>>(names: &[S]) -> Result<Vec<Field>, AccessLogError> {
    let fields = names
        .iter()
        .map(|n| n.as_ref().trim())
        .filter(|n| !n.is_empty())
        .map(|n| Field::parse(n).ok_or_else(|| AccessLogError::UnknownField(n.to_owned())))
        .collect::<Result<Vec<_>, _>>()?;
    if fields.is_empty() {
        return Err(AccessLogError::NoFields);
    }
    Ok(fields)
}

/// The running log: the queue's sending end. Shared by every snapshot.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Box<Entry>>,
    stats: Arc<LogStats>,
}

// === impl AccessLog ===

impl AccessLog {
    /// Opens `sink` and starts its writer thread. A regular file is opened
    /// (created, appended to) here, so a bad path is an error now; a FIFO is
    /// opened by the writer, as opening one blocks until a reader comes.
    pub fn start(
        sink: Sink,
        fields: Vec<Field>,
        stats: Arc<LogStats>,
    ) -> Result<Arc<Self>, AccessLogError> {
        let out: Opener = match sink {
            Sink::Stdout => Box::new(|| Ok(Box::new(std::io::stdout()) as Box<dyn Write + Send>)),
            Sink::File(path) if is_fifo(&path) => Box::new(move || {
                let f = OpenOptions::new().write(true).open(&path)?;
                Ok(Box::new(f) as Box<dyn Write + Send>)
            }),
            Sink::File(path) => {
                let f = append(&path).map_err(|error| AccessLogError::Open {
                    path: path.display().to_string(),
                    error,
                })?;
                Box::new(move || Ok(Box::new(f) as Box<dyn Write + Send>))
            }
        };
        let (tx, rx) = sync_channel(QUEUE);
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("meshfast-access-log".into())
            .spawn(move || write_lines(rx, out, &fields, &writer_stats))
            .map_err(AccessLogError::Spawn)?;
        Ok(Arc::new(Self { tx, stats }))
    }

    /// A new entry for a request whose head is `req`.
    pub fn open<B>(self: &Arc<Self>, req: &http::Request<B>, peer: SocketAddr) -> Box<Entry> {
        let h = req.headers();
        Box::new(Entry {
            log: self.clone(),
            start: SystemTime::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            user_agent: h.get(http::header::USER_AGENT).cloned(),
            forwarded_for: h.get("x-forwarded-for").cloned(),
            traceparent: h.get("traceparent").cloned(),
            b3_trace_id: h.get("x-b3-traceid").cloned(),
            b3: h.get("b3").cloned(),
            peer,
            request_id: None,
            authority: String::new(),
            status: 0,
            flags: Flags::default(),
            route: None,
            cluster: None,
            upstream_host: String::new(),
            upstream_service_time: None,
            received: 0,
            sent: 0,
            duration: Duration::ZERO,
            peer_identity: None,
        })
    }

    fn send(&self, entry: Box<Entry>) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

type Opener = Box<dyn FnOnce() -> std::io::Result<Box<dyn Write + Send>> + Send>;

fn append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn is_fifo(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// The request body's bytes: known (read whole, or none read), or counted
/// as it streams.
#[derive(Debug)]
pub enum Received {
    Known(u64),
    Streaming(crate::body::BodyEnd),
}

impl Received {
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Known(n) => *n,
            Self::Streaming(end) => end.bytes(),
        }
    }
}

/// What one request's line says, collected as it goes.
#[derive(Debug)]
pub struct Entry {
    log: Arc<AccessLog>,
    start: SystemTime,
    method: Method,
    uri: Uri,
    version: Version,
    user_agent: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    b3_trace_id: Option<HeaderValue>,
    b3: Option<HeaderValue>,
    peer: SocketAddr,
    pub request_id: Option<HeaderValue>,
    pub authority: String,
    pub status: u16,
    pub flags: Flags,
    pub route: Option<String>,
    pub cluster: Option<Arc<ClusterRt>>,
    /// The endpoint of the last try ("" for none).
    upstream_host: String,
    pub upstream_service_time: Option<Duration>,
    received: u64,
    sent: u64,
    duration: Duration,
    pub peer_identity: Option<Arc<str>>,
}

// === impl Entry ===

impl Entry {
    /// A try goes to `address`.
    pub fn upstream_host(&mut self, address: &str) {
        self.upstream_host.clear();
        self.upstream_host.push_str(address);
    }
}

impl Default for Received {
    fn default() -> Self {
        Self::Known(0)
    }
}

/// What is left to record of a request once its response head has left:
/// travels with the response body, counting the bytes sent, and is recorded
/// when the body ends (or is dropped: a reset stream, a client gone) — in
/// Istio's metrics, and queued for the access log when it is on. The
/// request's span (when sampled) travels the same way and is recorded at the
/// same moment.
#[derive(Debug, Default)]
pub struct Pending(Option<Ended>, Option<Box<crate::tracer::Open>>);

#[derive(Debug)]
pub struct Ended {
    pub started: Instant,
    pub received: Received,
    pub sent: u64,
    /// The request's Istio series (None: its table was full).
    pub istio: Option<(Arc<crate::istio_metrics::IstioSet>, u16)>,
    pub log: Option<Box<Entry>>,
}

impl Pending {
    pub fn new(ended: Ended) -> Self {
        Self(Some(ended), None)
    }

    pub fn with_span(mut self, span: Option<Box<crate::tracer::Open>>) -> Self {
        self.1 = span;
        self
    }

    pub fn sent(&mut self, n: usize) {
        if let Some(e) = &mut self.0 {
            e.sent += n as u64;
        }
        if let Some(s) = &mut self.1 {
            s.sent(n);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(ended) = self.0.take() else {
            return;
        };
        let duration = ended.started.elapsed();
        let received = ended.received.bytes();
        if let Some((set, series)) = &ended.istio {
            set.record(*series, duration, received, ended.sent);
        }
        if let Some(mut e) = ended.log {
            (e.duration, e.received, e.sent) = (duration, received, ended.sent);
            let log = e.log.clone();
            log.send(e);
        }
        if let Some(span) = self.1.take() {
            span.finish();
        }
    }
}

/// The writer thread: formats entries into lines and writes them, flushing
/// whenever the queue runs empty. A write error is counted and the line lost.
fn write_lines(rx: Receiver<Box<Entry>>, open: Opener, fields: &[Field], stats: &LogStats) {
    let out = match open() {
        Ok(out) => out,
        Err(_) => {
            // Nowhere to write: count every line as an error until shutdown.
            stats.errors.fetch_add(1, Relaxed);
            for _ in rx {
                stats.errors.fetch_add(1, Relaxed);
            }
            return;
        }
    };
    let mut out = BufWriter::with_capacity(64 << 10, out);
    let mut line = Vec::with_capacity(1024);
    loop {
        let entry = match rx.try_recv() {
            Ok(e) => e,
            Err(TryRecvError::Empty) => {
                if out.flush().is_err() {
                    stats.errors.fetch_add(1, Relaxed);
                }
                match rx.recv() {
                    Ok(e) => e,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        line.clear();
        format(&entry, fields, &mut line);
        drop(entry);
        match out.write_all(&line) {
            Ok(()) => stats.written.fetch_add(1, Relaxed),
            Err(_) => stats.errors.fetch_add(1, Relaxed),
        };
    }
    let _ = out.flush();
}

/// One JSON line. Values a request did not have are `null`; no flags is
/// `"-"`, as Envoy writes `%RESPONSE_FLAGS%`; durations are whole ms.
pub fn format(e: &Entry, fields: &[Field], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, f.as_str());
        out.push(b':');
        match f {
            Field::StartTime => string(out, &rfc3339_ms(e.start)),
            Field::Method => string(out, e.method.as_str()),
            Field::Path => string(out, e.uri.path_and_query().map_or("/", |p| p.as_str())),
            Field::Protocol => string(out, protocol(e.version)),
            Field::ResponseCode => number(out, u64::from(e.status)),
            Field::ResponseFlags if e.flags.is_empty() => string(out, "-"),
            Field::ResponseFlags => string(out, &e.flags.render()),
            Field::BytesReceived => number(out, e.received),
            Field::BytesSent => number(out, e.sent),
            Field::Duration => number(out, millis(e.duration)),
            Field::UpstreamServiceTime => match e.upstream_service_time {
                Some(d) => number(out, millis(d)),
                None => null(out),
            },
            Field::UpstreamHost if e.upstream_host.is_empty() => null(out),
            Field::UpstreamHost => string(out, &e.upstream_host),
            Field::UpstreamCluster => opt(out, e.cluster.as_ref().map(|c| c.name.as_str())),
            Field::RouteName => opt(out, e.route.as_deref()),
            Field::XForwardedFor => header(out, e.forwarded_for.as_ref()),
            Field::UserAgent => header(out, e.user_agent.as_ref()),
            Field::RequestId => header(out, e.request_id.as_ref()),
            Field::Authority if e.authority.is_empty() => null(out),
            Field::Authority => string(out, &e.authority),
            Field::TraceId => opt(out, trace_id(e)),
            Field::DownstreamPeerIdentity => opt(out, e.peer_identity.as_deref()),
            Field::DownstreamRemoteAddress => string(out, &e.peer.to_string()),
        }
    }
    out.extend_from_slice(b"}\n");
}

fn string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping: quotes, backslashes and control characters.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn number(out: &mut Vec<u8>, n: u64) {
    let _ = write!(out, "{n}");
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

fn opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => null(out),
    }
}

fn header(out: &mut Vec<u8>, v: Option<&HeaderValue>) {
    match v {
        Some(v) => string(out, &String::from_utf8_lossy(v.as_bytes())),
        None => null(out),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// The incoming trace id: W3C `traceparent`'s, else B3's (multi-header or
/// single `b3`). Only well-formed ids are taken (hex, 32 or 16 digits).
fn trace_id(e: &Entry) -> Option<&str> {
    let hex = |s: &str, lens: &[usize]| {
        (lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())
    };
    fn text(v: &Option<HeaderValue>) -> Option<&str> {
        v.as_ref().and_then(|v| v.to_str().ok())
    }
    if let Some(tp) = text(&e.traceparent) {
        let mut parts = tp.split('-');
        if let (Some(_version), Some(id)) = (parts.next(), parts.next()) {
            if hex(id, &[32]).is_some() {
                return Some(id);
            }
        }
    }
    if let Some(id) = text(&e.b3_trace_id) {
        if hex(id, &[16, 32]).is_some() {
            return Some(id);
        }
    }
    let id = text(&e.b3)?.split('-').next()?;
    hex(id, &[16, 32]).map(|()| id)
}

/// `2026-01-02T03:04:05.678Z` (Envoy's `%START_TIME%` default, UTC).
fn rfc3339_ms(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123 + 3_723_000);
        assert_eq!(rfc3339_ms(t), "2000-02-29T01:02:03.123Z");
    }

    #[test]
    fn fields_parse_by_envoy_name() {
        let f = parse_fields(&["method", " path ", "response_code"]).expect("known");
        assert_eq!(f, vec![Field::Method, Field::Path, Field::ResponseCode]);
        let err = parse_fields(&["method", "nope"]).expect_err("unknown");
        assert!(err.to_string().contains("\"nope\""), "{err}");
        assert!(matches!(
            parse_fields::<&str>(&[]),
            Err(AccessLogError::NoFields)
        ));
        for f in Field::ALL {
            assert_eq!(Field::parse(f.as_str()), Some(*f));
        }
    }
}
