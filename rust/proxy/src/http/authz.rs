//! Authorization: the workload's AuthorizationPolicies on an inbound
//! request, right after it is decoded — before routing, filters and local
//! answers, as Envoy's RBAC filter runs before Istio's fault, CORS and router
//! filters: a denied request reaches nothing else. Denied: 403
//! `RBAC: access denied`, flag `RBAC`. The verdict is [`crate::authz`]'s.

use super::ctx::RequestCtx;
use super::respond::Answer;
use crate::authz::{Facts, RequestFacts};
use crate::body::DownBody;
use crate::flags::ResponseFlag;
use http::Request;

pub fn check(ctx: &mut RequestCtx<'_>, req: &Request<DownBody>) -> Result<(), Answer> {
    let Some(enforcer) = &ctx.listener.authz else {
        return Ok(());
    };
    let conn = &ctx.conn;
    let facts = Facts {
        principal: conn.identity.as_deref(),
        peer: Some(conn.peer.ip()),
        destination: conn.destination,
        sni: conn.sni.as_deref(),
        request: Some(RequestFacts {
            authority: &ctx.authority,
            method: req.method().as_str(),
            path: req.uri().path(),
            headers: req.headers(),
        }),
    };
    if enforcer.allows(&facts) {
        return Ok(());
    }
    Err(Box::new(ctx.fail(ResponseFlag::RbacDenied)))
}
