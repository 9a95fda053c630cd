//! Plain TCP proxying for ports declared TCP: one destination per connection.

use crate::cluster::Health;
use crate::conn::Conn;
use crate::flags::ResponseFlag;
use crate::runtime::{ListenerKind, Runtime};
use crate::tls;
use crate::upstream::{self, Pick};
use arc_swap::ArcSwap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
    // What was read before choosing a destination (a ClientHello) goes first.
    let mut prefix = Vec::new();
    let destinations = match &listener.kind {
        // Compile already filtered routes by port; the first one applies.
        ListenerKind::Tcp(routes) => routes.first().map(|r| &r.destinations),
        ListenerKind::Tls(routes) => {
            let Some((hello, seen)) = tls::peek_sni(&mut downstream).await else {
                listener.stats.flag(ResponseFlag::DownstreamProtocolError);
                return;
            };
            prefix = seen;
            // No SNI (or not TLS at all) only matches a `*` route.
            let sni = match hello {
                tls::Hello::Tls(sni) => sni.unwrap_or_default(),
                tls::Hello::NotTls => String::new(),
            };
            routes
                .iter()
                .find(|r| r.sni_hosts.iter().any(|p| tls::sni_matches(p, &sni)))
                .map(|r| &r.destinations)
        }
        ListenerKind::Http(..) => return,
    };
    let Some(cluster) = destinations
        .and_then(|d| d.pick())
        .and_then(|d| d.cluster.as_ref())
    else {
        listener.stats.flag(ResponseFlag::NoRoute);
        return;
    };
    if cluster.original_dst {
        // Passthrough: connect where the client was going (iptables capture).
        if let Some(dst) = conn.original_dst {
            if let Ok(Ok(mut upstream)) =
                tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(dst)).await
            {
                if prefix.is_empty() || upstream.write_all(&prefix).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
                }
                return;
            }
        }
        cluster.stats.flag(ResponseFlag::NoHealthyUpstream);
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
    let connect = TcpStream::connect(target.address);
    let mut upstream = match tokio::time::timeout(cluster.connect_timeout, connect).await {
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
    if !prefix.is_empty() && upstream.write_all(&prefix).await.is_err() {
        return;
    }
    cluster.stats.cx_total.fetch_add(1, Relaxed);
    // copy_bidirectional uses a bounded buffer per direction and half-closes
    // each side when the other finishes.
    if let Ok((to_up, to_down)) =
        tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await
    {
        for c in [&listener.stats, &cluster.stats] {
            c.bytes_in.fetch_add(to_up, Relaxed);
            c.bytes_out.fetch_add(to_down, Relaxed);
        }
    }
}
