//! Per-worker upstream clients: hyper's pooled client, one per (protocol,
//! connect timeout), kept in a thread-local so a worker's requests share its
//! pool with no cross-thread locking.

use crate::body::Metered;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use meshfast_ir::UpstreamProtocol;
use std::cell::RefCell;
use std::time::Duration;

pub type UpstreamBody = Metered<Incoming>;
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// Idle pooled connections are closed before the usual upstream keep-alive
/// timeouts (60 s and up), so the proxy rarely reuses one the upstream is closing.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Bounds the idle connections kept per endpoint and worker.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

thread_local! {
    static CLIENTS: RefCell<Vec<((UpstreamProtocol, Duration), UpstreamClient)>> =
        const { RefCell::new(Vec::new()) };
}

pub fn client(protocol: UpstreamProtocol, connect_timeout: Duration) -> UpstreamClient {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some((_, c)) = clients
            .iter()
            .find(|(k, _)| *k == (protocol, connect_timeout))
        {
            return c.clone();
        }
        let c = build(protocol, connect_timeout);
        clients.push(((protocol, connect_timeout), c.clone()));
        c
    })
}

fn build(protocol: UpstreamProtocol, connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false);
    if protocol == UpstreamProtocol::Http2 {
        builder
            .http2_only(true)
            .http2_initial_stream_window_size(1 << 20)
            .http2_initial_connection_window_size(4 << 20);
    }
    builder.build(connector)
}
