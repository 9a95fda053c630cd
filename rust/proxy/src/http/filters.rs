//! The route's Python filters: the request phase (before local answers and
//! the router, as Envoy's HTTP filters run), the response phase for requests
//! they let through, and their log phase when no response phase ran. Only
//! routes that have filters get past the first check; the rest of this module
//! is boxed out of the request's future.

use super::ctx::RequestCtx;
use super::respond::{Answer, ProxyBody};
use super::route;
use crate::body::{Direction, DownBody, Metered, RequestBody};
use crate::filter_body::{self, ReadError};
use crate::filters::{
    Ending, FilterAction, FilterError, FilterHook, FilterState, RequestInfo, ResponseEdit, Verdict,
};
use crate::flags::ResponseFlag;
use crate::pool::Held;
use crate::runtime::{Hook, RouteRt};
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::sync::Arc;

/// The filters that let a request through, for its response and log phases.
pub struct Filtered<'a> {
    hook: Arc<Box<dyn FilterHook>>,
    /// What they were told, and what they keep per request.
    info: RequestInfo,
    state: FilterState,
    /// The route whose filters ran (a filter may have moved the request on).
    route: &'a RouteRt,
}

impl Filtered<'_> {
    /// The log phase alone, for a request that got no response phase.
    pub fn ended(self, status: StatusCode, flags: &str) {
        let ending = Ending { status, flags };
        self.hook
            .on_log(&self.route.filters, &self.info, ending, self.state);
    }
}

/// The request phase. `Err` is the reply to send instead of going on.
pub async fn on_request<'a>(
    ctx: &mut RequestCtx<'a>,
    req: Request<DownBody>,
) -> Result<Request<DownBody>, Answer> {
    let Some(route) = ctx.route.filter(|r| !r.filters.is_empty()) else {
        return Ok(req);
    };
    let Some(Hook(hook)) = ctx.snap.filters.clone() else {
        return Ok(req);
    };
    // Boxed, as every path most requests never take: the request's future
    // (allocated and moved whole per request) stays small.
    Box::pin(request_phase(ctx, hook, route, req)).await
}

async fn request_phase<'a>(
    ctx: &mut RequestCtx<'a>,
    hook: Arc<Box<dyn FilterHook>>,
    route: &'a RouteRt,
    req: Request<DownBody>,
) -> Result<Request<DownBody>, Answer> {
    let info = info_of(ctx, route, &req);
    let host_before = req.headers().get(header::HOST).cloned();
    let (mut parts, body) = req.into_parts();
    let body = read_request_body(ctx, route, &parts.headers, body).await?;
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
            ctx.filtered = Some(Box::new(Filtered {
                hook,
                info,
                state,
                route,
            }));
            let req = Request::from_parts(parts, body);
            if headers_changed {
                route::rematch(ctx, &req, host_before.as_ref())?;
            }
            Ok(req)
        }
        Ok(FilterAction::Respond {
            status,
            headers,
            body,
        }) => {
            let mut resp = ctx.local(status, None, (!body.is_empty()).then_some(body));
            resp.headers_mut().extend(headers);
            Err(resp.into())
        }
        Err(e) => Err(failed(ctx, &e, route).into()),
    }
}

fn info_of(ctx: &RequestCtx<'_>, route: &RouteRt, req: &Request<DownBody>) -> RequestInfo {
    RequestInfo {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or_default().to_owned(),
        authority: ctx.authority.clone(),
        scheme: req.uri().scheme_str().unwrap_or("http").to_owned(),
        peer: ctx.conn.peer.to_string(),
        identity: ctx.conn.identity.as_deref().unwrap_or_default().to_owned(),
        route: route.name.clone(),
        cluster: ctx
            .dest
            .and_then(|d| d.cluster.as_ref())
            .map(|c| c.name.clone())
            .unwrap_or_default(),
    }
}

/// The body read whole first when the filters asked for it (413 past their limit).
async fn read_request_body(
    ctx: &mut RequestCtx<'_>,
    route: &RouteRt,
    headers: &HeaderMap,
    body: DownBody,
) -> Result<DownBody, Answer> {
    let DownBody::Streaming(body) = body else {
        return Ok(body);
    };
    if route.filter_request_body == 0 {
        return Ok(DownBody::Streaming(body));
    }
    match filter_body::read_whole(headers, body, route.filter_request_body).await {
        Ok((data, trailers)) => Ok(DownBody::Buffered { data, trailers }),
        Err(e) => Err(unread(
            ctx,
            e,
            (StatusCode::PAYLOAD_TOO_LARGE, b"payload too large\n"),
            ResponseFlag::DownstreamProtocolError,
        )
        .into()),
    }
}

/// The response phase of the filters whose request phase ran: the body read
/// whole first when they asked for it (500 past their limit), their header
/// (and body) changes applied. `Err` is the reply to send instead.
pub async fn on_response(
    ctx: &mut RequestCtx<'_>,
    filtered: Box<Filtered<'_>>,
    parts: &mut http::response::Parts,
    body: Held<Incoming>,
) -> Result<ProxyBody, Answer> {
    let Filtered {
        hook,
        info,
        state,
        route,
    } = *filtered;
    let limit = route.filter_response_body;
    if limit == 0 {
        // Headers only: the body streams on as it comes.
        let verdict = hook.on_response(
            &route.filters,
            &info,
            parts.status,
            &parts.headers,
            None,
            state,
        );
        edit_headers(ctx, route, parts, verdict).await?;
        let body = Metered::new(body, Direction::Out, ctx.sinks());
        return Ok(ProxyBody::Upstream(body));
    }
    let (data, trailers) = match filter_body::read_whole(&parts.headers, body, limit).await {
        Ok(read) => read,
        Err(e) => {
            let too_large = (
                StatusCode::INTERNAL_SERVER_ERROR,
                &b"response payload too large\n"[..],
            );
            return Err(unread(
                ctx,
                e,
                too_large,
                ResponseFlag::UpstreamConnectionTermination,
            )
            .into());
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
    let new_body = edit_headers(ctx, route, parts, verdict).await?;
    let data = match new_body {
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
        ctx.sinks(),
    )))
}

/// The filters' response verdict: their header changes applied; their new
/// body, if they gave one.
async fn edit_headers(
    ctx: &mut RequestCtx<'_>,
    route: &RouteRt,
    parts: &mut http::response::Parts,
    verdict: Verdict<ResponseEdit>,
) -> Result<Option<Bytes>, Answer> {
    let edit = verdict.wait(route.filter_budget).await;
    let edit = edit.map_err(|e| Box::new(failed(ctx, &e, route)))?;
    if let Some(h) = edit.headers {
        parts.headers = h;
    }
    Ok(edit.body)
}

/// The reply when a body the filters read whole could not be read:
/// `too_large` past their limit, a failure with `broken` when the stream broke.
fn unread(
    ctx: &mut RequestCtx<'_>,
    error: ReadError,
    too_large: (StatusCode, &'static [u8]),
    broken: ResponseFlag,
) -> Response<ProxyBody> {
    match error {
        ReadError::TooLarge => ctx.local(too_large.0, None, Some(Bytes::from_static(too_large.1))),
        ReadError::Broken => ctx.fail(broken),
    }
}

/// The failing filter's status (the route's when unknown), flag `FF`.
fn failed(ctx: &mut RequestCtx<'_>, e: &FilterError, route: &RouteRt) -> Response<ProxyBody> {
    let body: &'static [u8] = if e.timeout {
        b"filter timeout\n"
    } else {
        b"filter failure\n"
    };
    ctx.local(
        e.status.unwrap_or(route.filter_failure),
        Some(ResponseFlag::FilterFailure),
        Some(Bytes::from_static(body)),
    )
}
