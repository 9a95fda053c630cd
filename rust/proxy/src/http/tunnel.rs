//! An HTTP/1.1 upgrade the upstream accepted (101): the two upgraded
//! connections spliced, bytes counted when the tunnel closes.

use super::ctx::RequestCtx;
use super::respond::ProxyBody;
use crate::body::LoadGuard;
use http::{header, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::sync::atomic::Ordering::Relaxed;

/// Answers 101 downstream and splices the connections once both are upgraded.
pub fn splice(
    ctx: &RequestCtx<'_>,
    mut resp: Response<Incoming>,
    downstream: OnUpgrade,
    load: LoadGuard,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    // Keep Upgrade/Connection: they are the point of a 101.
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove("keep-alive");
    let sinks = ctx.sinks();
    let held = ctx.conn.held.clone();
    tokio::spawn(async move {
        // The tunnel is the client connection now: it stays counted.
        let (_load, _held) = (load, held);
        let (Ok(down), Ok(up)) = (downstream.await, upstream.await) else {
            return;
        };
        let mut down = hyper_util::rt::TokioIo::new(down);
        let mut up = hyper_util::rt::TokioIo::new(up);
        if let Ok((to_up, to_down)) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            for s in sinks.iter().flatten() {
                s.bytes_in.fetch_add(to_up, Relaxed);
                s.bytes_out.fetch_add(to_down, Relaxed);
            }
        }
    });
    Response::from_parts(parts, ProxyBody::Local(None))
}
