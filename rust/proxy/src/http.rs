//! One HTTP request through the proxy, as phases in order. Each phase is a
//! module of its own; the request's facts live in one [`ctx::RequestCtx`]
//! that every phase reads and adds to. A phase either lets the request go on
//! or answers it (`Err(response)`); every answer then leaves the same way.
//!
//! 1. [`decode`]: the request id, the client's identity (XFCC), the authority;
//!    headers a client may not set are dropped.
//! 2. [`authz`]: the workload's AuthorizationPolicies (inbound listeners):
//!    before anything else sees the request, as Envoy's RBAC filter.
//! 3. [`route`]: the listener's route table.
//! 4. [`filters`]: the route's Python filters, request phase (they may move
//!    the request to another route).
//! 5. [`local`]: CORS preflight, fault injection, redirect, direct response.
//! 6. [`forward`]: the upstream request ([`upstream_request`]), mirrors
//!    ([`mirror`]), tries on endpoints from [`crate::upstream`] with retries
//!    from [`crate::retry`], upgrades ([`tunnel`]), then the filters'
//!    response phase.
//! 7. [`respond`]: the request id and the flags header, written once.
//! 8. [`log`]: counters, the filters' log phase, the access log's entry.

mod authz;
mod ctx;
mod decode;
mod filters;
mod forward;
mod local;
mod log;
mod mirror;
mod respond;
mod route;
mod tunnel;
mod upstream_request;

pub use respond::ProxyBody;

use crate::access_log::Pending;
use crate::conn::{Conn, ConnCtx};
use crate::flags::ResponseFlag;
use crate::runtime::{ListenerKind, Runtime};
use ctx::RequestCtx;
use http::{Request, Response};
use hyper::body::Incoming;
use respond::Answer;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A request's response, and the access log's entry that goes with its body
/// (empty when the log is off).
pub type Served = (Response<ProxyBody>, Pending);

/// Serves one request.
pub fn serve(
    req: Request<Incoming>,
    conn_ctx: Arc<ConnCtx>,
    conn: Conn,
) -> Pin<Box<impl Future<Output = Result<Served, Infallible>> + Send>> {
    // Boxed once here: hyper moves the service's future around (an HTTP/2 stream's
    // through several frames into its own task) and a request's state is ~6 KB, moved
    // whole each time: 8% of an h2 request's CPU was memmove. Boxed, h2 requests cost
    // ~0.4 µs less user time; HTTP/1 ones (whose future hyper keeps in one box per
    // connection) pay a malloc, +0.1-0.2 µs (A/B runs, bench/RESULTS.md).
    Box::pin(async move {
        // One load per request: this request sees this snapshot to its end.
        let snap = conn_ctx.store.load_full();
        Ok(handle(req, &snap, conn_ctx.listener_id, conn).await)
    })
}

async fn handle(req: Request<Incoming>, snap: &Runtime, listener_id: usize, conn: Conn) -> Served {
    // A connection whose listener a reload removed, or turned to TCP.
    let Some(listener) = snap.listener(listener_id) else {
        return (respond::unserved(&req), Pending::default());
    };
    let ListenerKind::Http(table, tls) = &listener.kind else {
        let _active = crate::stats::ActiveGuard::request(&listener.stats);
        listener.stats.flag(ResponseFlag::NoRoute);
        listener
            .stats
            .response(ResponseFlag::NoRoute.status().as_u16());
        return (respond::unserved(&req), Pending::default());
    };
    let log = snap.access_log.as_ref().map(|l| l.open(&req, conn.peer));
    let mut ctx = RequestCtx::new(snap, listener, table, conn);
    ctx.log = log;
    ctx.grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut resp = match phases(&mut ctx, tls.as_ref(), req).await {
        Ok(resp) => resp,
        Err(resp) => *resp,
    };
    respond::finish(&mut ctx, &mut resp);
    let pending = log::log(ctx, &resp);
    (resp, pending)
}

/// Phases 1-6; `Err` is an answer given before the request got upstream.
async fn phases<'a>(
    ctx: &mut RequestCtx<'a>,
    tls: Option<&crate::tls::ListenerTls>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Answer> {
    let req = decode::decode(ctx, tls, req)?;
    authz::check(ctx, &req)?;
    route::find(ctx, &req)?;
    let req = filters::on_request(ctx, req).await?;
    // Set by `route::find` and kept by a re-match.
    let Some(route) = ctx.route else {
        return Err(Box::new(ctx.fail(ResponseFlag::NoRoute)));
    };
    local::answer(ctx, route, &req).await?;
    Ok(forward::forward(ctx, route, req).await)
}
