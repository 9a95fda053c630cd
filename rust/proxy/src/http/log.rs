//! Log: the one place that sees every request end, whichever phase answered
//! it. Counters now (responses by class, response flags, per listener, route
//! and cluster), and the filters' log phase when no response phase ran; the
//! access log, spans and Istio's metrics belong here too. It runs as the
//! response head leaves: a streamed body's bytes are counted as they pass.

use super::ctx::RequestCtx;
use http::StatusCode;

pub fn log(ctx: RequestCtx<'_>, status: StatusCode) {
    for c in ctx.counters() {
        c.response(status.as_u16());
        for f in ctx.flags.iter() {
            c.flag(f);
        }
    }
    if let Some(filtered) = ctx.filtered {
        (*filtered).ended(status, &ctx.flags.render());
    }
}
