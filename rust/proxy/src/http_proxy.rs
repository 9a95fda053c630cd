//! One HTTP request through the proxy: route, pick a cluster and endpoint,
//! forward with the bodies streaming both ways, answer locally on failure.

use crate::body::{Direction, LoadGuard, Metered, ProxyBody};
use crate::flags::ResponseFlag;
use crate::pool;
use crate::respond::local_reply;
use crate::runtime::{ListenerKind, Runtime};
use crate::stats::ActiveGuard;
use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use meshfast_ir::UpstreamProtocol;
use meshfast_route::RequestHead;
use std::convert::Infallible;
use std::sync::Arc;

/// What a connection knows that its requests need.
#[derive(Debug)]
pub struct ConnCtx {
    pub store: Arc<ArcSwap<Runtime>>,
    pub listener_id: usize,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn serve(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    // One load per request: this request sees this snapshot to its end.
    let snap = ctx.store.load_full();
    Ok(proxy(req, &snap, ctx.listener_id).await)
}

async fn proxy(
    mut req: Request<Incoming>,
    snap: &Runtime,
    listener_id: usize,
) -> Response<ProxyBody> {
    if !req.headers().contains_key(REQUEST_ID) {
        req.headers_mut().insert(REQUEST_ID, new_request_id());
    }
    let request_id = req.headers().get(REQUEST_ID).cloned();

    let Some(listener) = snap.listener(listener_id) else {
        return local_reply(ResponseFlag::NoRoute, request_id.as_ref());
    };
    let _active = ActiveGuard::request(&listener.stats);
    let ListenerKind::Http(table) = &listener.kind else {
        return local_reply(ResponseFlag::NoRoute, request_id.as_ref());
    };
    let fail = |flag: ResponseFlag, extra: &[&crate::stats::Counters]| {
        listener.stats.flag(flag);
        listener.stats.response(flag.status().as_u16());
        for c in extra {
            c.flag(flag);
            c.response(flag.status().as_u16());
        }
        local_reply(flag, request_id.as_ref())
    };

    let Some(authority) = authority(&req) else {
        return fail(ResponseFlag::DownstreamProtocolError, &[]);
    };
    let head = RequestHead {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query(),
        authority: &authority,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        headers: req.headers(),
    };
    let Some((_vhost, route)) = table.find(&head) else {
        return fail(ResponseFlag::NoRoute, &[]);
    };
    let route = &route.action;
    let _route_active = ActiveGuard::request(&route.stats);
    let Ok(cluster) = route.destinations.pick() else {
        return fail(ResponseFlag::NoCluster, &[&route.stats]);
    };
    let _cluster_active = ActiveGuard::request(&cluster.stats);
    let Some(endpoint) = cluster.pick() else {
        return fail(
            ResponseFlag::NoHealthyUpstream,
            &[&route.stats, &cluster.stats],
        );
    };

    // Rewrite the request for the upstream, keeping the original authority:
    // in Host for HTTP/1.1, in :authority for HTTP/2.
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let http2 = cluster.protocol == UpstreamProtocol::Http2;
    let uri = if http2 {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = http::uri::Authority::try_from(authority.as_str()).ok();
        uri.path_and_query = Some(path);
        Uri::from_parts(uri)
    } else {
        Uri::from_parts({
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = Some(path);
            uri
        })
    };
    let Ok(uri) = uri else {
        return fail(ResponseFlag::DownstreamProtocolError, &[]);
    };
    parts.uri = uri;
    if http2 {
        parts.version = Version::HTTP_2;
        parts.headers.remove(header::HOST);
    } else {
        parts.version = Version::HTTP_11;
        if let Ok(host) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, host);
        }
    }
    let sinks = [
        Some(listener.stats.clone()),
        Some(route.stats.clone()),
        Some(cluster.stats.clone()),
    ];
    let body = Metered::new(body, Direction::In, sinks.clone());
    let upstream_req = Request::from_parts(parts, body);

    let load = LoadGuard::start(&endpoint.load);
    let new_connection = || {
        cluster
            .stats
            .cx_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let sent = pool::send(
        &endpoint.address,
        http2,
        cluster.connect_timeout,
        new_connection,
        upstream_req,
    );
    let result = match route.timeout {
        Some(t) => match tokio::time::timeout(t, sent).await {
            Ok(r) => r,
            Err(_) => {
                return fail(
                    ResponseFlag::UpstreamRequestTimeout,
                    &[&route.stats, &cluster.stats],
                )
            }
        },
        None => sent.await,
    };
    let (resp, lease) = match result {
        Ok(sent) => sent,
        Err(e) if e.is_connect() => {
            return fail(
                ResponseFlag::UpstreamConnectFailure,
                &[&route.stats, &cluster.stats],
            );
        }
        Err(_) => {
            return fail(
                ResponseFlag::UpstreamConnectionTermination,
                &[&route.stats, &cluster.stats],
            );
        }
    };

    let status = resp.status().as_u16();
    listener.stats.response(status);
    route.stats.response(status);
    cluster.stats.response(status);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let mut body = Metered::new(body, Direction::Out, sinks);
    body.hold(load, lease);
    if let Some(id) = request_id {
        parts.headers.entry(REQUEST_ID).or_insert(id);
    }
    Response::from_parts(parts, ProxyBody::Upstream(body))
}

/// `:authority` (HTTP/2, absolute-form HTTP/1.1) or the Host header.
fn authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// Connection-scoped headers describe one hop and must not be forwarded (RFC 9110 7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION).cloned() {
        if let Ok(conn) = conn.to_str() {
            for name in conn.split(',') {
                let name = name.trim();
                if !name.is_empty() && !name.eq_ignore_ascii_case("te") {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    // TE may only say "trailers" past the first hop (gRPC relies on it).
    if let Some(te) = headers.get(header::TE) {
        if te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            return;
        }
        headers.remove(header::TE);
    }
}

/// A random (version 4) UUID, as Envoy generates for `x-request-id`.
fn new_request_id() -> HeaderValue {
    let v = fastrand::u128(..);
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let s = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (v >> 96) as u32,
        (v >> 80) as u16,
        (v >> 64) as u16,
        (v >> 48) as u16,
        v & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("-"))
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
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(h.get("x-kept").is_some());
    }
}
