//! Local answers, in Envoy's filter order: a CORS preflight, fault injection
//! (a delay, then perhaps an abort), then a route that redirects or answers
//! directly. `Err` is the answer; `Ok` lets the request go on upstream.

use super::ctx::RequestCtx;
use super::respond::Answer;
use crate::actions::{self, Abort, FaultRt};
use crate::body::DownBody;
use crate::flags::ResponseFlag;
use crate::runtime::{LocalAction, RouteRt};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};

pub async fn answer<'a>(
    ctx: &mut RequestCtx<'a>,
    route: &'a RouteRt,
    req: &Request<DownBody>,
) -> Result<(), Answer> {
    cors(ctx, route, req)?;
    if let Some(fault) = &route.fault {
        inject(ctx, fault).await?;
    }
    match &route.local {
        Some(LocalAction::Redirect(r)) => {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let scheme = req.uri().scheme_str().unwrap_or("http");
            let location = r.location(scheme, &ctx.authority, pq, &route.matched);
            let mut resp = ctx.local(r.code, None, None);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Err(resp.into())
        }
        Some(LocalAction::Direct(d)) => {
            let mut resp = ctx.local(d.status, None, d.body.clone());
            route.response_headers.apply(resp.headers_mut());
            Err(resp.into())
        }
        None => Ok(()),
    }
}

/// Answers a preflight the policy allows (or, unless told to forward them,
/// one it does not); remembers an allowed origin for the actual response.
fn cors(ctx: &mut RequestCtx<'_>, route: &RouteRt, req: &Request<DownBody>) -> Result<(), Answer> {
    let Some(cors) = &route.cors else {
        return Ok(());
    };
    let origin = req.headers().get(header::ORIGIN);
    ctx.cors_origin = origin
        .filter(|o| o.to_str().is_ok_and(|o| cors.allows(o)))
        .cloned();
    let preflight = req.method() == Method::OPTIONS
        && origin.is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        return Ok(());
    }
    if let Some(o) = ctx.cors_origin.clone() {
        let mut resp = ctx.local(StatusCode::OK, None, None);
        cors.preflight(&o, resp.headers_mut());
        return Err(resp.into());
    }
    if cors.forward_unmatched_preflights {
        return Ok(());
    }
    Err(ctx.local(StatusCode::OK, None, None).into())
}

async fn inject(ctx: &mut RequestCtx<'_>, fault: &FaultRt) -> Result<(), Answer> {
    if let Some((delay, pct)) = fault.delay {
        if actions::roll(pct) {
            tokio::time::sleep(delay).await;
            ctx.flags.insert(ResponseFlag::DelayInjected);
        }
    }
    let Some((abort, pct)) = fault.abort else {
        return Ok(());
    };
    if !actions::roll(pct) {
        return Ok(());
    }
    let flag = Some(ResponseFlag::FaultInjected);
    Err(Box::new(match abort {
        Abort::Http(status) => {
            let body = Bytes::from_static(ResponseFlag::FaultInjected.body().as_bytes());
            ctx.local(status, flag, Some(body))
        }
        Abort::Grpc(code) => {
            let mut r = ctx.local(StatusCode::OK, flag, None);
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
    }))
}
