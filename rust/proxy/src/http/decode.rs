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
    if let Err((status, why)) = framing(&req) {
        let body = bytes::Bytes::from_static(why.as_bytes());
        let flag = Some(ResponseFlag::DownstreamProtocolError);
        return Err(Box::new(ctx.local(status, flag, Some(body))));
    }
    let Some(authority) = authority(&req).filter(|a| valid_authority(a)) else {
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

/// What this proxy refuses to pass on however it is routed (RFC 9112/9110):
/// two Hosts, or a Host that disagrees with an absolute-form target; any
/// transfer coding but a lone `chunked` (dropping the others while re-framing
/// would change the body); CONNECT (no route tunnels yet).
fn framing<B>(req: &Request<B>) -> Result<(), (StatusCode, &'static str)> {
    let h = req.headers();
    let mut hosts = h.get_all(header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return Err((StatusCode::BAD_REQUEST, "more than one Host\n"));
    }
    if let (Some(a), Some(host)) = (req.uri().authority(), h.get(header::HOST)) {
        if req.version() < Version::HTTP_2
            && !host.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())
        {
            return Err((
                StatusCode::BAD_REQUEST,
                "Host differs from the request target\n",
            ));
        }
    }
    let mut codings = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(te) = codings.next() {
        let lone_chunked =
            te.as_bytes().eq_ignore_ascii_case(b"chunked") && codings.next().is_none();
        if !lone_chunked {
            return Err((
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding not supported\n",
            ));
        }
    }
    if req.method() == Method::CONNECT {
        return Err((StatusCode::NOT_IMPLEMENTED, "CONNECT is not supported\n"));
    }
    Ok(())
}

/// `host[:port]` as RFC 3986 has it: a reg-name, IPv4 or bracketed IPv6
/// literal, and a numeric port; no userinfo, path or whitespace.
fn valid_authority(a: &str) -> bool {
    let (host, port) = match a.rfind(':') {
        Some(i) if !a[i..].contains(']') => (&a[..i], Some(&a[i + 1..])),
        _ => (a, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            })
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
    fn authorities_are_host_and_numeric_port_only() {
        for good in [
            "a",
            "a.example:80",
            "10.0.0.1:8080",
            "[::1]:15001",
            "[2001:db8::1]",
            "svc-1.ns_x",
        ] {
            assert!(valid_authority(good), "{good}");
        }
        for bad in [
            "a b", "a@b", "a/b", "a:80:80", "a:abc", "a:", "a:99999", ":80", "", "[::1", "[zz]:1",
            "a\nb",
        ] {
            assert!(!valid_authority(bad), "{bad:?}");
        }
    }

    #[test]
    fn framing_refuses_what_cannot_be_passed_on_faithfully() {
        let req = |f: fn(http::request::Builder) -> http::request::Builder| {
            f(Request::builder().uri("/")).body(()).expect("request")
        };
        assert_eq!(framing(&req(|b| b.header("host", "a"))), Ok(()));
        assert_eq!(
            framing(&req(|b| b
                .header("host", "a")
                .header("transfer-encoding", "Chunked"))),
            Ok(())
        );
        let status = |r: Result<(), (StatusCode, &str)>| r.err().map(|e| e.0.as_u16());
        assert_eq!(
            status(framing(&req(|b| b.header("host", "a").header("host", "b")))),
            Some(400)
        );
        for te in ["gzip, chunked", "chunked, gzip", "gzip"] {
            let r = Request::builder()
                .uri("/")
                .header("transfer-encoding", te)
                .body(())
                .expect("request");
            assert_eq!(status(framing(&r)), Some(501), "{te}");
        }
        let twice = req(|b| {
            b.header("transfer-encoding", "chunked")
                .header("transfer-encoding", "chunked")
        });
        assert_eq!(status(framing(&twice)), Some(501));
        let connect = Request::builder()
            .method("CONNECT")
            .uri("a:443")
            .body(())
            .expect("request");
        assert_eq!(status(framing(&connect)), Some(501));
        let mismatch = Request::builder()
            .uri("http://a/")
            .header("host", "b")
            .body(())
            .expect("request");
        assert_eq!(status(framing(&mismatch)), Some(400));
        let agree = Request::builder()
            .uri("http://a:80/")
            .header("host", "A:80")
            .body(())
            .expect("request");
        assert_eq!(framing(&agree), Ok(()));
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
