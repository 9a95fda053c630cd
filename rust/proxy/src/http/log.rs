//! Log: the one place that sees every request end, whichever phase answered
//! it. Counters now (responses by class, response flags, per listener, route
//! and cluster), and the filters' log phase when no response phase ran; the
//! access log's entry and the request's span are completed here; Istio's
//! metrics belong here too. It runs as the response head leaves: a streamed body's bytes are
//! counted as they pass, and the access log's entry travels with the body
//! until its end ([`Pending`]).

use super::ctx::RequestCtx;
use super::respond::ProxyBody;
use crate::access_log::{Ended, Pending};
use crate::istio_metrics::Dynamic;
use http::Response;

pub fn log(mut ctx: RequestCtx<'_>, resp: &Response<ProxyBody>) -> Pending {
    let status = resp.status();
    for c in ctx.counters() {
        c.response(status.as_u16());
        for f in ctx.flags.iter() {
            c.flag(f);
        }
    }
    if let Some(filtered) = ctx.filtered {
        (*filtered).ended(status, &ctx.flags.render());
    }
    if let Some(span) = ctx.span.as_deref_mut() {
        span.end(crate::tracer::Ending {
            status: status.as_u16(),
            authority: &ctx.authority,
            cluster: ctx.cluster.map(|c| c.name.as_str()),
            route: ctx.route.map(|r| r.name.as_str()),
            request_id: ctx.request_id.as_ref(),
            response_flags: ctx.flags.render(),
            peer: ctx.conn.peer,
        });
    }
    if let Some(e) = ctx.log.as_deref_mut() {
        e.status = status.as_u16();
        e.flags = ctx.flags;
        e.request_id = ctx.request_id.take();
        e.authority = std::mem::take(&mut ctx.authority);
        e.route = ctx.route.map(|r| r.name.clone());
        e.cluster = ctx.cluster.cloned();
        e.peer_identity = ctx.conn.identity.clone();
    }
    // Istio's metrics: the cluster's label set, or the listener's when the
    // request reached no cluster; the series by what this request adds.
    let set = ctx.cluster.map_or(&ctx.listener.istio, |c| &c.istio);
    let grpc_status = if ctx.grpc {
        resp.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok())
    } else {
        None
    };
    let labels = Dynamic {
        code: status.as_u16(),
        flags: ctx.flags,
        grpc_status,
        grpc: ctx.grpc,
        peer: ctx.conn.identity.as_deref(),
    };
    let istio = set.series(&labels).map(|i| (set.clone(), i));
    Pending::new(Ended {
        started: ctx.started,
        received: std::mem::take(&mut ctx.received),
        sent: 0,
        istio,
        log: ctx.log.take(),
    })
    .with_span(ctx.span.take())
}
