//! Mirroring: a copy of the request to another cluster, fire and forget. It
//! never delays or fails the primary request; its response is read and dropped.

use crate::body::LoadGuard;
use crate::http_proxy::Template;
use crate::pool;
use crate::runtime::MirrorRt;
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

/// Starts a mirror of `template` to `mirror`'s cluster. Skipped (and counted
/// as the cluster's `NoCluster`/`UH` flags) when it cannot be sent.
pub fn spawn(mirror: &MirrorRt, template: &Template) {
    let Some(cluster) = mirror.cluster.clone() else {
        return;
    };
    if IN_FLIGHT.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Relaxed);
        return;
    }
    let guard = InFlight;
    let sinks = [None, None, Some(cluster.stats.clone())];
    let Some(req) = template.mirror_copy(sinks) else {
        return;
    };
    let Some(endpoint) = cluster.pick() else {
        cluster.stats.flag(crate::ResponseFlag::NoHealthyUpstream);
        return;
    };
    let address = endpoint.address.clone();
    let load = LoadGuard::start(&endpoint.load);
    let http2 = template.http2();
    let host = template.host().map(str::to_owned);
    cluster.stats.rq_total.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        let _guard = guard;
        let _load = load;
        let new_connection = || {
            cluster.stats.cx_total.fetch_add(1, Relaxed);
        };
        let sni = match &cluster.tls {
            Some(t) => t.sni.clone().unwrap_or_else(|| {
                meshfast_route::strip_port(host.as_deref().unwrap_or(&address)).to_owned()
            }),
            None => String::new(),
        };
        let tls = cluster.tls.as_ref().map(|t| (t, sni.as_str()));
        match pool::send(
            &address,
            http2,
            cluster.connect_timeout,
            tls,
            new_connection,
            req,
        )
        .await
        {
            Ok((resp, lease)) => {
                cluster.stats.response(resp.status().as_u16());
                // Read to the end so the connection can go back to the pool.
                let mut body = resp.into_body();
                while let Some(Ok(_)) = body.frame().await {}
                if let Some(mut lease) = lease {
                    lease.complete = true;
                }
            }
            Err(_) => cluster
                .stats
                .flag(crate::ResponseFlag::UpstreamConnectFailure),
        }
    });
}
