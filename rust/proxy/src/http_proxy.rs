//! One HTTP request through the proxy: route, then CORS, fault injection,
//! local answers (redirect, direct response), or forwarding — with rewrites,
//! header operations, mirrors and retries — bodies streaming both ways.

use crate::actions::{self, Abort, Outcome};
use crate::body::{Direction, DownBody, LoadGuard, Metered, ProxyBody, Recording, RequestBody};
use crate::cluster::{ClusterRt, EndpointRt, Health};
use crate::filter_body::{self, ReadError};
use crate::filters::{Ending, FilterAction, FilterError, FilterHook, FilterState, RequestInfo};
use crate::flags::ResponseFlag;
use crate::hashing::Key;
use crate::mirror;
use crate::pool::{self, Failed, UpstreamBody};
use crate::respond::{add_flag, local_reply, reply, FLAGS_HEADER};
use crate::runtime::Hook;
use crate::runtime::{Destination, ListenerKind, LocalAction, RouteRt, Runtime};
use crate::stats::{ActiveGuard, Counters};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use meshfast_ir::UpstreamProtocol;
use meshfast_route::RequestHead;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// What a connection knows that its requests need.
pub struct ConnCtx {
    pub store: Arc<ArcSwap<Runtime>>,
    pub listener_id: usize,
}

impl std::fmt::Debug for ConnCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnCtx")
            .field("listener_id", &self.listener_id)
            .finish()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Request bodies up to this size are buffered when a retry or mirror may
/// need to send them again (Envoy buffers for the same reason).
const REPLAY_LIMIT: u64 = 64 << 10;
/// Envoy tries this many times to pick a host other than the last one.
const HOST_SELECTION_ATTEMPTS: usize = 5;

/// What the accepted connection tells about where it came from and went to.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Where the client was going before iptables redirected it here.
    pub original_dst: Option<SocketAddr>,
    /// The client's SPIFFE ID, when it came over mesh mTLS.
    pub identity: Option<Arc<str>>,
}

/// Envoy's header for the client certificate's identity (Istio: `By=...;URI=...`).
const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Envoy's header for choosing an original-destination endpoint explicitly.
const ORIGINAL_DST_HOST: HeaderName = HeaderName::from_static("x-envoy-original-dst-host");

pub fn serve(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
    conn: Conn,
) -> Pin<Box<impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>> {
    // Boxed once here: hyper moves the service's future around (an HTTP/2 stream's
    // through several frames into its own task) and a request's state is ~6 KB, moved
    // whole each time: 8% of an h2 request's CPU was memmove. Boxed, h2 requests cost
    // ~0.4 µs less user time; HTTP/1 ones (whose future hyper keeps in one box per
    // connection) pay a malloc, +0.1-0.2 µs (A/B runs, bench/RESULTS.md).
    Box::pin(async move {
        // One load per request: this request sees this snapshot to its end.
        let snap = ctx.store.load_full();
        Ok(proxy(req, &snap, &ctx, conn).await)
    })
}

/// The counters a request touches, for local replies at any stage.
struct Scope<'a> {
    listener: &'a Counters,
    route: Option<&'a Counters>,
    cluster: Option<&'a Counters>,
    request_id: Option<HeaderValue>,
}

impl Scope<'_> {
    fn fail(&self, flag: ResponseFlag) -> Response<ProxyBody> {
        self.count(flag, flag.status());
        local_reply(flag, self.request_id.as_ref())
    }

    fn count(&self, flag: ResponseFlag, status: StatusCode) {
        for c in [Some(self.listener), self.route, self.cluster]
            .into_iter()
            .flatten()
        {
            c.flag(flag);
            c.response(status.as_u16());
        }
    }

    /// The reply when a body a filter reads whole could not be read: `too_large`
    /// past the filter's limit, a failure with `broken` when the stream broke.
    fn unread(
        &self,
        error: ReadError,
        too_large: (StatusCode, &'static [u8]),
        broken: ResponseFlag,
    ) -> Response<ProxyBody> {
        match error {
            ReadError::TooLarge => {
                self.local(too_large.0, None, Some(Bytes::from_static(too_large.1)))
            }
            ReadError::Broken => self.fail(broken),
        }
    }

    fn local(
        &self,
        status: StatusCode,
        flag: Option<ResponseFlag>,
        body: Option<Bytes>,
    ) -> Response<ProxyBody> {
        for c in [Some(self.listener), self.route].into_iter().flatten() {
            if let Some(f) = flag {
                c.flag(f);
            }
            c.response(status.as_u16());
        }
        reply(status, flag, body, self.request_id.as_ref())
    }
}

async fn proxy(
    mut req: Request<Incoming>,
    snap: &Runtime,
    ctx: &ConnCtx,
    conn: Conn,
) -> Response<ProxyBody> {
    let listener_id = ctx.listener_id;
    if !req.headers().contains_key(REQUEST_ID) {
        req.headers_mut().insert(REQUEST_ID, new_request_id());
    }
    let request_id = req.headers().get(REQUEST_ID).cloned();

    let Some(listener) = snap.listener(listener_id) else {
        return local_reply(ResponseFlag::NoRoute, request_id.as_ref());
    };
    let _active = ActiveGuard::request(&listener.stats);
    let mut scope = Scope {
        listener: &listener.stats,
        route: None,
        cluster: None,
        request_id,
    };
    let ListenerKind::Http(table, tls) = &listener.kind else {
        return scope.fail(ResponseFlag::NoRoute);
    };
    // Mesh inbound: only our own record of the client's identity goes on
    // (Istio's SANITIZE_SET), never one the client wrote itself.
    if let Some(t) = tls.as_ref().filter(|t| t.forward_client_cert) {
        req.headers_mut().remove(XFCC);
        if let Some(id) = &conn.identity {
            let value = match &t.identity {
                Some(by) => format!("By={by};URI={id}"),
                None => format!("URI={id}"),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                req.headers_mut().insert(XFCC, v);
            }
        }
    }
    let Some(mut authority) = authority(&req) else {
        return scope.fail(ResponseFlag::DownstreamProtocolError);
    };
    let Some((_vhost, route)) = table.find(&head_of(&req, &authority)) else {
        return scope.fail(ResponseFlag::NoRoute);
    };
    let mut route = &route.action;
    let mut _route_active = ActiveGuard::request(&route.stats);
    scope.route = Some(&route.stats);
    let mut picked = route.destinations.pick();

    // Python filters run first, as Envoy's HTTP filters run before CORS, fault
    // and the router. Only routes that have some ever get here.
    let mut req = req.map(DownBody::Streaming);
    let mut filtered = None;
    if !route.filters.is_empty() {
        if let Some(Hook(hook)) = snap.filters.clone() {
            let info = RequestInfo {
                method: req.method().as_str().to_owned(),
                path: req.uri().path().to_owned(),
                query: req.uri().query().unwrap_or_default().to_owned(),
                authority: authority.clone(),
                scheme: req.uri().scheme_str().unwrap_or("http").to_owned(),
                peer: conn.peer.to_string(),
                identity: conn.identity.as_deref().unwrap_or_default().to_owned(),
                route: route.name.clone(),
                cluster: picked
                    .and_then(|d| d.cluster.as_ref())
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            };
            let host_before = req.headers().get(header::HOST).cloned();
            // Boxed, as every path most requests never take: the request's
            // future (allocated and moved whole per request) stays small.
            let (r, f, headers_changed) =
                match Box::pin(request_filters(hook, info, route, req, &scope)).await {
                    Ok(done) => done,
                    Err(resp) => return resp,
                };
            req = r;
            filtered = Some(f);
            // Changed headers may match another route (Envoy's cleared route
            // cache): routing on a claim a filter put in a header works.
            if headers_changed {
                // A filter that changed Host (for HTTP/2 too: it stands for
                // :authority, as in Envoy) moves the request to that host.
                let host = req.headers().get(header::HOST);
                if host != host_before.as_ref() {
                    if let Some(h) = host.and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty()) {
                        authority = h.to_owned();
                    }
                }
                let Some((_, again)) = table.find(&head_of(&req, &authority)) else {
                    return scope.fail(ResponseFlag::NoRoute);
                };
                if !std::ptr::eq(&again.action, route) {
                    route = &again.action;
                    _route_active = ActiveGuard::request(&route.stats);
                    scope.route = Some(&route.stats);
                    picked = route.destinations.pick();
                }
            }
        }
    }

    let resp = route_request(
        req,
        conn,
        &listener.stats,
        route,
        picked,
        authority,
        &mut scope,
        &mut filtered,
    )
    .await;
    // The filters let the request through but it got no response phase (a
    // local reply, a failure, a tunnel): their log phase still hears how it ended.
    if let Some(f) = filtered.take() {
        let flags = resp
            .headers()
            .get(FLAGS_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        f.ended(resp.status(), flags);
    }
    resp
}

/// What follows routing and filters: CORS, fault injection, local answers,
/// then forwarding to the picked destination.
#[allow(clippy::too_many_arguments)]
async fn route_request<'a>(
    mut req: Request<DownBody>,
    conn: Conn,
    listener: &'a Arc<Counters>,
    route: &'a RouteRt,
    picked: Option<&'a Destination>,
    authority: String,
    scope: &mut Scope<'a>,
    filtered: &mut Option<Filtered<'a>>,
) -> Response<ProxyBody> {
    // CORS (before everything else, as Envoy's filter chain has it).
    let origin = req.headers().get(header::ORIGIN).cloned();
    let cors_origin = match (&route.cors, &origin) {
        (Some(cors), Some(o)) if o.to_str().is_ok_and(|o| cors.allows(o)) => Some(o.clone()),
        _ => None,
    };
    if let Some(cors) = &route.cors {
        let preflight = req.method() == Method::OPTIONS
            && origin.is_some()
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            if let Some(o) = &cors_origin {
                let mut resp = scope.local(StatusCode::OK, None, None);
                cors.preflight(o, resp.headers_mut());
                return resp;
            }
            if !cors.forward_unmatched_preflights {
                return scope.local(StatusCode::OK, None, None);
            }
        }
    }

    // Fault injection: delay, then abort.
    let mut delayed = false;
    if let Some(fault) = &route.fault {
        if let Some((delay, pct)) = fault.delay {
            if actions::roll(pct) {
                tokio::time::sleep(delay).await;
                delayed = true;
                route.stats.flag(ResponseFlag::DelayInjected);
            }
        }
        if let Some((abort, pct)) = fault.abort {
            if actions::roll(pct) {
                let mut resp = match abort {
                    Abort::Http(status) => scope.local(
                        status,
                        Some(ResponseFlag::FaultInjected),
                        Some(Bytes::from_static(
                            ResponseFlag::FaultInjected.body().as_bytes(),
                        )),
                    ),
                    Abort::Grpc(code) => {
                        let mut r =
                            scope.local(StatusCode::OK, Some(ResponseFlag::FaultInjected), None);
                        let h = r.headers_mut();
                        h.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/grpc"),
                        );
                        h.insert("grpc-status", HeaderValue::from(code));
                        h.insert(
                            "grpc-message",
                            HeaderValue::from_static("fault filter abort"),
                        );
                        r
                    }
                };
                if delayed {
                    add_flag(&mut resp, ResponseFlag::DelayInjected);
                }
                return resp;
            }
        }
    }

    match &route.local {
        Some(LocalAction::Redirect(r)) => {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let scheme = req.uri().scheme_str().unwrap_or("http");
            let location = r.location(scheme, &authority, pq, &route.matched);
            let mut resp = scope.local(r.code, None, None);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        Some(LocalAction::Direct(d)) => {
            let mut resp = scope.local(d.status, None, d.body.clone());
            route.response_headers.apply(resp.headers_mut());
            return resp;
        }
        None => {}
    }

    let Some(dest) = picked else {
        return scope.fail(ResponseFlag::NoCluster);
    };
    let Some(cluster) = &dest.cluster else {
        return scope.fail(ResponseFlag::NoCluster);
    };
    let _cluster_active = ActiveGuard::request(&cluster.stats);
    scope.cluster = Some(&cluster.stats);

    let key = match &cluster.hash {
        Some(h) => h.key(req.headers(), req.uri().query(), conn.peer),
        None => Key::default(),
    };
    // An original-destination cluster sends to where the request was going.
    let original_dst = if cluster.original_dst {
        let from_header = req
            .headers_mut()
            .remove(ORIGINAL_DST_HOST)
            .and_then(|v| v.to_str().ok()?.parse::<SocketAddr>().ok());
        match from_header.or(conn.original_dst) {
            Some(addr) => Some(addr.to_string()),
            None => return scope.fail(ResponseFlag::NoHealthyUpstream),
        }
    } else {
        None
    };
    let mut forward = Forward {
        listener,
        route,
        dest,
        cluster,
        hash: key.hash,
        original_dst,
        filtered: filtered.take(),
    };
    let sent = forward.run(req, authority, scope).await;
    *filtered = forward.filtered.take();
    let mut resp = match sent {
        Ok(resp) => resp,
        Err(flag) => scope.fail(flag),
    };
    if let Some(o) = &cors_origin {
        if let Some(cors) = &route.cors {
            cors.actual(o, resp.headers_mut());
        }
    }
    if delayed {
        add_flag(&mut resp, ResponseFlag::DelayInjected);
    }
    if let Some(cookie) = key.set_cookie {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

/// The request phase of the route's filters: the body read first when they
/// asked for it (413 past their limit), then their verdict (waited for when it
/// comes from the Trio loop). `Err` is the reply to send instead.
/// `Ok` also says whether the filters changed the request headers.
async fn request_filters<'a>(
    hook: Arc<Box<dyn FilterHook>>,
    info: RequestInfo,
    route: &'a RouteRt,
    req: Request<DownBody>,
    scope: &Scope<'_>,
) -> Result<(Request<DownBody>, Filtered<'a>, bool), Response<ProxyBody>> {
    let (mut parts, body) = req.into_parts();
    let body = match body {
        DownBody::Streaming(body) if route.filter_request_body > 0 => {
            match filter_body::read_whole(&parts.headers, body, route.filter_request_body).await {
                Ok((data, trailers)) => DownBody::Buffered { data, trailers },
                Err(e) => {
                    return Err(scope.unread(
                        e,
                        (StatusCode::PAYLOAD_TOO_LARGE, b"payload too large\n"),
                        ResponseFlag::DownstreamProtocolError,
                    ))
                }
            }
        }
        other => other,
    };
    let data = match &body {
        DownBody::Buffered { data, .. } => Some(data),
        DownBody::Streaming(_) => None,
    };
    let verdict = hook.on_request(&route.filters, &info, &parts.headers, data);
    match verdict.wait(route.filter_budget).await {
        Ok(FilterAction::Continue {
            headers,
            body: new_body,
            state,
        }) => {
            let headers_changed = headers.is_some();
            if let Some(h) = headers {
                parts.headers = h;
            }
            let body = match (body, new_body) {
                (DownBody::Buffered { trailers, .. }, Some(data)) => {
                    filter_body::set_length(&mut parts.headers, data.len());
                    DownBody::Buffered { data, trailers }
                }
                (body, _) => body,
            };
            let filtered = Filtered {
                hook,
                info,
                state,
                route,
            };
            Ok((Request::from_parts(parts, body), filtered, headers_changed))
        }
        Ok(FilterAction::Respond {
            status,
            headers,
            body,
        }) => {
            let mut resp = scope.local(status, None, (!body.is_empty()).then_some(body));
            resp.headers_mut().extend(headers);
            Err(resp)
        }
        Err(e) => Err(filter_failed(&e, route, scope)),
    }
}

/// The failing filter's status (the route's when unknown), flag `FF`.
fn filter_failed(e: &FilterError, route: &RouteRt, scope: &Scope<'_>) -> Response<ProxyBody> {
    let body: &'static [u8] = if e.timeout {
        b"filter timeout\n"
    } else {
        b"filter failure\n"
    };
    scope.local(
        e.status.unwrap_or(route.filter_failure),
        Some(ResponseFlag::FilterFailure),
        Some(Bytes::from_static(body)),
    )
}

/// Forwarding to one cluster, with retries.
struct Forward<'a> {
    listener: &'a Arc<Counters>,
    route: &'a RouteRt,
    dest: &'a Destination,
    cluster: &'a Arc<ClusterRt>,
    /// The consistent-hash key, when the cluster hashes and the request has one.
    hash: Option<u64>,
    /// The one endpoint of an original-destination cluster.
    original_dst: Option<String>,
    /// The filters that ran, for the response phase.
    filtered: Option<Filtered<'a>>,
}

/// The filters that let a request through, for its response and log phases.
struct Filtered<'a> {
    hook: Arc<Box<dyn FilterHook>>,
    /// What they were told, and what they keep per request.
    info: RequestInfo,
    state: FilterState,
    /// The route whose filters ran (a filter may have moved the request on).
    route: &'a RouteRt,
}

impl Filtered<'_> {
    /// The log phase alone, for a request that got no response phase.
    fn ended(self, status: StatusCode, flags: &str) {
        let ending = Ending { status, flags };
        self.hook
            .on_log(&self.route.filters, &self.info, ending, self.state);
    }
}

impl Forward<'_> {
    async fn run(
        &mut self,
        mut req: Request<DownBody>,
        authority: String,
        scope: &Scope<'_>,
    ) -> Result<Response<ProxyBody>, ResponseFlag> {
        let route = self.route;
        // An HTTP/1.1 upgrade (WebSocket) becomes a tunnel only if the upstream
        // answers 101; any other answer keeps the connection in HTTP mode.
        let upgrade = upgrade_protocol(&req).map(|proto| (proto, hyper::upgrade::on(&mut req)));
        let mut template = self.template(req, authority).await?;
        if let Some((proto, _)) = &upgrade {
            template.headers.insert(header::UPGRADE, proto.clone());
            template
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        for m in &route.mirrors {
            if actions::roll(m.millionths) {
                mirror::spawn(m, &template);
            }
        }
        let attempts = match &route.retry {
            Some(r) => r.attempts,
            None => 0,
        };
        // The future is built inside each arm: a local moved into `timeout` would
        // keep its own slot in this future's state beside the copy (twice the size).
        let (resp, lease, load, retries_exhausted) = match route.timeout {
            Some(t) => match tokio::time::timeout(t, self.tries(&mut template, attempts)).await {
                Ok(r) => r?,
                Err(_) => return Err(ResponseFlag::UpstreamRequestTimeout),
            },
            None => self.tries(&mut template, attempts).await?,
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some((_, downstream)) = upgrade {
                self.count_response(scope, resp.status());
                if let Some(f) = self.filtered.take() {
                    f.ended(resp.status(), "");
                }
                return Ok(self.tunnel(resp, downstream, load));
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = match self.filtered.take() {
            Some(filtered) => {
                match Box::pin(
                    self.response_filters(filtered, &mut parts, body, load, lease, scope),
                )
                .await
                {
                    Ok(body) => body,
                    Err(reply) => return Ok(reply),
                }
            }
            None => {
                let mut body = Metered::new(body, Direction::Out, self.sinks());
                body.hold(load, lease);
                ProxyBody::Upstream(body)
            }
        };
        self.count_response(scope, parts.status);
        route.response_headers.apply(&mut parts.headers);
        self.dest.response_headers.apply(&mut parts.headers);
        if let Some(id) = &scope.request_id {
            parts
                .headers
                .entry(REQUEST_ID)
                .or_insert_with(|| id.clone());
        }
        let mut resp = Response::from_parts(parts, body);
        if retries_exhausted {
            self.cluster.stats.flag(ResponseFlag::RetryLimitExceeded);
            add_flag(&mut resp, ResponseFlag::RetryLimitExceeded);
        }
        Ok(resp)
    }

    fn count_response(&self, scope: &Scope<'_>, status: StatusCode) {
        for c in [Some(&**self.listener), scope.route, scope.cluster]
            .into_iter()
            .flatten()
        {
            c.response(status.as_u16());
        }
    }

    /// The response phase of the filters whose request phase ran: the body
    /// read whole first when they asked for it (500 past their limit), their
    /// header (and body) changes applied. `Err` is the reply to send instead.
    async fn response_filters(
        &self,
        filtered: Filtered<'_>,
        parts: &mut http::response::Parts,
        body: Incoming,
        load: LoadGuard,
        lease: Option<pool::Lease>,
        scope: &Scope<'_>,
    ) -> Result<ProxyBody, Response<ProxyBody>> {
        let Filtered {
            hook,
            info,
            state,
            route,
        } = filtered;
        let limit = route.filter_response_body;
        if limit == 0 {
            let verdict = hook.on_response(
                &route.filters,
                &info,
                parts.status,
                &parts.headers,
                None,
                state,
            );
            let edit = verdict
                .wait(route.filter_budget)
                .await
                .map_err(|e| filter_failed(&e, route, scope))?;
            if let Some(h) = edit.headers {
                parts.headers = h;
            }
            let mut body = Metered::new(body, Direction::Out, self.sinks());
            body.hold(load, lease);
            return Ok(ProxyBody::Upstream(body));
        }
        // Counted when sent on below; the lease goes back to the pool once read.
        let mut reading = Metered::new(body, Direction::Out, [None, None, None]);
        reading.hold(load, lease);
        let (data, trailers) = match filter_body::read_whole(&parts.headers, reading, limit).await {
            Ok(read) => read,
            Err(e) => {
                return Err(scope.unread(
                    e,
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        b"response payload too large\n",
                    ),
                    ResponseFlag::UpstreamConnectionTermination,
                ))
            }
        };
        let verdict = hook.on_response(
            &route.filters,
            &info,
            parts.status,
            &parts.headers,
            Some(&data),
            state,
        );
        let edit = verdict
            .wait(route.filter_budget)
            .await
            .map_err(|e| filter_failed(&e, route, scope))?;
        if let Some(h) = edit.headers {
            parts.headers = h;
        }
        let data = match edit.body {
            Some(new) => {
                filter_body::set_length(&mut parts.headers, new.len());
                new
            }
            None => data,
        };
        let frames = if data.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([data])
        };
        let body = RequestBody::Replay { frames, trailers };
        Ok(ProxyBody::Buffered(Metered::new(
            body,
            Direction::Out,
            self.sinks(),
        )))
    }

    /// Answers 101 downstream and splices the two upgraded connections.
    fn tunnel(
        &self,
        mut resp: Response<Incoming>,
        downstream: hyper::upgrade::OnUpgrade,
        load: LoadGuard,
    ) -> Response<ProxyBody> {
        let upstream = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        // Keep Upgrade/Connection: they are the point of a 101.
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.remove("keep-alive");
        let sinks = self.sinks();
        tokio::spawn(async move {
            let _load = load;
            let (Ok(down), Ok(up)) = (downstream.await, upstream.await) else {
                return;
            };
            let mut down = hyper_util::rt::TokioIo::new(down);
            let mut up = hyper_util::rt::TokioIo::new(up);
            if let Ok((to_up, to_down)) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                for s in sinks.iter().flatten() {
                    s.bytes_in
                        .fetch_add(to_up, std::sync::atomic::Ordering::Relaxed);
                    s.bytes_out
                        .fetch_add(to_down, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Response::from_parts(parts, ProxyBody::Local(None))
    }

    fn sinks(&self) -> [Option<Arc<Counters>>; 3] {
        [
            Some(self.listener.clone()),
            Some(self.route.stats.clone()),
            Some(self.cluster.stats.clone()),
        ]
    }

    /// The upstream request, rewritten, ready to be (re)built per try.
    async fn template(
        &self,
        req: Request<DownBody>,
        authority: String,
    ) -> Result<Template, ResponseFlag> {
        let route = self.route;
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let original_pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut authority = authority;
        if let Some(rw) = &route.rewrite {
            if let Some(path) = rw.path(original_pq, &route.matched) {
                parts.uri =
                    Uri::try_from(path).map_err(|_| ResponseFlag::DownstreamProtocolError)?;
            }
            if let Some(a) = &rw.authority {
                authority = a.to_str().unwrap_or_default().to_owned();
            }
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // Host carries the authority; header operations may still change it.
        if let Ok(host) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, host);
        }
        route.request_headers.apply(&mut parts.headers);
        self.dest.request_headers.apply(&mut parts.headers);

        let retries = route.retry.as_ref().is_some_and(|r| r.attempts > 0);
        let body = match body {
            DownBody::Buffered { data, trailers } => BodySource::Replay {
                frames: if data.is_empty() {
                    Vec::new()
                } else {
                    vec![data]
                },
                trailers,
            },
            DownBody::Streaming(body) => self.body_source(body, retries).await?,
        };
        let grpc = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let keep = !route.mirrors.is_empty()
            || route
                .retry
                .as_ref()
                .is_some_and(|r| r.attempts > 0 && r.retries_after_sending(grpc));
        // Only TLS origination (auto SNI) needs the host after the headers are taken.
        let host = (self.cluster.tls.is_some() || !route.mirrors.is_empty())
            .then(|| {
                parts
                    .headers
                    .get(header::HOST)?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .flatten();
        Ok(Template {
            host,
            method: parts.method,
            path,
            headers: parts.headers,
            keep,
            spent: false,
            body,
            http2: self.cluster.protocol == UpstreamProtocol::Http2,
            sinks: self.sinks(),
        })
    }

    /// How a streaming request body goes upstream: read first when small and
    /// mirrors need it, teed when retries may need it, else streamed once.
    async fn body_source(&self, body: Incoming, retries: bool) -> Result<BodySource, ResponseFlag> {
        let route = self.route;
        Ok(if body.is_end_stream() {
            BodySource::Replay {
                frames: Vec::new(),
                trailers: None,
            }
        } else if !route.mirrors.is_empty()
            && body.size_hint().exact().is_some_and(|n| n <= REPLAY_LIMIT)
        {
            // Mirrors need the body before the primary is sent: read small ones first.
            let collected =
                Box::pin(http_body_util::Limited::new(body, REPLAY_LIMIT as usize).collect())
                    .await
                    .map_err(|_| ResponseFlag::DownstreamProtocolError)?;
            let trailers = collected.trailers().cloned();
            BodySource::Replay {
                frames: vec![collected.to_bytes()],
                trailers,
            }
        } else if retries {
            // Stream through while keeping a copy, as Envoy's retry buffer does.
            BodySource::Teed {
                first: Some(body),
                record: Arc::default(),
            }
        } else {
            BodySource::Streaming(Some(body))
        })
    }

    /// The first try and its retries. Returns the response to pass on.
    async fn tries(
        &self,
        template: &mut Template,
        attempts: u32,
    ) -> Result<(Response<Incoming>, Option<pool::Lease>, LoadGuard, bool), ResponseFlag> {
        let cluster = self.cluster;
        let retry = self.route.retry.as_ref();
        let mut previous: Option<usize> = None;
        let mut pending: Option<Request<UpstreamBody>> = None;
        let mut retries_done = 0u32;
        loop {
            // Consistent hashing keeps retries on the key's endpoint (Istio drops previous_hosts).
            let avoid_previous = self.hash.is_none() && retry.is_some_and(|r| r.previous_hosts);
            let (index, address, endpoint_load) = match &self.original_dst {
                // Not an endpoint of the cluster: nothing to balance or eject.
                Some(address) => (usize::MAX, address.as_str(), None),
                None => {
                    // retryRemoteLocalities: a retry moves on to the next priority.
                    let min_priority = match (previous, retry) {
                        (Some(p), Some(r)) if r.remote_localities => {
                            cluster.endpoints.get(p).map_or(0, |e| e.priority + 1)
                        }
                        _ => 0,
                    };
                    let Some(index) =
                        pick_endpoint(cluster, self.hash, previous, avoid_previous, min_priority)
                    else {
                        return Err(ResponseFlag::NoHealthyUpstream);
                    };
                    let endpoint: &EndpointRt = &cluster.endpoints[index];
                    (index, endpoint.address.as_str(), Some(&endpoint.load))
                }
            };
            previous = Some(index);
            let Some(req) = pending.take().or_else(|| template.build()) else {
                // A streamed body was already sent once: nothing left to retry with.
                return Err(ResponseFlag::UpstreamConnectionTermination);
            };
            let load = match endpoint_load {
                Some(l) => LoadGuard::start(l),
                None => LoadGuard::start(&Arc::default()),
            };
            let new_connection = || {
                cluster
                    .stats
                    .cx_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            };
            // SNI: the cluster's, or the request's host (Envoy's auto SNI).
            let tls = cluster.tls.as_ref().map(|t| {
                let sni = t.sni.as_deref().unwrap_or_else(|| {
                    meshfast_route::strip_port(template.host().unwrap_or(address))
                });
                (t, sni)
            });
            let http2 = template.http2;
            let connect_timeout = cluster.connect_timeout;
            let per_try = retry.and_then(|r| r.per_try_timeout);
            // None: the per-try timeout fired. (The future is built in each arm, as in `run`.)
            let result = match per_try {
                Some(t) => tokio::time::timeout(
                    t,
                    pool::send(address, http2, connect_timeout, tls, new_connection, req),
                )
                .await
                .ok(),
                None => Some(
                    pool::send(address, http2, connect_timeout, tls, new_connection, req).await,
                ),
            };
            let can_retry = retries_done < attempts;
            let (outcome, final_flag) = match result {
                Some(Ok((resp, lease))) => {
                    let grpc = resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let status = resp.status().as_u16();
                    cluster.record(
                        index,
                        if status >= 500 {
                            Health::ServerError(status)
                        } else {
                            Health::Success
                        },
                    );
                    let outcome = Outcome::Response(status, grpc);
                    let retriable = retry.is_some_and(|r| r.should_retry(outcome));
                    if !(retriable && can_retry && template.replayable()) {
                        return Ok((resp, lease, load, retriable && retries_done > 0));
                    }
                    (outcome, ResponseFlag::RetryLimitExceeded)
                }
                Some(Err(Failed { error, request })) => {
                    cluster.record(index, Health::LocalFailure);
                    pending = request;
                    if error.is_connect() {
                        (
                            Outcome::ConnectFailure,
                            ResponseFlag::UpstreamConnectFailure,
                        )
                    } else {
                        (Outcome::Reset, ResponseFlag::UpstreamConnectionTermination)
                    }
                }
                None => {
                    cluster.record(index, Health::LocalFailure);
                    (Outcome::Timeout, ResponseFlag::UpstreamRequestTimeout)
                }
            };
            let retriable = retry.is_some_and(|r| r.should_retry(outcome));
            if !(retriable && can_retry && (pending.is_some() || template.replayable())) {
                return Err(final_flag);
            }
            if let Some(r) = retry {
                tokio::time::sleep(r.backoff(retries_done)).await;
            }
            retries_done += 1;
        }
    }
}

/// Picks an endpoint: by hash when there is one, else by the cluster's
/// balancer, avoiding `previous` when asked (Envoy's previous_hosts).
fn pick_endpoint(
    cluster: &ClusterRt,
    hash: Option<u64>,
    previous: Option<usize>,
    avoid_previous: bool,
    min_priority: u32,
) -> Option<usize> {
    if let Some(h) = hash.filter(|_| cluster.hash.is_some()) {
        return cluster.pick_hashed(h);
    }
    let mut index = cluster.pick_index_from(min_priority)?;
    if avoid_previous && cluster.endpoints.len() > 1 {
        for _ in 0..HOST_SELECTION_ATTEMPTS {
            if Some(index) != previous {
                break;
            }
            index = cluster.pick_index_from(min_priority)?;
        }
    }
    Some(index)
}

/// Everything needed to build the upstream request again for another try.
pub struct Template {
    host: Option<String>,
    method: Method,
    path: http::uri::PathAndQuery,
    pub headers: HeaderMap,
    /// Whether later tries may need the request again. When not, the first
    /// try takes the headers instead of copying them.
    keep: bool,
    /// The headers were handed to a try; nothing more can be built.
    spent: bool,
    body: BodySource,
    http2: bool,
    sinks: [Option<Arc<Counters>>; 3],
}

enum BodySource {
    /// Sent once; None after that.
    Streaming(Option<Incoming>),
    /// Sent once while recording a copy that later tries may replay.
    Teed {
        first: Option<Incoming>,
        record: Arc<parking_lot::Mutex<Recording>>,
    },
    /// Known in full: every try sends the same.
    Replay {
        frames: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

impl Template {
    /// Whether another request can still be built.
    pub fn replayable(&self) -> bool {
        if self.spent {
            return false;
        }
        match &self.body {
            BodySource::Streaming(first) => first.is_some(),
            BodySource::Teed { first, record } => first.is_some() || record.lock().replayable(),
            BodySource::Replay { .. } => true,
        }
    }

    pub fn http2(&self) -> bool {
        self.http2
    }

    /// The authority the upstream will see (Host before any try took it).
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// A fresh request, or None when the streamed body was already used.
    pub fn build(&mut self) -> Option<Request<UpstreamBody>> {
        if self.spent {
            return None;
        }
        let body = match &mut self.body {
            BodySource::Streaming(b) => RequestBody::Streaming(b.take()?),
            BodySource::Teed { first, record } => match first.take() {
                Some(inner) => RequestBody::Teed {
                    inner,
                    record: record.clone(),
                    limit: REPLAY_LIMIT,
                },
                None => {
                    let r = record.lock();
                    if !r.replayable() {
                        return None;
                    }
                    RequestBody::Replay {
                        frames: r.frames.iter().cloned().collect(),
                        trailers: r.trailers.clone(),
                    }
                }
            },
            BodySource::Replay { frames, trailers } => RequestBody::Replay {
                frames: frames.iter().cloned().collect(),
                trailers: trailers.clone(),
            },
        };
        let headers = if self.keep {
            self.headers.clone()
        } else {
            self.spent = true;
            std::mem::take(&mut self.headers)
        };
        self.request_with(headers, body, self.sinks.clone())
    }

    /// A copy for a mirror, with its own counters; None for streamed bodies.
    pub fn mirror_copy(&self, sinks: [Option<Arc<Counters>>; 3]) -> Option<Request<UpstreamBody>> {
        let BodySource::Replay { frames, trailers } = &self.body else {
            return None;
        };
        let body = RequestBody::Replay {
            frames: frames.iter().cloned().collect(),
            trailers: trailers.clone(),
        };
        self.request_with(self.headers.clone(), body, sinks)
    }

    fn request_with(
        &self,
        mut headers: HeaderMap,
        body: RequestBody,
        sinks: [Option<Arc<Counters>>; 3],
    ) -> Option<Request<UpstreamBody>> {
        let uri = if self.http2 {
            // HTTP/2 carries the authority in :authority, not Host.
            let authority = headers
                .remove(header::HOST)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = authority;
            parts.path_and_query = Some(self.path.clone());
            Uri::from_parts(parts).ok()?
        } else {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(self.path.clone());
            Uri::from_parts(parts).ok()?
        };
        let mut req = Request::new(Box::new(Metered::new(body, Direction::In, sinks)));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;
        Some(req)
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade`
/// plus `Upgrade: X`), e.g. `websocket`.
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let connection = req.headers().get(header::CONNECTION)?.to_str().ok()?;
    if !connection
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    req.headers().get(header::UPGRADE).cloned()
}

/// What route matching looks at.
fn head_of<'a, B>(req: &'a Request<B>, authority: &'a str) -> RequestHead<'a> {
    RequestHead {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query(),
        authority,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        headers: req.headers(),
    }
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
