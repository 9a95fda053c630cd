//! Bodies that stream through the proxy frame by frame (never buffered whole),
//! counting bytes as they pass.

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
/// response body, or earlier on error).
#[derive(Debug)]
pub struct LoadGuard(pub Arc<Load>);

impl LoadGuard {
    pub fn start(load: &Arc<Load>) -> Self {
        load.start();
        Self(load.clone())
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Any body plus byte counters; the guards it holds live as long as the body.
#[derive(Debug)]
pub struct Metered<B> {
    inner: B,
    sinks: Vec<Arc<Counters>>,
    direction: Direction,
    _guards: Vec<Box<dyn std::fmt::Debug + Send + Sync>>,
}

impl<B> Metered<B> {
    pub fn new(inner: B, direction: Direction, sinks: Vec<Arc<Counters>>) -> Self {
        Self {
            inner,
            sinks,
            direction,
            _guards: Vec::new(),
        }
    }

    pub fn hold(&mut self, guard: impl std::fmt::Debug + Send + Sync + 'static) {
        self._guards.push(Box::new(guard));
    }

    fn count(&self, n: u64) {
        for s in &self.sinks {
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

/// What the proxy answers with: the upstream's body, or a local reply.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream(Metered<Incoming>),
    Local(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Upstream(b) => Pin::new(b).poll_frame(cx),
            Self::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(b) => b.is_end_stream(),
            Self::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(b) => b.size_hint(),
            Self::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
