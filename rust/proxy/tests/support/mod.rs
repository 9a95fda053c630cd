//! Helpers for the in-process data-path tests: a [`Harness`] that owns a
//! [`Proxy`] and a small tokio runtime for clients and test upstreams, IR
//! builders, and a minimal HTTP/1.1 client over real loopback sockets.
//!
//! Nothing here waits for time to pass: every wait is for an event (a
//! response, a message from an upstream, a counter reaching a value) and
//! [`DEADLINE`] only bounds how long a broken proxy can hang a test.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshfast_proxy::echo::{Echo, EchoConfig};
use meshfast_proxy::ir;
use meshfast_proxy::Proxy;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long anything may take before the test is declared failed. Generous:
/// the machine is shared and slow; a passing run never gets near it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The name the HTTP listener of [`http_snapshot`] gets.
pub const HTTP: &str = "http";

// === Harness ===

/// A proxy plus a runtime for clients and upstreams. Config is applied from
/// the test's own thread (`Proxy::apply` blocks, so it must not run inside
/// the runtime); requests run on the runtime with [`Harness::block_on`].
pub struct Harness {
    pub proxy: Proxy,
    rt: tokio::runtime::Runtime,
}

impl Harness {
    pub fn new(workers: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-upstreams")
            .enable_all()
            .build()
            .expect("test runtime");
        let proxy = Proxy::start(workers).expect("proxy starts");
        Self { proxy, rt }
    }

    /// Applies `snap`, panicking on error.
    pub fn apply(&self, snap: &ir::Snapshot) -> u64 {
        self.proxy
            .apply(&snap.encode())
            .unwrap_or_else(|e| panic!("snapshot v{} refused: {e}", snap.version))
    }

    pub fn try_apply(&self, snap: &ir::Snapshot) -> Result<u64, meshfast_proxy::ProxyError> {
        self.proxy.apply(&snap.encode())
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.proxy
            .listeners()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener {name:?}"))
            .1
            .parse()
            .expect("listener address")
    }

    /// Runs `f` on the harness runtime, failing the test past [`DEADLINE`].
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(async {
            tokio::time::timeout(DEADLINE, f)
                .await
                .expect("deadline passed: the proxy hung")
        })
    }

    /// One request on a new connection to listener `HTTP`.
    pub fn get(&self, host: &str, path: &str) -> Reply {
        self.send(HTTP, get(host, path))
    }

    /// One request on a new connection to `listener`.
    pub fn send(&self, listener: &str, req: Request<Full<Bytes>>) -> Reply {
        let addr = self.addr(listener);
        self.block_on(async move {
            let mut c = Client::connect(addr).await;
            c.send(req).await
        })
    }

    /// The parsed stats JSON.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.proxy.stats().render_json()).expect("stats JSON")
    }

    /// A counter of cluster `name` (0 when the cluster has no stats yet).
    pub fn cluster_stat(&self, name: &str, key: &str) -> u64 {
        self.stats()["clusters"][name][key].as_u64().unwrap_or(0)
    }

    pub fn cluster_flag(&self, name: &str, flag: &str) -> u64 {
        self.stats()["clusters"][name]["response_flags"][flag]
            .as_u64()
            .unwrap_or(0)
    }

    pub fn listener_stat(&self, name: &str, key: &str) -> u64 {
        self.stats()["listeners"][name][key].as_u64().unwrap_or(0)
    }

    /// `health` of each endpoint of `cluster` in `clusters_json()`, by address.
    pub fn health(&self, cluster: &str) -> Vec<(String, String)> {
        let json: serde_json::Value =
            serde_json::from_str(&self.proxy.runtime().clusters_json()).expect("clusters JSON");
        let clusters = json["clusters"].as_array().expect("clusters array");
        let c = clusters
            .iter()
            .find(|c| c["name"] == cluster)
            .unwrap_or_else(|| panic!("no cluster {cluster:?} in {json}"));
        c["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(|e| {
                (
                    e["address"].as_str().unwrap_or_default().to_owned(),
                    e["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits (bounded by [`DEADLINE`]) until `cond` holds, for effects the
    /// proxy records after the response is sent (mirrors, TCP byte counts).
    /// Polls; the interval only paces the polling, it orders nothing.
    pub fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + DEADLINE;
        while !cond() {
            assert!(Instant::now() < until, "deadline passed waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts an upstream that records what it receives (see [`Upstream`]).
    pub fn upstream(&self, name: &str, status: u16) -> Upstream {
        let _guard = self.rt.enter();
        Upstream::start(name, status, false, None)
    }

    /// Like [`Harness::upstream`], holding each answer until the test adds a
    /// permit to the returned semaphore (the request is reported first).
    pub fn gated_upstream(&self, name: &str) -> (Upstream, Arc<tokio::sync::Semaphore>) {
        let _guard = self.rt.enter();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        (Upstream::start(name, 200, false, Some(gate.clone())), gate)
    }

    /// Runs `f` in the background on the harness runtime.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f)
    }

    /// Like [`Harness::upstream`], answering `Connection: close` each time.
    pub fn closing_upstream(&self, name: &str) -> Upstream {
        let _guard = self.rt.enter();
        Upstream::start(name, 200, true, None)
    }

    /// Starts an upstream that reads a request head and hangs up without answering.
    pub fn hang_up(&self) -> HangUp {
        let _guard = self.rt.enter();
        TcpServer::hang_up()
    }

    /// Starts a TCP server that echoes every byte back (see [`TcpEcho`]).
    pub fn tcp_echo(&self) -> TcpEcho {
        let _guard = self.rt.enter();
        TcpServer::echo()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.proxy.shutdown(Duration::from_secs(2));
    }
}

// === Upstreams ===

/// meshfast's own echo server answering every request with `status`
/// (header `x-echo-name` and JSON field `name` say which one answered).
pub fn echo(name: &str, status: u16) -> Echo {
    Echo::start(
        "127.0.0.1:0",
        EchoConfig {
            name: name.to_owned(),
            status,
            delay_ms: 0,
        },
        1,
    )
    .expect("echo starts")
}

/// A loopback address where nothing listens (bound, then released).
pub fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr.to_string()
}

/// What an [`Upstream`] received.
#[derive(Debug)]
pub struct Seen {
    pub version: http::Version,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP upstream (HTTP/1.1 and h2c) that answers `status` with
/// `x-upstream: <name>` (and `NAME: V` for each request header `x-reply-NAME: V`) and reports each request it got on a channel, so a
/// test can wait for a request the proxy sends in the background.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    fn start(
        name: &str,
        status: u16,
        close: bool,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    ) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("upstream addr");
        let listener = TcpListener::from_std(std_listener).expect("tokio listener");
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, seen) = mpsc::unbounded_channel();
        let name = Arc::<str>::from(name);
        let (h, c) = (hits.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (tx, name, hits, gate) = (tx.clone(), name.clone(), h.clone(), gate.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (tx, name, hits, gate) =
                            (tx.clone(), name.clone(), hits.clone(), gate.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            // `x-reply-NAME: V` asks for `NAME: V` on the response.
                            let replies: Vec<(String, http::HeaderValue)> = parts
                                .headers
                                .iter()
                                .filter_map(|(k, v)| {
                                    let name = k.as_str().strip_prefix("x-reply-")?;
                                    Some((name.to_owned(), v.clone()))
                                })
                                .collect();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            hits.fetch_add(1, Ordering::SeqCst);
                            let _ = tx.send(Seen {
                                version: parts.version,
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map_or_else(String::new, |p| p.to_string()),
                                headers: parts.headers,
                                body,
                            });
                            if let Some(gate) = gate {
                                if let Ok(permit) = gate.acquire().await {
                                    permit.forget();
                                }
                            }
                            let mut resp = http::Response::builder()
                                .status(status)
                                .header("x-upstream", &*name);
                            if close {
                                resp = resp.header(http::header::CONNECTION, "close");
                            }
                            for (name, value) in replies {
                                resp = resp.header(name, value);
                            }
                            let resp = resp
                                .body(Full::new(Bytes::from(name.to_string())))
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            connections,
            seen,
            task,
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The requests received so far and not yet taken, without waiting.
    pub fn received(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(seen) = self.seen.try_recv() {
            out.push(seen);
        }
        out
    }

    /// The next request this upstream receives (bounded by [`DEADLINE`]).
    pub fn next_request(&mut self, h: &Harness) -> Seen {
        h.block_on(self.seen.recv())
            .expect("upstream channel closed")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback TCP server that runs one handler per accepted connection and
/// counts the connections.
pub struct TcpServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Reads a request head, then closes without answering: the proxy sees the
/// connection end before a response (a reset, `UC`).
pub type HangUp = TcpServer;
/// Echoes every byte back until the peer half-closes.
pub type TcpEcho = TcpServer;

impl TcpServer {
    fn start<F, Fut>(handle: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("tcp server addr");
        let listener = TcpListener::from_std(std_listener).expect("tokio listener");
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(stream));
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    fn hang_up() -> Self {
        Self::start(|mut stream| async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            // Dropped: closed with nothing written.
        })
    }

    fn echo() -> Self {
        Self::start(|mut stream| async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === Client ===

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The upstream that answered: meshfast echo's `x-echo-name` or an
    /// [`Upstream`]'s `x-upstream`.
    pub fn upstream(&self) -> &str {
        self.header("x-echo-name")
            .or_else(|| self.header("x-upstream"))
            .unwrap_or("<local reply>")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo's JSON description of the request it got.
    pub fn echo_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("echo body is not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 keep-alive connection (hyper's client, no pooling of its own).
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// Everything the proxy sends back to `raw` bytes until it closes the
/// connection (write errors ignored: it may close before reading them all);
/// `half_close`: shut the sending side once written. Panics past [`DEADLINE`].
pub async fn until_closed(addr: SocketAddr, raw: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    if !raw.is_empty() {
        let _ = s.write_all(raw).await;
    }
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("the proxy never closed the connection")
        .ok();
    out
}

/// The status line of the answer to `raw` bytes, read up to the end of the
/// response head (or of the connection); `half_close`: shut the sending side
/// once written. Empty when the proxy closed without answering.
pub async fn raw_status(addr: SocketAddr, raw: &[u8], half_close: bool) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    if half_close {
        s.shutdown().await.expect("half-close");
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&out);
    head.lines().next().unwrap_or_default().to_owned()
}

/// `GET path` with `Host: host`.
pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    request("GET", host, path, &[], Bytes::new())
}

pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).expect("request")
}

/// Writes `data` through a TCP connection to `addr`, half-closes, and
/// returns everything read back until the peer closes.
pub async fn tcp_roundtrip(addr: SocketAddr, chunks: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut back = Vec::new();
    for chunk in chunks {
        s.write_all(chunk).await.expect("write");
        // Each chunk comes back before the next goes out: both directions
        // carry data while the connection is open.
        let mut buf = vec![0u8; chunk.len()];
        s.read_exact(&mut buf).await.expect("echoed chunk");
        back.extend_from_slice(&buf);
    }
    s.shutdown().await.expect("half-close");
    s.read_to_end(&mut back).await.expect("read to EOF");
    back
}

// === IR builders ===

pub fn endpoint(address: &str) -> ir::Endpoint {
    ir::Endpoint {
        address: address.to_owned(),
        weight: 1,
        ..Default::default()
    }
}

/// A round-robin HTTP/1.1 cluster.
pub fn cluster(name: &str, addresses: &[&str]) -> ir::Cluster {
    ir::Cluster {
        name: name.to_owned(),
        lb: ir::LbPolicy::RoundRobin,
        connect_timeout_ms: 5_000,
        endpoints: addresses.iter().map(|a| endpoint(a)).collect(),
        ..Default::default()
    }
}

pub fn to(cluster: &str) -> Vec<ir::WeightedCluster> {
    vec![ir::WeightedCluster {
        cluster: cluster.to_owned(),
        weight: 100,
        ..Default::default()
    }]
}

/// A route sending everything it matches to `cluster`.
pub fn route(name: &str, matcher: ir::RouteMatch, cluster: &str) -> ir::Route {
    ir::Route {
        name: name.to_owned(),
        matcher,
        action: ir::RouteAction {
            clusters: to(cluster),
            ..Default::default()
        },
        stat_prefix: None,
    }
}

pub fn path(kind: ir::MatchKind, value: &str) -> ir::RouteMatch {
    ir::RouteMatch {
        path: Some(ir::StringMatch {
            kind,
            value: value.to_owned(),
            ignore_case: false,
        }),
        ..Default::default()
    }
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<ir::Route>) -> ir::VirtualHost {
    ir::VirtualHost {
        name: name.to_owned(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        routes,
    }
}

/// One HTTP listener [`HTTP`] on an ephemeral loopback port, routing with
/// `vhosts` over `clusters`.
pub fn http_snapshot(
    version: u64,
    vhosts: Vec<ir::VirtualHost>,
    clusters: Vec<ir::Cluster>,
) -> ir::Snapshot {
    ir::Snapshot {
        version,
        listeners: vec![ir::Listener {
            name: HTTP.to_owned(),
            address: "127.0.0.1:0".to_owned(),
            protocol: ir::ListenerProtocol::Http,
            route_table: Some("rt".to_owned()),
            ..Default::default()
        }],
        route_tables: vec![ir::RouteTable {
            name: "rt".to_owned(),
            virtual_hosts: vhosts,
        }],
        clusters,
        ..Default::default()
    }
}

/// Every request to `up` (cluster `c`), by one catch-all route.
pub fn to_upstream(up: &Upstream) -> ir::Snapshot {
    single_route(
        ir::RouteAction {
            clusters: to("c"),
            ..Default::default()
        },
        vec![cluster("c", &[&up.address()])],
    )
}

/// A snapshot whose one virtual host (`*`) has one catch-all route.
pub fn single_route(action: ir::RouteAction, clusters: Vec<ir::Cluster>) -> ir::Snapshot {
    http_snapshot(
        1,
        vec![vhost(
            "vh",
            &["*"],
            vec![ir::Route {
                name: "r".to_owned(),
                action,
                ..Default::default()
            }],
        )],
        clusters,
    )
}
