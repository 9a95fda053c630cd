//! Per-worker upstream connection pools, owned by the worker's thread.
//!
//! Every worker is a single-threaded runtime, so its pool lives in a
//! thread-local: checkout and return are a `RefCell` borrow and a `Vec`
//! push/pop, with no lock and no task spawned per request. HTTP/1.1
//! connections are reused LIFO (the most recently used is the warmest);
//! HTTP/2 keeps one multiplexed connection per endpoint.

use crate::body::LoadGuard;
pub use crate::body::UpstreamBody;
use crate::breaker::{self, Breaker, Slot};
use crate::stats::Counters;
use crate::upstream_tls::UpstreamTlsRt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub type Sent = (http::Response<Incoming>, Option<Lease>);
type H1Sender = http1::SendRequest<UpstreamBody>;
type H2Sender = http2::SendRequest<UpstreamBody>;

/// Idle connections are closed before the usual upstream keep-alive timeouts
/// (60 s and up), so the proxy rarely picks one the upstream is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds the idle connections kept per endpoint and worker.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONN_WINDOW: u32 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS to {address}: {message}")]
    Tls { address: String, message: String },
    /// A connection-pool limit was reached (Envoy's overflow: `UO`).
    #[error("connection pool overflow")]
    Overflow,
    #[error("upstream {address}: {source}")]
    Http {
        address: String,
        #[source]
        source: hyper::Error,
    },
    /// A reused HTTP/1.1 connection ended (closed or reset) before any of
    /// the response came back: most likely the upstream closed it at its
    /// own keep-alive timeout just as the request went out (the keep-alive
    /// race). The request may be sent again if it is idempotent.
    #[error("upstream {address}: pooled connection closed before a response: {source}")]
    Stale {
        address: String,
        #[source]
        source: hyper::Error,
    },
}

/// How the downstream broke a request it was still sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamFault {
    /// Its body was malformed (bad chunk framing, a length it did not keep).
    Malformed,
    /// It went away (closed or reset) mid-body.
    Gone,
}

impl SendError {
    /// The downstream's fault, when the send failed because reading the
    /// request body from the client failed: such a failure is never the
    /// upstream endpoint's (no outlier streak, no retry).
    pub fn downstream_fault(&self) -> Option<DownstreamFault> {
        let Self::Http { source, .. } = self else {
            return None;
        };
        // hyper marks errors of the body it was sending as the user's; their
        // source is the error our body stream gave: the downstream's.
        if !source.is_user() {
            return None;
        }
        let cause = std::error::Error::source(source)?;
        Some(if malformed(cause) {
            DownstreamFault::Malformed
        } else {
            DownstreamFault::Gone
        })
    }

    /// Whether the upstream was never reached (Envoy's UF rather than UC).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout(_) | Self::Connect { .. } | Self::Tls { .. }
        )
    }
}

#[derive(Default)]
struct Pool {
    h1: HashMap<String, Vec<(Instant, H1Sender)>>,
    h2: HashMap<String, H2Sender>,
    /// Connections open or opening, idle or not, by key.
    live: HashMap<String, usize>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Gives an HTTP/1.1 connection back to its worker's pool once the response
/// body was read to the end; dropped earlier, the connection is closed.
pub struct Lease {
    address: String,
    sender: Option<H1Sender>,
    pub complete: bool,
    /// The cluster's counters, when it limits connections: its pending
    /// requests hear that a connection came back idle.
    notify: Option<Arc<Counters>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("address", &self.address)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        if !self.complete || sender.is_closed() {
            return;
        }
        let address = std::mem::take(&mut self.address);
        // try_with: during thread teardown the pool may already be gone.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let idle = pool.h1.entry(address).or_default();
            if idle.len() < MAX_IDLE_PER_ENDPOINT {
                idle.push((Instant::now(), sender));
            }
        });
        if let Some(stats) = &self.notify {
            breaker::notify(stats);
        }
    }
}

/// An upstream response body with what must live exactly as long as it:
/// the endpoint's in-flight count, and the HTTP/1.1 connection, which goes
/// back to the pool once the body was read to the end.
#[derive(Debug)]
pub struct Held<B> {
    inner: B,
    _load: LoadGuard,
    lease: Option<Lease>,
}

impl<B> Held<B> {
    pub fn new(inner: B, load: LoadGuard, lease: Option<Lease>) -> Self {
        Self {
            inner,
            _load: load,
            lease,
        }
    }

    fn ended(&mut self) {
        if let Some(lease) = &mut self.lease {
            lease.complete = true;
        }
    }
}

impl<B> http_body::Body for Held<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            Poll::Ready(None) => self.ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A failed send; `request` is given back when none of it was written, so
/// the caller may try it elsewhere.
#[derive(Debug)]
pub struct Failed {
    pub error: SendError,
    pub request: Option<http::Request<UpstreamBody>>,
}

impl From<SendError> for Failed {
    fn from(error: SendError) -> Self {
        Self {
            error,
            request: None,
        }
    }
}

/// Sends `req` to `address` over a pooled or new connection. A request that a
/// reused connection closed before sending is moved to another connection
/// (never resent once any of it was written).
///
/// The cluster's connection-pool limits (`breaker`) apply to new
/// connections: with none idle, the request is pending until it has one;
/// at `maxConnections` it waits for a connection of its worker to come back
/// idle, or for any of the cluster's to close. Past the pending limit it
/// fails at once ([`SendError::Overflow`]).
pub async fn send(
    address: &str,
    http2: bool,
    connect_timeout: Duration,
    tls: Option<(&UpstreamTlsRt, &str)>,
    breaker: Breaker<'_>,
    req: http::Request<UpstreamBody>,
) -> Result<Sent, Failed> {
    // TLS connections are pooled apart from plaintext ones, per cluster and SNI.
    let key: Cow<'_, str> = match tls {
        None => Cow::Borrowed(address),
        Some((t, sni)) => Cow::Owned(format!("{}|{address}|{sni}", t.pool_key)),
    };
    let dial = Dial {
        address,
        key: &key,
        timeout: connect_timeout,
        tls,
        breaker,
    };
    let mut req = req;
    let mut pending = None;
    loop {
        req = match if http2 {
            send_h2_pooled(&dial, req).await
        } else {
            send_h1_pooled(&dial, req).await
        } {
            Reused::Sent(sent) => return sent,
            Reused::Not(req) => req,
        };
        if pending.is_none() {
            match breaker.pending() {
                Ok(slot) => pending = Some(slot),
                Err(_) => return Err(overflow(req)),
            }
        }
        let slot = if breaker.limits_connections() {
            let reusable = || {
                if http2 {
                    has_h2(&key)
                } else {
                    has_idle_h1(&key)
                }
            };
            // Boxed: only limited clusters wait here; the others' futures stay small.
            match Box::pin(admit(&dial, reusable)).await {
                Admit::Dial(slot) => slot,
                Admit::Reuse => continue,
            }
        } else {
            None
        };
        let admitted = Admitted {
            pending: pending.flatten(),
            slot,
        };
        // Boxed: connecting (and a TLS handshake) is rare next to pooled sends, and
        // inline it would grow every request's future by its whole state.
        return if http2 {
            Box::pin(send_h2_new(&dial, admitted, req)).await
        } else {
            Box::pin(send_h1_new(&dial, admitted, req)).await
        };
    }
}

fn overflow(req: http::Request<UpstreamBody>) -> Failed {
    Failed {
        error: SendError::Overflow,
        request: Some(req),
    }
}

/// What a request may do about a new connection.
enum Admit {
    /// Open one, holding this slot (None: connections are not limited).
    Dial(Option<Slot>),
    /// A pooled connection became usable: take it instead.
    Reuse,
}

/// What a pending request holds while it connects: its pending slot
/// (given back once connected) and its connection's slot (held by the
/// connection for as long as it is open).
struct Admitted {
    pending: Option<Slot>,
    slot: Option<Slot>,
}

/// Waits, as long as the cluster is at `maxConnections` and nothing of this
/// worker's pool became usable, for a connection to close or come back.
/// A worker with no connection at all to the endpoint opens one anyway
/// (Envoy's exception: otherwise its requests would wait on connections
/// that only other workers can use).
async fn admit(dial: &Dial<'_>, reusable: impl Fn() -> bool) -> Admit {
    let breaker = dial.breaker;
    let mut counted = false;
    loop {
        if let Some(slot) = breaker.connection() {
            return Admit::Dial(slot);
        }
        if !counted {
            breaker.cx_overflow();
            counted = true;
        }
        if live(dial.key) == 0 {
            return Admit::Dial(Some(breaker.forced_connection()));
        }
        let changed = breaker.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // Looked at after enabling: a change in between is not lost.
        if reusable() {
            return Admit::Reuse;
        }
        if let Some(slot) = breaker.connection() {
            return Admit::Dial(slot);
        }
        changed.await;
        if reusable() {
            return Admit::Reuse;
        }
    }
}

/// A send over a pooled connection, or the request back when there is none.
enum Reused {
    Sent(Result<Sent, Failed>),
    Not(http::Request<UpstreamBody>),
}

async fn send_h1_pooled(dial: &Dial<'_>, req: http::Request<UpstreamBody>) -> Reused {
    let mut req = req;
    while let Some(mut sender) = checkout_h1(dial.key) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Reused::Sent(Ok((resp, Some(lease(dial, sender))))),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => {
                    return Reused::Sent(Err(reused_error(dial.address, e.into_error()).into()))
                }
            },
        }
    }
    Reused::Not(req)
}

/// The error of a request written to a reused HTTP/1.1 connection:
/// [`SendError::Stale`] when the connection ended before any of the response
/// (hyper answers at the response head, so nothing was read yet) and not
/// because of the request's own body.
fn reused_error(address: &str, source: hyper::Error) -> SendError {
    let ended = source.is_incomplete_message()
        || source.is_canceled()
        || std::error::Error::source(&source)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .is_some_and(|e| {
                use std::io::ErrorKind::*;
                matches!(
                    e.kind(),
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                )
            });
    let address = address.to_owned();
    if ended && !source.is_user() {
        SendError::Stale { address, source }
    } else {
        SendError::Http { address, source }
    }
}

/// Where a request goes: the endpoint, its pool's key, how to connect to
/// it, and its cluster's limits.
struct Dial<'a> {
    address: &'a str,
    key: &'a str,
    timeout: Duration,
    tls: Option<(&'a UpstreamTlsRt, &'a str)>,
    breaker: Breaker<'a>,
}

/// Keeps an opened connection counted (its worker's live count for the
/// endpoint, and its connection slot) until its task ends.
struct Open {
    _live: Live,
    _slot: Option<Slot>,
}

async fn send_h1_new(
    dial: &Dial<'_>,
    admitted: Admitted,
    req: http::Request<UpstreamBody>,
) -> Result<Sent, Failed> {
    let address = dial.address;
    let open = Open {
        _live: Live::start(dial.key),
        _slot: admitted.slot,
    };
    let (io, req) = connect_keeping(dial, req).await?;
    // Connected: no longer pending.
    drop(admitted.pending);
    dial.breaker.stats.cx_total.fetch_add(1, Relaxed);
    let (mut sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| http_error(address, e))?;
    // with_upgrades: a 101 hands the connection over to a tunnel.
    tokio::spawn(async move {
        let _open = open;
        let _ = conn.with_upgrades().await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| http_error(address, e))?;
    Ok((resp, Some(lease(dial, sender))))
}

async fn send_h2_pooled(dial: &Dial<'_>, req: http::Request<UpstreamBody>) -> Reused {
    let Some(mut sender) = pooled_h2(dial.key) else {
        return Reused::Not(req);
    };
    let mut req = req;
    if sender.ready().await.is_ok() {
        match sender.try_send_request(req).await {
            Ok(resp) => return Reused::Sent(Ok((resp, None))),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Reused::Sent(Err(http_error(dial.address, e.into_error()).into())),
            },
        }
    }
    // Not usable: forget it, so the next look opens a new one.
    POOL.with(|p| p.borrow_mut().h2.remove(dial.key));
    Reused::Not(req)
}

fn pooled_h2(key: &str) -> Option<H2Sender> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        match p.h2.get(key) {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                p.h2.remove(key);
                None
            }
            None => None,
        }
    })
}

fn has_h2(key: &str) -> bool {
    POOL.with(|p| p.borrow().h2.get(key).is_some_and(|s| !s.is_closed()))
}

fn has_idle_h1(key: &str) -> bool {
    POOL.with(|p| {
        p.borrow()
            .h1
            .get(key)
            .is_some_and(|idle| idle.iter().any(|(_, s)| !s.is_closed()))
    })
}

async fn send_h2_new(
    dial: &Dial<'_>,
    admitted: Admitted,
    req: http::Request<UpstreamBody>,
) -> Result<Sent, Failed> {
    let address = dial.address;
    let open = Open {
        _live: Live::start(dial.key),
        _slot: admitted.slot,
    };
    let (io, req) = connect_keeping(dial, req).await?;
    drop(admitted.pending);
    dial.breaker.stats.cx_total.fetch_add(1, Relaxed);
    let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .handshake(io)
        .await
        .map_err(|e| http_error(address, e))?;
    tokio::spawn(async move {
        let _open = open;
        let _ = conn.await;
    });
    POOL.with(|p| {
        p.borrow_mut()
            .h2
            .insert(dial.key.to_owned(), sender.clone())
    });
    if dial.breaker.limits_connections() {
        breaker::notify(dial.breaker.stats);
    }
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| http_error(address, e))?;
    Ok((resp, None))
}

/// Connections open (or opening) from this worker to a pool key.
fn live(key: &str) -> usize {
    POOL.with(|p| p.borrow().live.get(key).copied().unwrap_or(0))
}

/// Counts one connection in its worker's live count for its key while it
/// is open (or opening).
struct Live(String);

impl Live {
    fn start(key: &str) -> Self {
        POOL.with(|p| *p.borrow_mut().live.entry(key.to_owned()).or_default() += 1);
        Self(key.to_owned())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // try_with: during thread teardown the pool may already be gone.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if let Some(n) = p.live.get_mut(&self.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    p.live.remove(&self.0);
                }
            }
        });
    }
}

fn checkout_h1(address: &str) -> Option<H1Sender> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.h1.get_mut(address)?;
        // Oldest first: drop what has idled too long, then take the newest.
        let fresh_from = idle
            .iter()
            .position(|(since, _)| since.elapsed() < IDLE_TIMEOUT)
            .unwrap_or(idle.len());
        idle.drain(..fresh_from);
        while let Some((_, sender)) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    })
}

fn lease(dial: &Dial<'_>, sender: H1Sender) -> Lease {
    Lease {
        address: dial.key.to_owned(),
        sender: Some(sender),
        complete: false,
        notify: dial
            .breaker
            .limits_connections()
            .then(|| dial.breaker.stats.clone()),
    }
}

/// [`connect`], giving the request back on failure (nothing of it was sent).
async fn connect_keeping(
    dial: &Dial<'_>,
    req: http::Request<UpstreamBody>,
) -> Result<(TokioIo<Stream>, http::Request<UpstreamBody>), Failed> {
    match connect(dial.address, dial.timeout, dial.tls).await {
        Ok(io) => Ok((io, req)),
        Err(error) => Err(Failed {
            error,
            request: Some(req),
        }),
    }
}

async fn connect(
    address: &str,
    timeout: Duration,
    tls: Option<(&UpstreamTlsRt, &str)>,
) -> Result<TokioIo<Stream>, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => return Err(SendError::ConnectTimeout(address.to_owned())),
        Ok(Err(source)) => {
            return Err(SendError::Connect {
                address: address.to_owned(),
                source,
            })
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let Some((tls, sni)) = tls else {
        return Ok(TokioIo::new(Stream::Plain(stream)));
    };
    let name = ServerName::try_from(sni.to_owned()).map_err(|_| SendError::Tls {
        address: address.to_owned(),
        message: format!("invalid SNI {sni:?}"),
    })?;
    // The handshake is part of connecting: it fails as a connect failure (UF).
    match tokio::time::timeout(timeout, tls.connector.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(TokioIo::new(Stream::Tls(Box::new(s)))),
        Ok(Err(e)) => Err(SendError::Tls {
            address: address.to_owned(),
            message: e.to_string(),
        }),
        Err(_) => Err(SendError::ConnectTimeout(address.to_owned())),
    }
}

/// A plaintext or TLS upstream connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Whether the downstream body's error says its framing was bad: hyper
/// reports a parse error, or bad chunk framing as invalid data.
fn malformed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        if let Some(crate::body::BodyError::ForbiddenTrailer(_)) = e.downcast_ref() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            );
        }
        next = e.source();
    }
    false
}

fn http_error(address: &str, source: hyper::Error) -> SendError {
    SendError::Http {
        address: address.to_owned(),
        source,
    }
}
