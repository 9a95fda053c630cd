//! The one place where a failure becomes an HTTP reply: status from the
//! response flag, the flag in `x-meshfast-flags`, Envoy's words in the body.

use crate::body::ProxyBody;
use crate::flags::ResponseFlag;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

pub const FLAGS_HEADER: &str = "x-meshfast-flags";

pub fn local_reply(flag: ResponseFlag, request_id: Option<&HeaderValue>) -> Response<ProxyBody> {
    let body = flag.body();
    reply(
        flag.status(),
        Some(flag),
        (!body.is_empty()).then(|| Bytes::from_static(body.as_bytes())),
        request_id,
    )
}

/// A locally generated answer; `flag` goes into `x-meshfast-flags`.
pub fn reply(
    status: StatusCode,
    flag: Option<ResponseFlag>,
    body: Option<Bytes>,
    request_id: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let has_body = body.is_some();
    let mut resp = Response::new(ProxyBody::Local(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Some(flag) = flag {
        h.insert(FLAGS_HEADER, HeaderValue::from_static(flag.as_str()));
    }
    if has_body {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if let Some(id) = request_id {
        h.insert("x-request-id", id.clone());
    }
    resp
}

/// Adds a flag to a response that may already carry some (`DI,URX`).
pub fn add_flag<B>(resp: &mut Response<B>, flag: ResponseFlag) {
    let h = resp.headers_mut();
    let joined = match h.get(FLAGS_HEADER).and_then(|v| v.to_str().ok()) {
        Some(old) => format!("{old},{}", flag.as_str()),
        None => flag.as_str().to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        h.insert(FLAGS_HEADER, v);
    }
}
