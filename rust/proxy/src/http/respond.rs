//! The response as it leaves: local answers are built here, and every
//! response — local or the upstream's — is finished here once: the request
//! id and the `x-meshfast-flags` header rendered
//! from the request's context. An upstream's own `x-meshfast-flags` is
//! dropped: the header speaks for this hop only, so no upstream (nor a client
//! of an upstream meshfast) can make us report a flag we did not set.

use super::ctx::RequestCtx;
use crate::body::{BodyError, Metered, RequestBody};
use crate::flags::ResponseFlag;
use crate::pool::Held;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

pub const FLAGS_HEADER: HeaderName = HeaderName::from_static("x-meshfast-flags");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An answer a phase gives instead of letting the request go on. Boxed: it
/// is the rarer path, and every phase's `Result` stays small.
pub type Answer = Box<Response<ProxyBody>>;

/// Envoy's mark on a reply refused by a cluster's circuit breakers.
const OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");

/// The local reply for a failure: the flag's status, Envoy's words as the body
/// (and, past a connection-pool limit, Envoy's `x-envoy-overloaded: true`).
pub fn failure(flag: ResponseFlag) -> Response<ProxyBody> {
    let body = flag.body();
    let mut resp = local(
        flag.status(),
        (!body.is_empty()).then(|| Bytes::from_static(body.as_bytes())),
    );
    if flag == ResponseFlag::UpstreamOverflow {
        resp.headers_mut()
            .insert(OVERLOADED, HeaderValue::from_static("true"));
    }
    resp
}

/// The answer on a connection whose listener is gone: `NR`, with the
/// request id (the client's, or a new one) and the flag as every answer has.
pub fn unserved<B>(req: &http::Request<B>) -> Response<ProxyBody> {
    let flag = ResponseFlag::NoRoute;
    let mut resp = failure(flag);
    let h = resp.headers_mut();
    h.insert(REQUEST_ID, super::decode::request_id(req.headers()));
    h.insert(FLAGS_HEADER, HeaderValue::from_static(flag.as_str()));
    resp
}

/// A locally generated answer (plain text when it has a body).
pub fn local(status: StatusCode, body: Option<Bytes>) -> Response<ProxyBody> {
    let has_body = body.is_some();
    let mut resp = Response::new(ProxyBody::Local(body));
    *resp.status_mut() = status;
    if has_body {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

/// The last step before the response leaves, for every response.
pub fn finish(ctx: &mut RequestCtx<'_>, resp: &mut Response<ProxyBody>) {
    let h = resp.headers_mut();
    if let Some(id) = &ctx.request_id {
        h.entry(REQUEST_ID).or_insert_with(|| id.clone());
    }
    h.remove(FLAGS_HEADER);
    if ctx.http1 && ctx.flags.contains(ResponseFlag::DownstreamProtocolError) {
        // After bytes it could not frame or pass on, nothing later on the
        // connection can be trusted: no pipelined request behind it is read.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !ctx.flags.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&ctx.flags.render()) {
            h.insert(FLAGS_HEADER, v);
        }
    }
}

/// What the proxy answers with: the upstream's body, the upstream's body read
/// whole for a filter (perhaps changed by it), or a local reply.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream(Metered<Held<Incoming>>),
    Buffered(Metered<RequestBody>),
    Local(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    #[inline] // On every response's path, under the connection's wrapper body.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Upstream(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Stream))),
            Self::Buffered(b) => Pin::new(b).poll_frame(cx),
            Self::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(b) => b.is_end_stream(),
            Self::Buffered(b) => b.is_end_stream(),
            Self::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(b) => b.size_hint(),
            Self::Buffered(b) => b.size_hint(),
            Self::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
