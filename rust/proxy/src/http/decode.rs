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
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::Incoming;
use meshfast_route::normalize_path;
use std::borrow::Cow;

/// The longest request target passed on (RELIABILITY.md §3 case 11: 414 past 8 KiB).
const MAX_TARGET: usize = 8 << 10;

/// Envoy's header for the client certificate's identity (Istio: `By=...;URI=...`).
const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

pub fn decode(
    ctx: &mut RequestCtx<'_>,
    tls: Option<&ListenerTls>,
    mut req: Request<Incoming>,
) -> Result<Request<DownBody>, Answer> {
    ctx.http1 = req.version() < Version::HTTP_2;
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
    if let Some(tracer) = &ctx.snap.tracer {
        // Before any refusal: a refused request is traced too (Envoy's are).
        let inbound = ctx.listener.name.starts_with("inbound");
        ctx.span = tracer.begin(&mut req, inbound);
    }
    let h = req.headers_mut();
    // Flags are this proxy's report to its client; a client's never travel on.
    h.remove(FLAGS_HEADER);
    if let Some(t) = tls.filter(|t| t.forward_client_cert) {
        set_client_cert(h, t.identity.as_deref(), ctx.conn.identity.as_deref());
    }
    let host = match framing(&req) {
        Ok(host) => host,
        Err((status, why)) => return Err(refuse(ctx, &req, status, why)),
    };
    let Some(authority) = authority(&req, host).filter(|a| valid_authority(a)) else {
        return Err(refuse(ctx, &req, StatusCode::BAD_REQUEST, "bad request\n"));
    };
    if let Cow::Owned(path) = normalize_path(req.uri().path(), ctx.snap.path_normalization) {
        if set_path(&mut req, &path).is_none() {
            return Err(refuse(ctx, &req, StatusCode::BAD_REQUEST, "bad request\n"));
        }
    }
    ctx.authority = authority;
    Ok(req.map(DownBody::Streaming))
}

/// A request this proxy will not pass on: answered `DPE`, and on HTTP/1.1
/// the connection is closed after the answer — after bytes it could not
/// frame, nothing later on the connection can be trusted (RELIABILITY.md §3
/// case 10: no pipelined request after a framing error).
fn refuse<B>(
    ctx: &mut RequestCtx<'_>,
    req: &Request<B>,
    status: StatusCode,
    why: &'static str,
) -> Answer {
    let body = bytes::Bytes::from_static(why.as_bytes());
    let flag = Some(ResponseFlag::DownstreamProtocolError);
    let mut resp = ctx.local(status, flag, Some(body));
    if req.version() < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Box::new(resp)
}

/// What this proxy refuses to pass on however it is routed (RFC 9112/9110):
/// two Hosts, or a Host that disagrees with an absolute-form target; any
/// transfer coding but a lone `chunked` (dropping the others while re-framing
/// would change the body); CONNECT (no route tunnels yet).
fn framing<B>(req: &Request<B>) -> Result<Option<&HeaderValue>, (StatusCode, &'static str)> {
    if req.method() == Method::CONNECT {
        return Err((StatusCode::NOT_IMPLEMENTED, "CONNECT is not supported\n"));
    }
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_TARGET {
        return Err((StatusCode::URI_TOO_LONG, "request target too long\n"));
    }
    let path = req.uri().path();
    let asterisk = path == "*" && req.method() == Method::OPTIONS;
    if !(path.starts_with('/') || asterisk) {
        // Only origin-form paths are normalized and routed (an HTTP/2 `:path`
        // of `x/../admin` would otherwise pass unnormalized).
        return Err((StatusCode::BAD_REQUEST, "the path must start with /\n"));
    }
    if req.version() >= Version::HTTP_2 {
        // HTTP/1.1 heads are counted by hyper's parser; HTTP/2 lists only by size.
        if req.headers().len() > crate::downstream::MAX_HEADERS {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many headers\n",
            ));
        }
        // HTTP/2 has no transfer codings (hyper refuses connection-specific
        // headers) and carries the authority in `:authority`; Host stands in
        // only where `:authority` is missing.
        let host = req
            .uri()
            .authority()
            .is_none()
            .then(|| req.headers().get(header::HOST));
        return Ok(host.flatten());
    }
    let h = req.headers();
    let mut hosts = h.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err((StatusCode::BAD_REQUEST, "more than one Host\n"));
    }
    if let (Some(a), Some(host)) = (req.uri().authority(), host) {
        if !host.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) {
            let why = "Host differs from the request target\n";
            return Err((StatusCode::BAD_REQUEST, why));
        }
    }
    let mut codings = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(te) = codings.next() {
        let lone_chunked =
            te.as_bytes().eq_ignore_ascii_case(b"chunked") && codings.next().is_none();
        if !lone_chunked {
            let why = "transfer coding not supported\n";
            return Err((StatusCode::NOT_IMPLEMENTED, why));
        }
    }
    Ok(host)
}

/// `host[:port]` as RFC 3986 has it — a reg-name (unreserved characters and
/// sub-delims; no percent-encoding), IPv4 or bracketed IPv6 literal, and a
/// numeric port (a subset of what the `http` crate parses, property-tested):
/// no userinfo, path or whitespace.
fn valid_authority(a: &str) -> bool {
    let (host, port) = match a.rfind(':') {
        Some(i) if !a[i..].contains(']') => (&a[..i], Some(&a[i + 1..])),
        _ => (a, None),
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            let allowed = |b: u8| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'')
                    || matches!(b, b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
            };
            !host.is_empty() && host.bytes().all(allowed)
        }
    };
    host_ok && port_ok
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
fn authority<B>(req: &Request<B>, host: Option<&HeaderValue>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    let host = host?.to_str().ok()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// The request's id: the client's `x-request-id`, or a new one.
pub fn request_id(h: &HeaderMap) -> HeaderValue {
    h.get(REQUEST_ID).cloned().unwrap_or_else(new_request_id)
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
mod tests;
