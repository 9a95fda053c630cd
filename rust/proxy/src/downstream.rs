//! One accepted client connection, from accept to close: TCP proxying, or
//! HTTP (plaintext, TLS-terminated, or PERMISSIVE: told apart by the first
//! byte) served by hyper — under the connection's limits: a first request
//! head within the headers timeout (counted once HTTP serving starts, after
//! any TLS handshake, itself bounded) — a connection that sends nothing, one
//! byte, or half an HTTP/2 preface is closed — and an idle timeout once no
//! request is in flight and no byte moves (Envoy's `idle_timeout`).

use crate::conn::{Conn, ConnCtx};
use crate::h2_flood::FrameBudget;
use crate::http;
use crate::runtime::{DownstreamRt, ListenerKind};
use crate::stats::{ActiveGuard, Counters};
use crate::tcp_proxy;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meshfast_ir as ir;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Limits on what a downstream may make the proxy hold (RELIABILITY.md §1.1).
pub const MAX_HEADERS: usize = 100;
const MAX_HEADER_LIST_BYTES: u32 = 60 << 10;
const H1_MAX_BUF: usize = 64 << 10;
const H2_MAX_STREAMS: u32 = 100;
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONN_WINDOW: u32 = 4 << 20;
/// The idle check runs this many times per idle timeout: a connection is
/// closed between 1 and 1 + 1/N idle timeouts after its last request.
const IDLE_CHECKS: u32 = 4;

/// One worker's HTTP server settings, shared by its connections.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .max_buf_size(H1_MAX_BUF)
        .max_headers(MAX_HEADERS)
        // A client may shut its sending side once its request is out and
        // still read the answer (RFC 9112 §9.6).
        .half_close(true)
        .header_read_timeout(DownstreamRt::REQUEST_HEADERS_TIMEOUT);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW);
    b
}

/// Serves `stream` until it closes or the worker drains (`drain` turns true).
pub async fn serve(
    stream: TcpStream,
    mut conn: Conn,
    ctx: Arc<ConnCtx>,
    protocol: ir::ListenerProtocol,
    drain: watch::Receiver<bool>,
    builder: Arc<auto::Builder<TokioExecutor>>,
) {
    let snap = ctx.store.load();
    let Some(listener) = snap.listener(ctx.listener_id) else {
        return;
    };
    conn.held = Arc::new((conn.held, ActiveGuard::connection(&listener.stats)));
    let counters = listener.stats.clone();
    let limits = snap.downstream;
    // The snapshot says whether this listener terminates TLS.
    let tls = match &listener.kind {
        ListenerKind::Http(_, tls) => tls.clone(),
        _ => None,
    };
    drop(snap);
    let http = Http {
        ctx,
        conn,
        drain,
        builder,
        limits,
        counters,
    };
    match protocol {
        ir::ListenerProtocol::Tcp | ir::ListenerProtocol::Tls => {
            let mut signal = http.drain.clone();
            let (store, id) = (http.ctx.store.clone(), http.ctx.listener_id);
            // Boxed, like the TLS paths below: this task lives as long as its
            // connection, and inline every path would size every connection's task.
            tokio::select! {
                _ = Box::pin(tcp_proxy::serve(stream, http.conn, store, id)) => {}
                _ = signal.wait_for(|d| *d) => {}
            }
        }
        ir::ListenerProtocol::Http => match tls {
            None => http.serve(stream).await,
            // PERMISSIVE: a connection that does not open with a TLS
            // handshake record is served as plaintext.
            Some(t) if t.permissive && !opens_with_tls(&stream).await => http.serve(stream).await,
            Some(t) => Box::pin(http.serve_tls(stream, t)).await,
        },
    }
}

/// An HTTP connection's serving context.
struct Http {
    ctx: Arc<ConnCtx>,
    conn: Conn,
    drain: watch::Receiver<bool>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: DownstreamRt,
    counters: Arc<Counters>,
}

/// Requests started on a connection, and those not yet over (until the
/// last byte of the response body is out, or the stream is dropped): what
/// its idle check reads — PINGs and other control frames keep nothing busy,
/// as with Envoy's `idle_timeout`. `h2`: the client opened with the whole
/// HTTP/2 preface, its SETTINGS included — an established connection that
/// may rightly sit without a stream (a gRPC channel), so the idle timeout
/// governs it, not the headers timeout.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    active: AtomicU64,
    /// Reads and writes that moved bytes: with requests in flight and none
    /// moving for the stream idle timeout, the client has stopped.
    io: AtomicU64,
    h2: std::sync::atomic::AtomicBool,
    /// Closed for a flood of HTTP/2 control frames.
    flooded: std::sync::atomic::AtomicBool,
    /// Closed for an opening that is neither HTTP/1.x nor HTTP/2.
    invalid: std::sync::atomic::AtomicBool,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface and the head of the frame after it (RFC 9113 §3.4: the
/// client's SETTINGS).
const OPENING: usize = 24 + 9;

/// The client's stream, watched only for its opening (the HTTP/2 preface
/// and its SETTINGS frame, or not); every read and write passes straight
/// through. Only a client that sent the whole preface, SETTINGS included,
/// has an established HTTP/2 connection: the magic alone, or a SETTINGS head
/// without its payload, is still an opening under the headers timeout.
struct Watched<S> {
    inner: S,
    opening: [u8; OPENING],
    /// Bytes read so far, counted up to the end of the client's SETTINGS.
    seen: usize,
    /// Where the client's SETTINGS ends, once its head is read.
    settings_end: usize,
    /// The client's frames after the preface, against their budget.
    budget: Option<FrameBudget>,
    /// Until the first line is known to end in an HTTP version.
    first_line: Option<FirstLine>,
    /// Bytes of that line read but not yet handed over.
    held: Vec<u8>,
    activity: Arc<Activity>,
}

/// The first line a client sends must end in an `HTTP/` version (HTTP/1.x's
/// request line, or the HTTP/2 preface's `PRI * HTTP/2.0`). Bytes that are
/// neither protocol's — h2spec 3.5/2 sends `INVALID CONNECTION PREFACE` —
/// get no answer in either: the connection is closed, as RFC 9113 §3.4 has
/// an HTTP/2 server do. A request line with a wrong HTTP version is
/// HTTP/1.1's to refuse (400/505).
#[derive(Debug, Default)]
struct FirstLine {
    /// The first bytes of the line's current token.
    token: [u8; 5],
    token_len: usize,
    started: bool,
    scanned: usize,
}

/// Past this, the line is hyper's to limit (414/431).
const FIRST_LINE_SCAN: usize = 64 << 10;

impl FirstLine {
    /// `Some(true)`: the line ends in an HTTP version (or is too long to
    /// tell); `Some(false)`: it does not; `None`: not yet at its end.
    fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        for &b in bytes {
            self.scanned += 1;
            match b {
                // Empty lines before a request line are ignored (RFC 9112 §2.2).
                b'\r' | b'\n' if !self.started => {}
                b'\r' | b'\n' => return Some(self.token_len >= 5 && &self.token == b"HTTP/"),
                b' ' => {
                    self.started = true;
                    self.token_len = 0;
                }
                _ => {
                    self.started = true;
                    if self.token_len < 5 {
                        self.token[self.token_len] = b;
                    }
                    self.token_len += 1;
                }
            }
            if self.scanned > FIRST_LINE_SCAN {
                return Some(true);
            }
        }
        None
    }
}

impl<S> Watched<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            opening: [0; OPENING],
            seen: 0,
            settings_end: usize::MAX,
            budget: None,
            first_line: Some(FirstLine::default()),
            held: Vec::new(),
            activity,
        }
    }

    fn wrote(&mut self, polled: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled {
            if *n > 0 {
                self.activity.io.fetch_add(1, Relaxed);
                if let Some(b) = &mut self.budget {
                    b.wrote(*n);
                }
            }
        }
    }

    fn watching(&self) -> bool {
        self.seen < OPENING.max(self.settings_end)
    }

    /// Reads the opening; returns where in `bytes` the frames after the
    /// preface begin (`bytes.len()` when they do not, or not yet).
    fn saw(&mut self, bytes: &[u8]) -> usize {
        let before = self.seen;
        if self.seen < OPENING {
            let n = bytes.len().min(OPENING - self.seen);
            self.opening[self.seen..self.seen + n].copy_from_slice(&bytes[..n]);
        }
        self.seen = self.seen.saturating_add(bytes.len());
        if self.seen >= 24 && &self.opening[..24] != H2_PREFACE {
            self.settings_end = 0; // not HTTP/2 prior knowledge: stop watching
            if self.opening[..18] == H2_PREFACE[..18] {
                // An HTTP/2 client whose preface went wrong after its first line.
                self.activity.invalid.store(true, Relaxed);
            }
            return bytes.len();
        }
        let mut frames_from = bytes.len();
        if before < 24 && self.seen >= 24 {
            self.budget = Some(FrameBudget::new(Instant::now()));
            frames_from = 24 - before;
        }
        if self.seen >= OPENING && self.settings_end == usize::MAX {
            let head = &self.opening[24..];
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            // Type 4 = SETTINGS; anything else is h2's protocol error to report.
            self.settings_end = if head[3] == 4 { OPENING + len } else { 0 };
        }
        if self.settings_end != 0 && self.seen >= self.settings_end {
            self.activity.h2.store(true, Relaxed);
        }
        frames_from
    }
}

impl<S: AsyncRead + Unpin> Watched<S> {
    /// Reads until the first line is known to end in an HTTP version (see
    /// [`FirstLine`]): bytes of a line still open are held back, so hyper
    /// never answers a line that turns out to be no HTTP at all. Then hands
    /// over what was held. Most first reads hold a whole line: nothing is
    /// held then.
    fn poll_opening(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let Some(line) = &mut self.first_line else {
                let n = self.held.len().min(buf.remaining());
                buf.put_slice(&self.held[..n]);
                self.held.drain(..n);
                if self.held.is_empty() {
                    self.held = Vec::new();
                }
                return Poll::Ready(Ok(()));
            };
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            let fresh = buf.filled().len() - before;
            if fresh == 0 {
                if !matches!(polled, Poll::Ready(Ok(()))) || self.held.is_empty() {
                    return polled; // pending, failed, or closed with nothing held
                }
                self.first_line = None; // closed mid-line: hyper judges what came
                continue;
            }
            match line.feed(&buf.filled()[before..]) {
                Some(false) => {
                    self.activity.invalid.store(true, Relaxed);
                    let invalid = std::io::Error::other("neither HTTP/1.x nor HTTP/2");
                    return Poll::Ready(Err(invalid));
                }
                Some(true) if self.held.is_empty() => {
                    self.first_line = None;
                    return Poll::Ready(Ok(())); // the whole line came at once
                }
                decided => {
                    self.held.extend_from_slice(&buf.filled()[before..]);
                    buf.set_filled(before);
                    if decided.is_some() {
                        self.first_line = None;
                    }
                }
            }
        }
    }

    /// What hyper is handed: counted, and watched for the HTTP/2 opening
    /// and the frame budget.
    fn handed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.activity.io.fetch_add(1, Relaxed);
        let had_budget = self.budget.is_some();
        let from = if self.watching() {
            self.saw(bytes)
        } else {
            bytes.len()
        };
        if self.activity.invalid.load(Relaxed) {
            return Err(std::io::Error::other("neither HTTP/1.x nor HTTP/2"));
        }
        let from = if had_budget { 0 } else { from };
        if let Some(b) = &mut self.budget {
            if b.read(&bytes[from..], Instant::now).is_err() {
                self.activity.flooded.store(true, Relaxed);
                return Err(std::io::Error::other("HTTP/2 control-frame flood"));
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = if this.first_line.is_some() || !this.held.is_empty() {
            this.poll_opening(cx, buf)
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        if buf.filled().len() > before {
            this.handed(&buf.filled()[before..])?;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One request in flight on its connection: from its head to the end of
/// its response body (the guard travels with the body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Relaxed);
        activity.active.fetch_add(1, Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

impl Http {
    /// Terminates TLS (the client's identity, when it sent a certificate,
    /// goes with the connection), then serves HTTP on it.
    async fn serve_tls(mut self, stream: TcpStream, tls: crate::tls::ListenerTls) {
        let handshake =
            tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream));
        if let Ok(Ok(stream)) = handshake.await {
            let tls = stream.get_ref().1;
            self.conn.identity = tls
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::spiffe::identity)
                .map(Arc::from);
            // AuthorizationPolicies' `connection.sni`.
            self.conn.sni = tls.server_name().map(Arc::from);
            self.serve(stream).await;
        }
    }

    async fn serve<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::default());
        let Self {
            ctx,
            conn,
            mut drain,
            builder,
            limits,
            counters,
        } = self;
        let requests = activity.clone();
        let service = service_fn(move |req| {
            let in_flight = InFlight::start(&requests);
            let answer = http::serve(req, ctx.clone(), conn.clone());
            async move {
                let (resp, log) = answer.await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                    body,
                    log,
                    _in_flight: in_flight,
                }))
            }
        });
        let stream = Watched::new(stream, activity.clone());
        // hyper re-arms its HTTP/1.1 head timeout whenever a keep-alive
        // connection goes idle: it is this listener's headers timeout, so a
        // keep-alive connection waits that long for its next request.
        let mut builder = (*builder).clone();
        builder
            .http1()
            .header_read_timeout(limits.request_headers_timeout);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut idle = Idle::new(&limits, accepted);
        let headers_deadline = accepted + limits.request_headers_timeout;
        let drained = loop {
            // Waiting for a first request head, not an established h2 connection.
            let first = activity.started.load(Relaxed) == 0 && !activity.h2.load(Relaxed);
            let wake = if first {
                headers_deadline.min(Instant::now() + idle.every)
            } else {
                Instant::now() + idle.every
            };
            tokio::select! {
                _ = conn.as_mut() => {
                    if activity.flooded.load(Relaxed) {
                        counters.cx_h2_flood.fetch_add(1, Relaxed);
                    }
                    if activity.invalid.load(Relaxed) {
                        counters.cx_protocol_error.fetch_add(1, Relaxed);
                    }
                    return;
                }
                _ = drain.wait_for(|d| *d) => break true,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if activity.started.load(Relaxed) == 0 && !activity.h2.load(Relaxed) {
                if Instant::now() >= headers_deadline {
                    // Not one request head since accept: nothing to finish either.
                    counters.cx_headers_timeout.fetch_add(1, Relaxed);
                    return;
                }
                continue;
            }
            match idle.check(&activity, Instant::now()) {
                Some(Quiet::Idle) => {
                    counters.cx_idle_timeout.fetch_add(1, Relaxed);
                    break false;
                }
                Some(Quiet::Stalled) => {
                    // Its client stopped reading or sending: nothing to finish.
                    counters.cx_stream_idle_timeout.fetch_add(1, Relaxed);
                    return;
                }
                None => {}
            }
        };
        // Draining or idle: finish in-flight requests, then close (GOAWAY /
        // Connection: close). The drain has its own deadline; an idle close
        // gets one more idle period (an HTTP/2 client that never acknowledges
        // the GOAWAY's PING must not keep it open).
        conn.as_mut().graceful_shutdown();
        if drained {
            let _ = conn.await;
        } else {
            let _ = tokio::time::timeout(limits.idle_timeout, conn).await;
        }
    }
}

/// A response body that keeps its request counted in flight until hyper
/// drops it (its last byte sent, or the stream reset), and carries the
/// request's access log entry there (counting the bytes sent).
struct Tracked {
    body: http::ProxyBody,
    log: crate::access_log::Pending,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.log.sent(data.len());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a connection is quiet enough to close.
#[derive(Debug, PartialEq, Eq)]
enum Quiet {
    /// No request in flight, none started, for the idle timeout (Envoy's
    /// `idle_timeout`: PINGs and other control frames do not count).
    Idle,
    /// Requests in flight but no byte moved either way for twice the stream
    /// idle timeout (Envoy's `stream_idle_timeout`): a client that stopped
    /// reading. Twice: a request whose body stalled is answered 408 `SI` once
    /// the timeout passes, and that answer must get out first.
    Stalled,
}

/// The idle checks, run every `every` (a quarter of the shorter timeout):
/// a connection closes within 1¼ of its timeout.
struct Idle {
    every: Duration,
    idle: Duration,
    stall: Duration,
    seen: (u64, u64),
    /// Since when nothing was in flight and nothing started.
    quiet_since: Instant,
    /// Since when no byte moved.
    still_since: Instant,
}

impl Idle {
    fn new(limits: &DownstreamRt, now: Instant) -> Self {
        let shorter = limits.idle_timeout.min(limits.stream_idle_timeout);
        Self {
            every: (shorter / IDLE_CHECKS).max(Duration::from_millis(1)),
            idle: limits.idle_timeout,
            stall: limits.stream_idle_timeout * 2,
            seen: (0, 0),
            quiet_since: now,
            still_since: now,
        }
    }

    fn check(&mut self, activity: &Activity, now: Instant) -> Option<Quiet> {
        let (started, io) = (activity.started.load(Relaxed), activity.io.load(Relaxed));
        if started != self.seen.0 {
            self.quiet_since = now;
            self.still_since = now;
        }
        if io != self.seen.1 {
            self.still_since = now;
        }
        self.seen = (started, io);
        if activity.active.load(Relaxed) > 0 {
            self.quiet_since = now;
            return (now - self.still_since >= self.stall).then_some(Quiet::Stalled);
        }
        self.still_since = now;
        (now - self.quiet_since >= self.idle).then_some(Quiet::Idle)
    }
}

/// Whether the first byte is a TLS handshake record's (22), without reading it.
async fn opens_with_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, stream.peek(&mut first));
    matches!(peeked.await, Ok(Ok(1)) if first[0] == 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_must_end_in_an_http_version() {
        let verdict = |chunks: &[&[u8]]| {
            let mut line = FirstLine::default();
            chunks.iter().find_map(|c| line.feed(c))
        };
        assert_eq!(verdict(&[b"GET / HTTP/1.1\r\n"]), Some(true));
        assert_eq!(verdict(&[b"GET / HT", b"TP/1.1\r\nHost"]), Some(true));
        assert_eq!(verdict(&[b"\r\n\r\nGET / HTTP/1.0\n"]), Some(true));
        assert_eq!(verdict(&[b"PRI * HTTP/2.0\r\n\r\nSM"]), Some(true));
        assert_eq!(
            verdict(&[b"GET / HTTP/3.0\r\n"]),
            Some(true),
            "HTTP/1.1's to refuse"
        );
        assert_eq!(verdict(&[b"INVALID CONNECTION PREFACE\r\n"]), Some(false));
        assert_eq!(verdict(&[b"hello\n"]), Some(false));
        assert_eq!(verdict(&[b"GET / HTTP"]), None);
        assert_eq!(verdict(&[&[b'a'; FIRST_LINE_SCAN + 1]]), Some(true));
    }

    #[test]
    fn idle_and_stalled_are_told_apart() {
        let limits = DownstreamRt {
            request_headers_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(4),
            stream_idle_timeout: Duration::from_secs(4),
            max_connections: 1,
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let a = Arc::new(Activity::default());
        let mut idle = Idle::new(&limits, t0);
        assert_eq!(idle.every, Duration::from_secs(1));
        // A request in flight is never idle; bytes moving keep it from stalling.
        let in_flight = InFlight::start(&a);
        for s in 1..=20 {
            a.io.fetch_add(1, Relaxed);
            assert_eq!(idle.check(&a, at(s)), None, "moving at {s}s");
        }
        // In flight with nothing moving: stalled after the stream idle timeout.
        assert_eq!(idle.check(&a, at(27)), None);
        assert_eq!(idle.check(&a, at(28)), Some(Quiet::Stalled));
        drop(in_flight);
        // Nothing in flight: idle after the idle timeout, whatever bytes move (PINGs).
        assert_eq!(idle.check(&a, at(29)), None);
        a.io.fetch_add(1, Relaxed);
        assert_eq!(idle.check(&a, at(31)), None);
        a.io.fetch_add(1, Relaxed);
        assert_eq!(idle.check(&a, at(33)), Some(Quiet::Idle));
        // A new request starts the count again.
        drop(InFlight::start(&a));
        assert_eq!(idle.check(&a, at(34)), None);
        assert_eq!(idle.check(&a, at(38)), Some(Quiet::Idle));
    }
}
