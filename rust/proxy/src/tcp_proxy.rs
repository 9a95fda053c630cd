//! Plain TCP proxying for ports declared TCP (and TLS passed through by SNI):
//! one destination per connection, chosen by the route, the endpoint by the
//! upstream selection, then the bytes spliced both ways.

use crate::cluster::{ClusterRt, Health};
use crate::conn::Conn;
use crate::flags::ResponseFlag;
use crate::runtime::{Destinations, ListenerKind, ListenerRt, Runtime};
use crate::stats::Counters;
use crate::tls;
use crate::upstream::{self, Pick};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The workload's AuthorizationPolicies in their TCP form (compiled so: no
/// request attributes are asked for).
fn authorized(listener: &ListenerRt, conn: &Conn) -> bool {
    let Some(enforcer) = &listener.authz else {
        return true;
    };
    enforcer.allows(&crate::authz::Facts {
        principal: conn.identity.as_deref(),
        peer: Some(conn.peer.ip()),
        destination: conn.destination,
        sni: conn.sni.as_deref(),
        request: None,
    })
}

pub async fn serve(
    mut downstream: TcpStream,
    conn: Conn,
    store: Arc<ArcSwap<Runtime>>,
    listener_id: usize,
) {
    let snap = store.load_full();
    let Some(listener) = snap.listener(listener_id) else {
        return;
    };
    if !authorized(listener, &conn) {
        // Istio's TCP denial: the connection is closed, nothing forwarded.
        listener.stats.flag(ResponseFlag::RbacDenied);
        return;
    }
    let Some((destinations, prefix)) = route(listener, &mut downstream).await else {
        return;
    };
    let Some(cluster) = destinations
        .and_then(|d| d.pick())
        .and_then(|d| d.cluster.as_ref())
    else {
        listener.stats.flag(ResponseFlag::NoRoute);
        return;
    };
    if cluster.original_dst {
        // Never back into the sidecar itself.
        let dst = conn.original_dst.filter(|d| !snap.is_own(*d));
        passthrough(downstream, &prefix, cluster, dst).await;
        return;
    }
    // Consistent hashing on a TCP port can only key on the source IP.
    let pick = Pick {
        hash: cluster
            .hash
            .as_ref()
            .and_then(|h| h.source_ip_key(conn.peer)),
        ..Pick::default()
    };
    let Some(target) = upstream::select(cluster, pick) else {
        listener.stats.flag(ResponseFlag::NoHealthyUpstream);
        cluster.stats.flag(ResponseFlag::NoHealthyUpstream);
        return;
    };
    // `maxConnections` holds for TCP too: past it the connection is closed
    // at once (Envoy's `UO`), its slot held while the connection is open.
    let Some(_slot) = cluster.breaker().connection() else {
        cluster.breaker().cx_overflow();
        listener.stats.flag(ResponseFlag::UpstreamOverflow);
        cluster.stats.flag(ResponseFlag::UpstreamOverflow);
        return;
    };
    let connect = TcpStream::connect(target.address);
    let upstream = match tokio::time::timeout(cluster.connect_timeout, connect).await {
        Ok(Ok(s)) => {
            target.record(Health::Success);
            s
        }
        _ => {
            // TCP outlier detection counts connect failures (Istio's consecutive errors).
            target.record(Health::LocalFailure);
            listener.stats.flag(ResponseFlag::UpstreamConnectFailure);
            cluster.stats.flag(ResponseFlag::UpstreamConnectFailure);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    cluster.stats.cx_total.fetch_add(1, Relaxed);
    splice(
        downstream,
        upstream,
        &prefix,
        [&listener.stats, &cluster.stats],
        cluster,
    )
    .await;
}

/// The route's destinations, and what was read to choose them (a TLS
/// ClientHello) that must go upstream first. None: not a TCP listener, or
/// the ClientHello never came.
async fn route<'a>(
    listener: &'a ListenerRt,
    downstream: &mut TcpStream,
) -> Option<(Option<&'a Destinations>, Vec<u8>)> {
    match &listener.kind {
        // Compile already filtered routes by port; the first one applies.
        ListenerKind::Tcp(routes) => Some((routes.first().map(|r| &r.destinations), Vec::new())),
        ListenerKind::Tls(routes) => {
            let Some((hello, seen)) = tls::peek_sni(downstream).await else {
                listener.stats.flag(ResponseFlag::DownstreamProtocolError);
                return None;
            };
            // No SNI (or not TLS at all) only matches a `*` route.
            let sni = match hello {
                tls::Hello::Tls(sni) => sni.unwrap_or_default(),
                tls::Hello::NotTls => String::new(),
            };
            let found = routes
                .iter()
                .find(|r| r.sni_hosts.iter().any(|p| tls::sni_matches(p, &sni)));
            Some((found.map(|r| &r.destinations), seen))
        }
        ListenerKind::Http(..) => None,
    }
}

/// Passthrough: connect where the client was going (iptables capture).
async fn passthrough(
    downstream: TcpStream,
    prefix: &[u8],
    cluster: &ClusterRt,
    original_dst: Option<SocketAddr>,
) {
    if let Some(dst) = original_dst {
        let connect = tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(dst));
        if let Ok(Ok(upstream)) = connect.await {
            splice(downstream, upstream, prefix, [], cluster).await;
            return;
        }
    }
    cluster.stats.flag(ResponseFlag::NoHealthyUpstream);
}

/// `prefix` first, then both directions until each side is done, counted
/// into `counters` and the cluster's Istio TCP metrics at the end.
async fn splice<const N: usize>(
    mut downstream: TcpStream,
    mut upstream: TcpStream,
    prefix: &[u8],
    counters: [&Counters; N],
    cluster: &ClusterRt,
) {
    let tcp = &cluster.istio.tcp;
    tcp.opened.fetch_add(1, Relaxed);
    // copy_bidirectional uses a bounded buffer per direction and half-closes
    // each side when the other finishes.
    let copied = if !prefix.is_empty() && upstream.write_all(prefix).await.is_err() {
        None
    } else {
        tokio::io::copy_bidirectional(&mut downstream, &mut upstream)
            .await
            .ok()
    };
    if let Some((to_up, to_down)) = copied {
        for c in counters {
            c.bytes_in.fetch_add(to_up, Relaxed);
            c.bytes_out.fetch_add(to_down, Relaxed);
        }
        tcp.received.fetch_add(to_up, Relaxed);
        tcp.sent.fetch_add(to_down, Relaxed);
    }
    tcp.closed.fetch_add(1, Relaxed);
}
