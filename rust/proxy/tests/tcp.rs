//! TCP listeners: bytes carried both ways to the route's cluster, counted,
//! and a dead upstream closes the downstream connection with flag UF.

mod support;

use meshfast_proxy::ir;
use support::*;
use tokio::io::AsyncReadExt;

const TCP: &str = "tcp";

fn tcp_snapshot(upstream: &str) -> ir::Snapshot {
    ir::Snapshot {
        version: 1,
        listeners: vec![ir::Listener {
            name: TCP.into(),
            address: "127.0.0.1:0".into(),
            protocol: ir::ListenerProtocol::Tcp,
            tcp_routes: vec![ir::TcpRoute {
                name: "to-echo".into(),
                clusters: to("tcp-up"),
            }],
            ..Default::default()
        }],
        clusters: vec![ir::Cluster {
            protocol: ir::UpstreamProtocol::Tcp,
            ..cluster("tcp-up", &[upstream])
        }],
        ..Default::default()
    }
}

#[test]
fn tcp_listener_carries_bytes_both_ways_and_counts_them() {
    let h = Harness::new(2);
    let up = h.tcp_echo();
    h.apply(&tcp_snapshot(&up.addr.to_string()));
    let addr = h.addr(TCP);

    let chunks: [&[u8]; 3] = [b"hello", &[0u8, 1, 2, 255, 254], &[b'z'; 100_000]];
    let sent: Vec<u8> = chunks.concat();
    let back = h.block_on(tcp_roundtrip(addr, &chunks));
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "bytes came back changed");
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Counted once the connection has closed on both sides.
    let n = sent.len() as u64;
    h.eventually("TCP byte counters", || {
        h.cluster_stat("tcp-up", "bytes_in") == n && h.cluster_stat("tcp-up", "bytes_out") == n
    });
    assert_eq!(h.listener_stat(TCP, "bytes_in"), n);
    assert_eq!(h.listener_stat(TCP, "bytes_out"), n);
    assert_eq!(h.listener_stat(TCP, "cx_total"), 1);
    assert_eq!(h.cluster_stat("tcp-up", "cx_total"), 1);
}

#[test]
fn tcp_connections_are_independent() {
    let h = Harness::new(2);
    let up = h.tcp_echo();
    h.apply(&tcp_snapshot(&up.addr.to_string()));
    let addr = h.addr(TCP);
    h.block_on(async {
        let tasks: Vec<_> = (0..6u8)
            .map(|i| {
                tokio::spawn(async move {
                    let msg = vec![i; 1000 + usize::from(i)];
                    let back = tcp_roundtrip(addr, &[&msg, &msg]).await;
                    assert_eq!(back, [msg.clone(), msg].concat(), "connection {i}");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("connection task");
        }
    });
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 6);
}

#[test]
fn dead_tcp_upstream_closes_the_downstream_with_uf() {
    let h = Harness::new(1);
    h.apply(&tcp_snapshot(&closed_port()));
    let addr = h.addr(TCP);
    let read = h.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        // The proxy closes (or resets) the connection without a byte.
        s.read_to_end(&mut buf).await.map(|_| buf)
    });
    if let Ok(buf) = read {
        assert!(buf.is_empty(), "{buf:?}");
    }
    h.eventually("UF on the TCP listener", || {
        h.stats()["listeners"][TCP]["response_flags"]["UF"] == 1
    });
    assert_eq!(h.cluster_flag("tcp-up", "UF"), 1);
}
