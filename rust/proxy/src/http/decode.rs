//! Decode: what the request says about itself, taken once — its id, the
//! client's identity, the authority it is for, its path normalized (routes
//! match, and the upstream gets, the normalized path: Istio's
//! `pathNormalization`). Headers a client may not set for itself are dropped.

use super::ctx::RequestCtx;
use super::respond::{Answer, FLAGS_HEADER, REQUEST_ID};
use crate::body::DownBody;
use crate::flags::ResponseFlag;
use crate::tls::ListenerTls;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri};
use hyper::body::Incoming;
use meshfast_route::normalize_path;
use std::borrow::Cow;

/// Envoy's header for the client certificate's identity (Istio: `By=...;URI=...`).
const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

pub fn decode(
    ctx: &mut RequestCtx<'_>,
    tls: Option<&ListenerTls>,
    mut req: Request<Incoming>,
) -> Result<Request<DownBody>, Answer> {
    let h = req.headers_mut();
    let id = match h.get(REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = new_request_id();
            h.insert(REQUEST_ID, id.clone());
            id
        }
    };
    ctx.request_id = Some(id);
    // Flags are this proxy's report to its client; a client's never travel on.
    h.remove(FLAGS_HEADER);
    if let Some(t) = tls.filter(|t| t.forward_client_cert) {
        set_client_cert(h, t.identity.as_deref(), ctx.conn.identity.as_deref());
    }
    let Some(authority) = authority(&req) else {
        return Err(Box::new(ctx.fail(ResponseFlag::DownstreamProtocolError)));
    };
    if let Cow::Owned(path) = normalize_path(req.uri().path(), ctx.snap.path_normalization) {
        if set_path(&mut req, &path).is_none() {
            return Err(Box::new(ctx.fail(ResponseFlag::DownstreamProtocolError)));
        }
    }
    ctx.authority = authority;
    Ok(req.map(DownBody::Streaming))
}

/// Replaces the request's path, keeping its query (and scheme and authority).
fn set_path<B>(req: &mut Request<B>, path: &str) -> Option<()> {
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    *req.uri_mut() = Uri::from_parts(parts).ok()?;
    Some(())
}

/// Mesh inbound: only our own record of the client's identity goes on
/// (Istio's SANITIZE_SET), never one the client wrote itself.
fn set_client_cert(h: &mut HeaderMap, own: Option<&str>, client: Option<&str>) {
    h.remove(XFCC);
    let Some(id) = client else {
        return;
    };
    let value = match own {
        Some(by) => format!("By={by};URI={id}"),
        None => format!("URI={id}"),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(XFCC, v);
    }
}

/// `:authority` (HTTP/2, absolute-form HTTP/1.1) or the Host header.
fn authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// A random (version 4) UUID, as Envoy generates for `x-request-id`.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v = fastrand::u128(..);
    // Version 4, variant 10xx.
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, byte) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *byte = HEX[((v >> (nibble * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().expect("ascii");
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn a_clients_own_client_cert_header_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(XFCC, HeaderValue::from_static("URI=spiffe://forged"));
        set_client_cert(&mut h, Some("spiffe://td/ns/a/sa/me"), None);
        assert!(h.get(XFCC).is_none());
        set_client_cert(
            &mut h,
            Some("spiffe://td/ns/a/sa/me"),
            Some("spiffe://td/ns/b/sa/you"),
        );
        assert_eq!(
            h.get(XFCC).map(|v| v.as_bytes()),
            Some(&b"By=spiffe://td/ns/a/sa/me;URI=spiffe://td/ns/b/sa/you"[..])
        );
    }

    #[test]
    fn authority_prefers_the_uri_then_host() {
        let req = Request::get("http://a.example:8080/x")
            .header(header::HOST, "b.example")
            .body(())
            .expect("request");
        assert_eq!(authority(&req).as_deref(), Some("a.example:8080"));
        let req = Request::get("/x")
            .header(header::HOST, "b.example")
            .body(())
            .expect("request");
        assert_eq!(authority(&req).as_deref(), Some("b.example"));
        let req = Request::get("/x")
            .header(header::HOST, "")
            .body(())
            .expect("request");
        assert_eq!(authority(&req), None);
    }
}
