//! Forward: the route's cluster, the upstream request, its mirrors, then the
//! first try and its retries — each on an endpoint the upstream selection
//! picks, each outcome told to the retry state machine — under the route's
//! timeout. The answer comes back through the filters' response phase.

use super::ctx::RequestCtx;
use super::filters;
use super::mirror;
use super::respond::{Answer, ProxyBody};
use super::tunnel;
use super::upstream_request::{self, Shape, UpstreamRequest};
use crate::actions;
use crate::body::{BodyEnd, Direction, DownBody, LoadGuard, Metered};
use crate::breaker::Overflow;
use crate::cluster::{ClusterRt, Health};
use crate::flags::{Flags, ResponseFlag};
use crate::hashing::Key;
use crate::headers::strip_hop_by_hop;
use crate::pool::{DownstreamFault, Failed, Held, Lease, SendError, UpstreamBody};
use crate::retry::{Outcome, Retries, RetryRt, Step};
use crate::runtime::{Destination, RouteRt};
use crate::upstream::{self, Pick, Target};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use std::net::SocketAddr;
use std::time::Duration;

/// Envoy's `x-envoy-upstream-service-time`: ms from sending the request to
/// the upstream's response head (an upstream's own is replaced).
const SERVICE_TIME: HeaderName = HeaderName::from_static("x-meshfast-upstream-service-time");

/// Envoy's header for choosing an original-destination endpoint explicitly.
const ORIGINAL_DST_HOST: HeaderName = HeaderName::from_static("x-envoy-original-dst-host");

pub async fn forward<'a>(
    ctx: &mut RequestCtx<'a>,
    route: &'a RouteRt,
    mut req: Request<DownBody>,
) -> Response<ProxyBody> {
    let Some((dest, cluster)) = ctx.dest.and_then(|d| Some((d, d.cluster.as_ref()?))) else {
        return ctx.fail(ResponseFlag::NoCluster);
    };
    ctx.set_cluster(cluster);
    let key = match &cluster.hash {
        Some(h) => h.key(req.headers(), req.uri().query(), ctx.conn.peer),
        None => Key::default(),
    };
    let original_dst = match original_destination(ctx, cluster, &mut req) {
        Ok(dst) => dst,
        Err(flag) => return ctx.fail(flag),
    };
    let tries = Tries {
        cluster,
        retry: route.retry.as_ref(),
        hash: key.hash,
        original_dst: original_dst.as_deref(),
    };
    let mut resp = match upstream(ctx, route, dest, tries, req).await {
        Ok(resp) => resp,
        Err(resp) => *resp,
    };
    // Whether it came from the upstream or not, the answer is the route's.
    if let (Some(o), Some(cors)) = (&ctx.cors_origin, &route.cors) {
        cors.actual(o, resp.headers_mut());
    }
    if let Some(cookie) = key.set_cookie {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

/// The upstream's answer, or `Err` with the local reply for a failure.
async fn upstream<'a>(
    ctx: &mut RequestCtx<'a>,
    route: &'a RouteRt,
    dest: &'a Destination,
    tries: Tries<'_>,
    mut req: Request<DownBody>,
) -> Result<Response<ProxyBody>, Answer> {
    // An HTTP/1.1 upgrade (WebSocket) becomes a tunnel only if the upstream
    // answers 101; any other answer keeps the connection in HTTP mode.
    let upgrade = upgrade_protocol(&req).map(|proto| (proto, hyper::upgrade::on(&mut req)));
    let shape = Shape {
        route,
        dest,
        cluster: tries.cluster,
        authority: &ctx.authority,
        sinks: ctx.sinks(),
    };
    let mut request = match upstream_request::prepare(shape, req).await {
        Ok(r) => r,
        Err(flag) => return Err(Box::new(ctx.fail(flag))),
    };
    if let Some((proto, _)) = &upgrade {
        request.headers.insert(header::UPGRADE, proto.clone());
        let upgrade = HeaderValue::from_static("upgrade");
        request.headers.insert(header::CONNECTION, upgrade);
    }
    for m in &route.mirrors {
        if actions::roll(m.millionths) {
            mirror::spawn(m, &request);
        }
    }
    ctx.received = request.received();
    if let Some(span) = ctx.span.as_deref_mut() {
        span.received = Some(request.received());
    }
    let sent = tokio::time::Instant::now();
    // The future is built inside each arm: a local moved into `select!` would
    // keep its own slot in this future's state beside the copy (twice the size).
    let tried = match (route.timeout, request.body_end().cloned()) {
        (None, None) => {
            tries
                .run(&mut request, &mut ctx.flags, &mut ctx.log, &mut ctx.span)
                .await
        }
        // The whole body is here: the route timeout alone, tokio's timer inline.
        (Some(t), None) => tokio::time::timeout(
            t,
            tries.run(&mut request, &mut ctx.flags, &mut ctx.log, &mut ctx.span),
        )
        .await
        .unwrap_or(Err(ResponseFlag::UpstreamRequestTimeout)),
        // A body still streaming: its end (or stall) starts the clock. Boxed,
        // so that only such requests carry the wait's state (~300 bytes): every
        // request's future is moved whole a few times on its way in.
        (timeout, Some(end)) => {
            let idle = ctx.snap.downstream.stream_idle_timeout;
            let expiry = Box::pin(expiry(Some(&end), idle, timeout));
            tokio::select! {
                tried = tries.run(&mut request, &mut ctx.flags, &mut ctx.log, &mut ctx.span) => tried,
                flag = expiry => Err(flag),
            }
        }
    };
    let tried = tried.map_err(|flag| Box::new(ctx.fail(flag)))?;
    // Envoy's x-envoy-upstream-service-time: the upstream's time to its
    // response head, retries included.
    let service_time = sent.elapsed();
    if let Some(log) = ctx.log.as_deref_mut() {
        log.upstream_service_time = Some(service_time);
    }
    if let Some(span) = ctx.span.as_deref_mut() {
        span.upstream = Some(service_time);
    }
    if tried.exhausted {
        ctx.flags.insert(ResponseFlag::RetryLimitExceeded);
    }
    if tried.resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some((_, downstream)) = upgrade {
            return Ok(tunnel::splice(ctx, tried.resp, downstream, tried.load));
        }
    }
    let (mut parts, body) = tried.resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let ms = u64::try_from(service_time.as_millis()).unwrap_or(u64::MAX);
    parts
        .headers
        .insert(SERVICE_TIME, crate::headers::millis_value(ms));
    let body = Held::new(body, tried.load, tried.lease);
    let body = match ctx.filtered.take() {
        Some(f) => Box::pin(filters::on_response(ctx, f, &mut parts, body)).await?,
        None => ProxyBody::Upstream(Metered::new(body, Direction::Out, ctx.sinks())),
    };
    route.response_headers.apply(&mut parts.headers);
    dest.response_headers.apply(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

/// An original-destination cluster sends to where the request was going:
/// the address iptables redirected, or, only where the user allowed it, the
/// client's `x-envoy-original-dst-host`. Never to the sidecar itself.
fn original_destination(
    ctx: &RequestCtx<'_>,
    cluster: &ClusterRt,
    req: &mut Request<DownBody>,
) -> Result<Option<String>, ResponseFlag> {
    // Never forwarded, honoured or not: it steers only this hop.
    let header = req.headers_mut().remove(ORIGINAL_DST_HOST);
    if !cluster.original_dst {
        return Ok(None);
    }
    let from_header = header
        .filter(|_| ctx.snap.original_dst_header)
        .and_then(|v| v.to_str().ok()?.parse::<SocketAddr>().ok());
    match from_header.or(ctx.conn.original_dst) {
        Some(addr) if !ctx.snap.is_own(addr) => Ok(Some(addr.to_string())),
        _ => Err(ResponseFlag::NoHealthyUpstream),
    }
}

/// How many times one try may go again on another connection after a pooled
/// connection closed under it (the keep-alive race).
const MAX_STALE_RESENDS: u32 = 2;

/// Sending to one cluster, with retries.
struct Tries<'a> {
    cluster: &'a ClusterRt,
    retry: Option<&'a RetryRt>,
    /// The consistent-hash key, when the cluster hashes and the request has one.
    hash: Option<u64>,
    /// The one destination of an original-destination cluster.
    original_dst: Option<&'a str>,
}

/// The answer to pass on, with what must live as long as its body.
struct Tried {
    resp: Response<Incoming>,
    lease: Option<Lease>,
    load: LoadGuard,
    /// Retried, and would have been again (`URX`).
    exhausted: bool,
}

/// How one try went.
enum Attempt {
    Answered(Response<Incoming>, Option<Lease>),
    /// The client broke its own request (a malformed or cut-short body):
    /// nothing the endpoint did, nothing to retry.
    Downstream(ResponseFlag),
    /// A connection-pool limit was reached: 503 `UO` at once, never retried
    /// nor held against the endpoint (Envoy never retries an overflow).
    Overflow,
    /// `unsent`: the request, when none of it was written (it may go elsewhere).
    /// `stale`: a reused connection ended before any response (the keep-alive race).
    Failed {
        outcome: Outcome,
        flag: ResponseFlag,
        unsent: Option<Request<UpstreamBody>>,
        stale: bool,
    },
}

impl Tries<'_> {
    /// The tries; `flags` hears of a retry not made past `maxRetries` (`UO`),
    /// the access log and the span (when on) of each try's endpoint.
    async fn run(
        &self,
        request: &mut UpstreamRequest,
        flags: &mut Flags,
        log: &mut Option<Box<crate::access_log::Entry>>,
        span: &mut Option<Box<crate::tracer::Open>>,
    ) -> Result<Tried, ResponseFlag> {
        let mut retries = Retries::new(self.retry);
        let mut previous = None;
        let mut pending: Option<Request<UpstreamBody>> = None;
        // The retry in flight (`maxRetries`), from when it is decided until
        // its outcome is known, as Envoy holds it.
        let mut retry_slot = None;
        let mut resent = 0;
        loop {
            let mut target = self
                .target(&retries, previous)
                .ok_or(ResponseFlag::NoHealthyUpstream)?;
            previous = target.index;
            if let Some(log) = log.as_deref_mut() {
                log.upstream_host(target.address);
            }
            if let Some(span) = span.as_deref_mut() {
                span.upstream_host(target.address);
            }
            // A request in flight (`http2MaxRequests`) until its response ends.
            match self.cluster.breaker().request() {
                Ok(slot) => target.load.hold(slot),
                Err(Overflow) => return Err(ResponseFlag::UpstreamOverflow),
            }
            let Some(req) = pending.take().or_else(|| request.build()) else {
                // A streamed body was already sent once: nothing left to retry with.
                return Err(ResponseFlag::UpstreamConnectionTermination);
            };
            // Only a PEAK_EWMA cluster reads the clock around a try.
            let started = self.cluster.peak_ewma.then(tokio::time::Instant::now);
            // `attempt` ends with this block: held in the future's state across
            // the backoff below, it would grow every request's future.
            let backoff = {
                let attempt = self.attempt(&target, request, req).await;
                if let Attempt::Failed { stale: true, .. } = attempt {
                    // The upstream closed a pooled connection as the request went out:
                    // an idempotent request goes again at once (as browsers and Go's
                    // client do), not a retry of the policy's, nothing against the
                    // endpoint; bounded, as every idle connection might be closing.
                    if resent < MAX_STALE_RESENDS && request.resendable() {
                        resent += 1;
                        continue;
                    }
                }
                if let Some(started) = started {
                    // Latency to response headers; a per-try timeout counts as slow.
                    if let Attempt::Answered(..)
                    | Attempt::Failed {
                        outcome: Outcome::Timeout,
                        ..
                    } = attempt
                    {
                        target.observe_rtt(started.elapsed());
                    }
                }
                // The retry before this try (if any) has its outcome.
                drop(retry_slot.take());
                match attempt {
                    Attempt::Answered(resp, lease) => {
                        let outcome = outcome_of(&resp);
                        target.record(health(outcome));
                        let mut step = retries.after(outcome, request.replayable());
                        if let Step::Retry(_) = step {
                            match self.cluster.breaker().retry() {
                                Ok(slot) => retry_slot = slot,
                                Err(Overflow) => {
                                    flags.insert(ResponseFlag::UpstreamOverflow);
                                    step = Step::Stop { exhausted: false };
                                }
                            }
                        }
                        match step {
                            Step::Stop { exhausted } => {
                                let load = target.load;
                                return Ok(Tried {
                                    resp,
                                    lease,
                                    load,
                                    exhausted,
                                });
                            }
                            Step::Retry(backoff) => backoff,
                        }
                    }
                    Attempt::Downstream(flag) => return Err(flag),
                    Attempt::Overflow => return Err(ResponseFlag::UpstreamOverflow),
                    Attempt::Failed {
                        outcome,
                        flag,
                        unsent,
                        ..
                    } => {
                        target.record(Health::LocalFailure);
                        pending = unsent;
                        let replayable = pending.is_some() || request.replayable();
                        match retries.after(outcome, replayable) {
                            Step::Stop { .. } => return Err(flag),
                            Step::Retry(backoff) => match self.cluster.breaker().retry() {
                                Ok(slot) => {
                                    retry_slot = slot;
                                    backoff
                                }
                                Err(Overflow) => {
                                    flags.insert(ResponseFlag::UpstreamOverflow);
                                    return Err(flag);
                                }
                            },
                        }
                    }
                }
            };
            tokio::time::sleep(backoff).await;
        }
    }

    fn target(&self, retries: &Retries<'_>, previous: Option<usize>) -> Option<Target<'_>> {
        if let Some(address) = self.original_dst {
            return Some(upstream::original(self.cluster, address));
        }
        let pick = Pick {
            hash: self.hash,
            previous,
            avoid_previous: retries.avoid_previous(self.hash.is_some()),
            next_priority: retries.next_priority(),
        };
        upstream::select(self.cluster, pick)
    }

    /// One try, under the per-try timeout.
    async fn attempt(
        &self,
        target: &Target<'_>,
        request: &UpstreamRequest,
        req: Request<UpstreamBody>,
    ) -> Attempt {
        let (host, http2) = (request.host(), request.http2());
        // None: the per-try timeout fired. (The future is built in each arm, as above.)
        let result = match (
            self.retry.and_then(|r| r.per_try_timeout),
            request.body_end(),
        ) {
            (None, _) => Some(target.send(host, http2, req).await),
            // The whole body is here: the per-try timeout alone, tokio's timer inline.
            (Some(t), None) => tokio::time::timeout(t, target.send(host, http2, req))
                .await
                .ok(),
            // A body still streaming starts the clock at its end (boxed, as in
            // `upstream`). A client that stalls it is the route-level expiry's to end.
            (Some(t), Some(end)) => {
                let expiry = Box::pin(expiry(Some(end), Duration::MAX, Some(t)));
                tokio::select! {
                    sent = target.send(host, http2, req) => Some(sent),
                    _ = expiry => None,
                }
            }
        };
        match result {
            // Dropped unread: the connection is not reused.
            Some(Ok((resp, _))) if smuggles(&resp) => Attempt::Failed {
                outcome: Outcome::Reset,
                flag: ResponseFlag::UpstreamProtocolError,
                unsent: None,
                stale: false,
            },
            Some(Ok((resp, lease))) => Attempt::Answered(resp, lease),
            Some(Err(Failed {
                error: SendError::Overflow,
                ..
            })) => Attempt::Overflow,
            Some(Err(Failed { error, request })) => {
                match error.downstream_fault() {
                    Some(DownstreamFault::Malformed) => {
                        return Attempt::Downstream(ResponseFlag::DownstreamProtocolError)
                    }
                    Some(DownstreamFault::Gone) => {
                        return Attempt::Downstream(ResponseFlag::DownstreamConnectionTermination)
                    }
                    None => {}
                }
                let (outcome, flag) = if error.is_connect() {
                    (
                        Outcome::ConnectFailure,
                        ResponseFlag::UpstreamConnectFailure,
                    )
                } else {
                    (Outcome::Reset, ResponseFlag::UpstreamConnectionTermination)
                };
                let stale = matches!(error, SendError::Stale { .. });
                Attempt::Failed {
                    outcome,
                    flag,
                    unsent: request,
                    stale,
                }
            }
            None => Attempt::Failed {
                outcome: Outcome::Timeout,
                flag: ResponseFlag::UpstreamRequestTimeout,
                unsent: None,
                stale: false,
            },
        }
    }
}

/// When a request (or a try) runs out of time: `timeout` from the end of
/// the client's body — Envoy's route and per-try timeouts start when the
/// downstream request is complete, so a slow client is never a slow
/// upstream — or as soon as the client sends no byte of its body for `idle`.
async fn expiry(
    body_end: Option<&BodyEnd>,
    idle: Duration,
    timeout: Option<Duration>,
) -> ResponseFlag {
    if let Some(end) = body_end {
        if !end.wait(idle).await {
            return ResponseFlag::StreamIdleTimeout;
        }
    }
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
    ResponseFlag::UpstreamRequestTimeout
}

/// An HTTP/1.1 response framed by both Content-Length and Transfer-Encoding
/// (RFC 9112 §6.3: "ought to be handled as an error"; its body was read by
/// the coding, and the length would be passed on wrong).
fn smuggles(resp: &Response<Incoming>) -> bool {
    // A body of a known, non-zero length was framed by Content-Length alone:
    // hyper's client reads a Transfer-Encoding first when there is one. Most
    // responses end the check here, without a header lookup.
    if resp.body().size_hint().exact().is_some_and(|n| n > 0) {
        return false;
    }
    let h = resp.headers();
    h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH)
}

fn outcome_of(resp: &Response<Incoming>) -> Outcome {
    let grpc = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Outcome::Response(resp.status().as_u16(), grpc)
}

/// What outlier detection hears of an answer.
fn health(outcome: Outcome) -> Health {
    match outcome {
        Outcome::Response(status, _) if status >= 500 => Health::ServerError(status),
        Outcome::Response(..) => Health::Success,
        Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => Health::LocalFailure,
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
