//! The one place where a failure becomes an HTTP reply: status from the
//! response flag, the flag in `x-meshfast-flags`, Envoy's words in the body.

use crate::body::ProxyBody;
use crate::flags::ResponseFlag;
use bytes::Bytes;
use http::{header, HeaderValue, Response};

pub const FLAGS_HEADER: &str = "x-meshfast-flags";

pub fn local_reply(flag: ResponseFlag, request_id: Option<&HeaderValue>) -> Response<ProxyBody> {
    let body = flag.body();
    let mut resp = Response::new(ProxyBody::Local(
        (!body.is_empty()).then(|| Bytes::from_static(body.as_bytes())),
    ));
    *resp.status_mut() = flag.status();
    let h = resp.headers_mut();
    h.insert(FLAGS_HEADER, HeaderValue::from_static(flag.as_str()));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(id) = request_id {
        h.insert("x-request-id", id.clone());
    }
    resp
}
