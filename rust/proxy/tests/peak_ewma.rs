//! PEAK_EWMA through real sockets: three echo endpoints, one 10× slower
//! (20 ms vs 2 ms). Peak-EWMA sends the slow one under 10% of requests where
//! round robin sends it a third. Delays are real, but only shares are
//! asserted, never durations; the request count and concurrency are fixed.

mod support;

use meshfast_proxy::echo::{Echo, EchoConfig};
use meshfast_proxy::ir;
use std::collections::HashMap;
use support::*;

const REQUESTS: usize = 300;
const CLIENTS: usize = 6;

fn delayed(name: &str, delay_ms: u64) -> Echo {
    let config = EchoConfig {
        name: name.to_owned(),
        status: 200,
        delay_ms,
    };
    Echo::start("127.0.0.1:0", config, 1).expect("echo starts")
}

/// The share of `REQUESTS` (sent by `CLIENTS` keep-alive clients at once)
/// that the slow endpoint answered under `lb`.
fn slow_share(lb: ir::LbPolicy) -> f64 {
    let h = Harness::new(2);
    let upstreams = [
        delayed("fast-a", 2),
        delayed("fast-b", 2),
        delayed("slow", 20),
    ];
    let addresses: Vec<String> = upstreams.iter().map(|e| e.address().to_string()).collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let mut c = cluster("c", &refs);
    c.lb = lb;
    let action = ir::RouteAction {
        clusters: to("c"),
        ..Default::default()
    };
    h.apply(&single_route(action, vec![c]));
    let addr = h.addr(HTTP);
    let counts = h.block_on(async move {
        let clients = (0..CLIENTS).map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let mut seen: HashMap<String, usize> = HashMap::new();
                for _ in 0..REQUESTS / CLIENTS {
                    let r = client.send(get("svc", "/")).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                    *seen.entry(r.upstream().to_owned()).or_default() += 1;
                }
                seen
            })
        });
        let mut total: HashMap<String, usize> = HashMap::new();
        for c in clients.collect::<Vec<_>>() {
            for (k, v) in c.await.expect("client") {
                *total.entry(k).or_default() += v;
            }
        }
        total
    });
    assert_eq!(counts.values().sum::<usize>(), REQUESTS, "{counts:?}");
    let slow = counts.get("slow").copied().unwrap_or(0);
    let share = slow as f64 / REQUESTS as f64;
    eprintln!("{lb:?}: {counts:?}, slow share {share:.3}");
    share
}

#[test]
fn peak_ewma_sends_a_ten_times_slower_endpoint_under_a_tenth() {
    let share = slow_share(ir::LbPolicy::PeakEwma);
    assert!(share < 0.10, "slow share {share}");
}

#[test]
fn round_robin_sends_the_slow_endpoint_a_third() {
    let share = slow_share(ir::LbPolicy::RoundRobin);
    assert!((0.25..=0.42).contains(&share), "slow share {share}");
}
