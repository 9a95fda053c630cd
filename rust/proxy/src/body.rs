//! Bodies that stream through the proxy frame by frame (never buffered whole),
//! counting bytes as they pass.

use crate::breaker::Slot;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use meshfast_balance::Load;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::stats::Counters;

#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Towards the upstream: counts into `bytes_in`.
    In,
    /// Towards the downstream: counts into `bytes_out`.
    Out,
}

/// Ends an endpoint's in-flight request when dropped (at the end of the
/// response body, or earlier on error), and with it the request's slot
/// under its cluster's `http2MaxRequests`, when it holds one.
#[derive(Debug)]
pub struct LoadGuard(Option<Arc<Load>>, Option<Slot>);

impl LoadGuard {
    pub fn start(load: &Arc<Load>) -> Self {
        load.start();
        Self(Some(load.clone()), None)
    }

    /// For a destination that is not an endpoint (nothing balances on it).
    pub fn untracked() -> Self {
        Self(None, None)
    }

    /// Holds `slot` (a request in flight to the cluster) as long as this.
    pub fn hold(&mut self, slot: Option<Slot>) {
        self.1 = slot;
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if let Some(load) = &self.0 {
            load.finish();
        }
    }
}

/// Any body plus byte counters.
#[derive(Debug)]
pub struct Metered<B> {
    inner: B,
    sinks: [Option<Arc<Counters>>; 3],
    direction: Direction,
}

impl<B> Metered<B> {
    pub fn new(inner: B, direction: Direction, sinks: [Option<Arc<Counters>>; 3]) -> Self {
        Self {
            inner,
            sinks,
            direction,
        }
    }

    fn count(&self, n: u64) {
        for s in self.sinks.iter().flatten() {
            let counter: &AtomicU64 = match self.direction {
                Direction::In => &s.bytes_in,
                Direction::Out => &s.bytes_out,
            };
            counter.fetch_add(n, Relaxed);
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The downstream request body: still streaming, or read whole (up to a
/// limit) because a filter on the route reads it.
#[derive(Debug)]
pub enum DownBody {
    Streaming(Incoming),
    Buffered {
        data: Bytes,
        trailers: Option<http::HeaderMap>,
    },
}

/// A copy of a request body as it streams past, kept so a retry can send it
/// again; given up (and retries with it) once it outgrows its limit.
#[derive(Debug, Default)]
pub struct Recording {
    pub frames: Vec<Bytes>,
    pub trailers: Option<http::HeaderMap>,
    bytes: u64,
    pub complete: bool,
    pub overflow: bool,
}

impl Recording {
    pub fn replayable(&self) -> bool {
        self.complete && !self.overflow
    }
}

/// The body of an upstream request, boxed: hyper's client queues requests in
/// a channel whose slots are sized by the request type (see the size test).
pub type UpstreamBody = Box<Metered<RequestBody>>;

/// Set once a streamed request body has been read to its end (or broke):
/// the timeouts that measure the upstream (the route's, each try's) start
/// there, as Envoy's do — a client still sending its body is not a slow
/// upstream, and must not count against the endpoint as one.
#[derive(Debug, Clone, Default)]
pub struct BodyEnd(Arc<BodyEndState>);

#[derive(Debug, Default)]
struct BodyEndState {
    done: std::sync::atomic::AtomicBool,
    /// Frames read so far: progress, for the stream idle timeout.
    frames: std::sync::atomic::AtomicU64,
    /// Data bytes read so far (the access log's `bytes_received`).
    bytes: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

impl BodyEnd {
    fn set(&self) {
        if !self.0.done.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.0.notify.notify_waiters();
        }
    }

    fn progress(&self) {
        self.0
            .frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn read(&self, n: usize) {
        self.0
            .bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The body's data bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves once the body has ended (true), or once the client sent
    /// nothing for `idle` (false: Envoy's stream idle timeout).
    pub async fn wait(&self, idle: std::time::Duration) -> bool {
        let mut seen = self.0.frames.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a `set` in between still wakes it.
            notified.as_mut().enable();
            if self.0.done.load(std::sync::atomic::Ordering::Acquire) {
                return true;
            }
            if tokio::time::timeout(idle, notified).await.is_err() {
                let now = self.0.frames.load(std::sync::atomic::Ordering::Relaxed);
                if now == seen {
                    return false;
                }
                seen = now;
            }
        }
    }
}

/// What goes upstream: the downstream body streamed once, the same while a
/// copy is recorded, or a recorded copy sent again (retries, mirrors). A
/// replay also carries response bodies that a filter read whole.
#[derive(Debug)]
pub enum RequestBody {
    Streaming {
        inner: Incoming,
        end: BodyEnd,
    },
    Teed {
        inner: Incoming,
        record: Arc<parking_lot::Mutex<Recording>>,
        limit: u64,
        end: BodyEnd,
    },
    Replay {
        frames: std::collections::VecDeque<Bytes>,
        trailers: Option<http::HeaderMap>,
    },
}

/// Why a body stopped: its stream failed, or the client's trailers carry a
/// field no trailer may (RFC 9110 §6.5.1) — refused, never passed on where
/// a recipient might take it for the message's own (a Content-Length or
/// Transfer-Encoding that reframes it, a Host that reroutes it).
#[derive(Debug)]
pub enum BodyError {
    Stream(hyper::Error),
    ForbiddenTrailer(http::HeaderName),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stream(e) => write!(f, "body stream: {e}"),
            Self::ForbiddenTrailer(name) => write!(f, "`{name}` is not allowed in trailers"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Stream(e) => Some(e),
            Self::ForbiddenTrailer(_) => None,
        }
    }
}

impl From<hyper::Error> for BodyError {
    fn from(e: hyper::Error) -> Self {
        Self::Stream(e)
    }
}

/// A field that may not be sent as a trailer: framing, routing, request
/// modifiers, authentication and content metadata (RFC 9110 §6.5.1).
fn forbidden_trailer(trailers: &http::HeaderMap) -> Option<http::HeaderName> {
    use http::header as h;
    const FORBIDDEN: [h::HeaderName; 16] = [
        h::CONTENT_LENGTH,
        h::TRANSFER_ENCODING,
        h::HOST,
        h::CONNECTION,
        h::UPGRADE,
        h::TE,
        h::TRAILER,
        h::CONTENT_TYPE,
        h::CONTENT_ENCODING,
        h::CONTENT_RANGE,
        h::AUTHORIZATION,
        h::PROXY_AUTHORIZATION,
        h::EXPECT,
        h::RANGE,
        h::CACHE_CONTROL,
        h::MAX_FORWARDS,
    ];
    FORBIDDEN
        .into_iter()
        .find(|name| trailers.contains_key(name))
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(match std::task::ready!(self.poll_stream(cx)) {
            Some(Ok(frame)) => match frame.trailers_ref().and_then(forbidden_trailer) {
                Some(name) => Some(Err(BodyError::ForbiddenTrailer(name))),
                None => Some(Ok(frame)),
            },
            Some(Err(e)) => Some(Err(BodyError::Stream(e))),
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streaming { inner: b, .. } | Self::Teed { inner: b, .. } => b.is_end_stream(),
            Self::Replay { frames, trailers } => frames.is_empty() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streaming { inner: b, .. } | Self::Teed { inner: b, .. } => b.size_hint(),
            Self::Replay {
                frames,
                trailers: None,
            } => SizeHint::with_exact(frames.iter().map(|f| f.len() as u64).sum()),
            Self::Replay { .. } => SizeHint::default(),
        }
    }
}

impl RequestBody {
    fn poll_stream(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Streaming { inner, end } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                track(&polled, inner, end);
                polled
            }
            Self::Teed {
                inner,
                record,
                limit,
                end,
            } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                let mut r = record.lock();
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            r.bytes += data.len() as u64;
                            if r.bytes > *limit {
                                r.overflow = true;
                                r.frames = Vec::new();
                            } else if !r.overflow {
                                r.frames.push(data.clone());
                            }
                        } else if let Some(t) = frame.trailers_ref() {
                            r.trailers = Some(t.clone());
                        }
                        if inner.is_end_stream() {
                            r.complete = true;
                        }
                    }
                    Poll::Ready(None) => r.complete = true,
                    _ => {}
                }
                track(&polled, inner, end);
                polled
            }
            Self::Replay { frames, trailers } => Poll::Ready(match frames.pop_front() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        }
    }
}
/// Notes a frame of the downstream body on `end`; sets it after the last
/// frame (or a failure).
fn track(
    polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>,
    inner: &Incoming,
    end: &BodyEnd,
) {
    if let Poll::Ready(Some(Ok(frame))) = polled {
        if let Some(data) = frame.data_ref() {
            end.read(data.len());
        }
    }
    match polled {
        Poll::Ready(Some(Ok(_))) if !inner.is_end_stream() => end.progress(),
        Poll::Ready(_) => end.set(),
        Poll::Pending => {}
    }
}

#[cfg(test)]
mod size {
    /// hyper's HTTP/1 client queues each request in a channel whose blocks hold 32
    /// of them, two blocks per pooled connection: the request stays small (the body
    /// is boxed) so an idle pooled connection costs ~16 KiB there, not ~30.
    #[test]
    fn an_upstream_request_fits_a_small_channel_slot() {
        let size = std::mem::size_of::<http::Request<super::UpstreamBody>>();
        assert!(size <= 256, "{size} bytes");
    }
}
