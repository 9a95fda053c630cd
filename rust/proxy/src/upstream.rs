//! Upstream selection: the one place that picks an endpoint of a cluster —
//! for HTTP tries, TCP connections and mirrors alike — holds its in-flight
//! count while it is used, and hears how the use went (outlier detection and
//! the failure-rate breaker, `crate::failure_rate`).
//! Connection-pool limits (the cluster's circuit breakers) apply in
//! [`Target::send`]'s pool and around each try (`crate::breaker`).

use crate::body::LoadGuard;
use crate::cluster::{ClusterRt, Health};
use crate::pool::{self, Failed, Sent, UpstreamBody};
use crate::upstream_tls::UpstreamTlsRt;

/// Envoy tries this many times to pick a host other than the last one.
const HOST_SELECTION_ATTEMPTS: usize = 5;

/// What the choice of endpoint may depend on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pick {
    /// The consistent-hash key, when the cluster hashes and the request has one.
    pub hash: Option<u64>,
    /// The endpoint of the previous try.
    pub previous: Option<usize>,
    /// Avoid `previous` (Envoy's `previous_hosts` retry predicate).
    pub avoid_previous: bool,
    /// Move past `previous`'s priority (`retryRemoteLocalities`).
    pub next_priority: bool,
}

/// A chosen endpoint, counted as in flight until dropped.
#[derive(Debug)]
pub struct Target<'a> {
    pub cluster: &'a ClusterRt,
    /// None for an original destination (not an endpoint of the cluster:
    /// nothing to balance or eject).
    pub index: Option<usize>,
    pub address: &'a str,
    pub load: LoadGuard,
}

/// An endpoint of `cluster`: by hash when there is one, else by the balancer
/// from the lowest priority with a healthy endpoint. None: no healthy endpoint.
pub fn select<'a>(cluster: &'a ClusterRt, pick: Pick) -> Option<Target<'a>> {
    // The choice skipped open failure-rate breakers; taking the endpoint
    // takes a probe when half-open, which a concurrent request may have
    // taken first: choose again then. (One call of `choose`, so that it is
    // inlined into every request's path.)
    let mut attempts = 0;
    let index = loop {
        let index = choose(cluster, pick)?;
        if cluster.admit(index) {
            break index;
        }
        attempts += 1;
        if attempts > HOST_SELECTION_ATTEMPTS {
            return None;
        }
    };
    let endpoint = cluster.endpoints.get(index)?;
    Some(Target {
        cluster,
        index: Some(index),
        address: &endpoint.address,
        load: LoadGuard::start(&endpoint.load),
    })
}

/// An original-destination cluster's target: where the request was going.
pub fn original<'a>(cluster: &'a ClusterRt, address: &'a str) -> Target<'a> {
    Target {
        cluster,
        index: None,
        address,
        load: LoadGuard::untracked(),
    }
}

fn choose(cluster: &ClusterRt, pick: Pick) -> Option<usize> {
    if let Some(h) = pick.hash.filter(|_| cluster.hash.is_some()) {
        return cluster.pick_hashed(h);
    }
    let min_priority = match pick.previous {
        Some(p) if pick.next_priority => cluster.endpoints.get(p).map_or(0, |e| e.priority + 1),
        _ => 0,
    };
    let mut index = cluster.pick_index_from(min_priority)?;
    if pick.avoid_previous && cluster.endpoints.len() > 1 {
        for _ in 0..HOST_SELECTION_ATTEMPTS {
            if Some(index) != pick.previous {
                break;
            }
            index = cluster.pick_index_from(min_priority)?;
        }
    }
    Some(index)
}

impl Target<'_> {
    /// Outlier detection hears how a use of this endpoint went.
    pub fn record(&self, health: Health) {
        if let Some(i) = self.index {
            self.cluster.record(i, health);
        }
    }

    /// PEAK_EWMA hears how long this endpoint took to answer.
    pub fn observe_rtt(&self, rtt: std::time::Duration) {
        if let Some(i) = self.index {
            self.cluster.observe_rtt(i, rtt);
        }
    }

    /// Sends `req` over a pooled or new connection; `host` is the request's
    /// authority (the SNI when the cluster sets none: Envoy's auto SNI).
    pub async fn send(
        &self,
        host: Option<&str>,
        http2: bool,
        req: http::Request<UpstreamBody>,
    ) -> Result<Sent, Failed> {
        let cluster = self.cluster;
        let tls = cluster
            .tls
            .as_ref()
            .map(|t| (t, sni(t, host, self.address)));
        let timeout = cluster.connect_timeout;
        let breaker = cluster.breaker();
        pool::send(self.address, http2, timeout, tls, breaker, req).await
    }
}

/// The name a TLS connection asks for: the cluster's SNI, else the request's
/// host, else the endpoint's, without a port.
pub fn sni<'a>(tls: &'a UpstreamTlsRt, host: Option<&'a str>, address: &'a str) -> &'a str {
    tls.sni
        .as_deref()
        .unwrap_or_else(|| meshfast_route::strip_port(host.unwrap_or(address)))
}
