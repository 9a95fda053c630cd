//! Route: the listener's route table matched against the request, and again
//! when a filter changed the request's headers (Envoy clears its route cache
//! then: routing on a claim a filter put in a header works).

use super::ctx::RequestCtx;
use super::respond::Answer;
use crate::flags::ResponseFlag;
use http::header::{self, HeaderValue};
use http::Request;
use meshfast_route::RequestHead;

pub fn find<B>(ctx: &mut RequestCtx<'_>, req: &Request<B>) -> Result<(), Answer> {
    let table = ctx.table;
    match table.find(&head_of(req, &ctx.authority)) {
        Some((_vhost, route)) => {
            ctx.set_route(&route.action);
            Ok(())
        }
        None => Err(Box::new(ctx.fail(ResponseFlag::NoRoute))),
    }
}

/// After the filters changed the headers. A changed Host (for HTTP/2 too: it
/// stands for `:authority`, as in Envoy) moves the request to that host.
pub fn rematch<B>(
    ctx: &mut RequestCtx<'_>,
    req: &Request<B>,
    host_before: Option<&HeaderValue>,
) -> Result<(), Answer> {
    let host = req.headers().get(header::HOST);
    if host != host_before {
        if let Some(h) = host.and_then(|h| h.to_str().ok()).filter(|h| !h.is_empty()) {
            ctx.authority = h.to_owned();
        }
    }
    find(ctx, req)
}

/// What route matching looks at.
pub fn head_of<'a, B>(req: &'a Request<B>, authority: &'a str) -> RequestHead<'a> {
    RequestHead {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query(),
        authority,
        scheme: req.uri().scheme_str().unwrap_or("http"),
        headers: req.headers(),
    }
}
