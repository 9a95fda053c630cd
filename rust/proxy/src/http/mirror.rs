//! Mirroring: a copy of the request to another cluster, fire and forget. It
//! never delays or fails the primary request; its response is read and dropped.

use super::upstream_request::UpstreamRequest;
use crate::flags::ResponseFlag;
use crate::pool::{Held, SendError};
use crate::runtime::MirrorRt;
use crate::upstream::{self, Pick};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Mirror requests in flight across all workers; past this, mirrors are skipped.
const MAX_IN_FLIGHT: usize = 1024;
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Relaxed);
    }
}

/// Starts a mirror of `request` to `mirror`'s cluster. Skipped (and counted
/// as the cluster's `UH` flag) when it cannot be sent.
pub fn spawn(mirror: &MirrorRt, request: &UpstreamRequest) {
    let Some(cluster) = mirror.cluster.clone() else {
        return;
    };
    if IN_FLIGHT.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Relaxed);
        return;
    }
    let guard = InFlight;
    let sinks = [None, None, Some(cluster.stats.clone())];
    // The mirror's cluster may speak another protocol than the primary's.
    let http2 = cluster.protocol == meshfast_ir::UpstreamProtocol::Http2;
    let Some(req) = request.mirror_copy(sinks, http2) else {
        return;
    };
    let host = request.host().map(str::to_owned);
    tokio::spawn(async move {
        let _guard = guard;
        let Some(mut target) = upstream::select(&cluster, Pick::default()) else {
            cluster.stats.flag(ResponseFlag::NoHealthyUpstream);
            return;
        };
        // A mirror is a request to its cluster: under its limits too.
        match cluster.breaker().request() {
            Ok(slot) => target.load.hold(slot),
            Err(_) => {
                cluster.stats.flag(ResponseFlag::UpstreamOverflow);
                return;
            }
        }
        cluster.stats.rq_total.fetch_add(1, Relaxed);
        match target.send(host.as_deref(), http2, req).await {
            Ok((resp, lease)) => {
                cluster.stats.response(resp.status().as_u16());
                // Read to the end so the connection can go back to the pool.
                let mut body = Held::new(resp.into_body(), target.load, lease);
                while let Some(Ok(_)) = body.frame().await {}
            }
            Err(failed) if matches!(failed.error, SendError::Overflow) => {
                cluster.stats.flag(ResponseFlag::UpstreamOverflow);
            }
            Err(failed) if failed.error.is_connect() => {
                cluster.stats.flag(ResponseFlag::UpstreamConnectFailure);
            }
            Err(_) => cluster
                .stats
                .flag(ResponseFlag::UpstreamConnectionTermination),
        }
    });
}
