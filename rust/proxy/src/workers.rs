//! The worker threads and the [`Proxy`] that commands them.
//!
//! Each worker is a single-threaded tokio runtime. Listeners are bound by the
//! caller's thread (so bind errors come back synchronously), then handed to
//! every worker as its own `SO_REUSEPORT` socket.

use crate::access_log::{self, AccessLog};
use crate::cluster::EndpointStates;
use crate::conn::{Conn, ConnCtx};
use crate::downstream;
use crate::filters::FilterHook;
use crate::listener;
use crate::runtime::{Hook, Runtime};
use crate::stats::Registry;
use crate::tracer::Tracer;
use arc_swap::ArcSwap;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use meshfast_ir as ir;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Decode(#[from] ir::DecodeError),
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
    #[error("listener {name:?}: cannot bind {address}: {source} (is another process using it?)")]
    Bind {
        name: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BUG: worker {0} is gone")]
    WorkerGone(usize),
    #[error("cannot start worker thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Commands queued per worker; config changes are rare, so this never fills.
const COMMAND_QUEUE: usize = 64;

enum Command {
    Listen {
        id: usize,
        protocol: ir::ListenerProtocol,
        socket: std::net::TcpListener,
    },
    Close {
        id: usize,
    },
    Shutdown {
        deadline: Duration,
        done: std::sync::mpsc::Sender<()>,
    },
}

#[derive(Debug)]
struct Bound {
    id: usize,
    requested: String,
    protocol: ir::ListenerProtocol,
    address: SocketAddr,
}

/// A snapshot's listeners, bound but not yet serving.
struct Binding {
    /// Listener name to id, for every listener of the snapshot.
    ids: HashMap<String, usize>,
    fresh: Vec<Fresh>,
    next_id: usize,
}

/// A listener bound for the snapshot being applied.
struct Fresh {
    name: String,
    requested: String,
    protocol: ir::ListenerProtocol,
    id: usize,
    address: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

#[derive(Debug, Default)]
struct State {
    listeners: BTreeMap<String, Bound>,
    next_id: usize,
    shut_down: bool,
}

/// Runs a worker thread's body (see [`Proxy::start_with`]).
pub type ThreadWrap = Arc<dyn Fn(Box<dyn FnOnce() + Send>) + Send + Sync>;

/// The data plane. Dropping it does not stop the workers; call [`Proxy::shutdown`].
pub struct Proxy {
    /// Joined by `shutdown`, so no worker outlives it (a wrapped worker may
    /// still need the GIL on its way out, which must not meet interpreter exit).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    store: Arc<ArcSwap<Runtime>>,
    /// The filter hook the current snapshot was installed with (kept by [`Proxy::apply`]).
    filters: Mutex<Option<Hook>>,
    /// Addresses of the sidecar beyond its listeners (see [`Proxy::protect`]).
    protected: Arc<parking_lot::RwLock<Vec<SocketAddr>>>,
    workers: Vec<mpsc::Sender<Command>>,
    state: Mutex<State>,
    stats: Arc<Registry>,
    loads: EndpointStates,
    /// Given to every snapshot installed after [`Proxy::start_access_log`].
    access_log: Mutex<Option<Arc<AccessLog>>>,
    /// Given to every snapshot installed after [`Proxy::start_tracing`].
    tracer: Mutex<Option<Arc<Tracer>>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("workers", &self.workers.len())
            .finish()
    }
}

// === impl Proxy ===

impl Proxy {
    pub fn start(workers: usize) -> Result<Self, ProxyError> {
        Self::start_with(workers, None)
    }

    /// Like [`Proxy::start`], with `wrap` running each worker thread's whole
    /// life (the PyO3 crate uses it to give workers one Python thread state
    /// for their lifetime, so a filter call only takes the GIL instead of
    /// creating and destroying a thread state every time).
    pub fn start_with(workers: usize, wrap: Option<ThreadWrap>) -> Result<Self, ProxyError> {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let store = Arc::new(ArcSwap::from_pointee(Runtime::empty()));
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        // Client connections open on all workers (the connection cap).
        let connections = Arc::new(AtomicUsize::new(0));
        for index in 0..workers {
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let store = store.clone();
            let total = connections.clone();
            let wrap = wrap.clone();
            let handle = std::thread::Builder::new()
                .name(format!("meshfast-worker-{index}"))
                .spawn(move || match wrap {
                    Some(wrap) => wrap(Box::new(move || worker_main(rx, store, total))),
                    None => worker_main(rx, store, total),
                })
                .map_err(ProxyError::Spawn)?;
            handles.push(handle);
            senders.push(tx);
        }
        Ok(Self {
            threads: Mutex::new(handles),
            store,
            filters: Mutex::new(None),
            protected: Arc::default(),
            workers: senders,
            state: Mutex::new(State::default()),
            stats: Arc::new(Registry::default()),
            loads: EndpointStates::default(),
            access_log: Mutex::new(None),
            tracer: Mutex::new(None),
        })
    }

    /// Adds an address of the sidecar's own (its admin API) that no original
    /// destination may name, for this snapshot and every later one.
    pub fn protect(&self, address: SocketAddr) {
        let mut protected = self.protected.write();
        if !protected.contains(&address) {
            protected.push(address);
        }
    }

    /// Like [`Proxy::apply`], installing `hook` (None: no filters) with the
    /// snapshot in the same atomic store: the snapshot's filter ids and the
    /// filters they name go live together, and if the snapshot is refused the
    /// current hook stays (nothing to roll back on the caller's side).
    pub fn install(
        &self,
        bytes: &[u8],
        hook: Option<Box<dyn FilterHook>>,
    ) -> Result<u64, ProxyError> {
        self.apply_with(bytes, Some(hook.map(|h| Hook(Arc::new(h)))))
    }

    /// Starts the access log (its writer thread): requests served by
    /// snapshots installed from now on write to it. Call before the first
    /// install; an error (a path that cannot be opened) changes nothing.
    pub fn start_access_log(
        &self,
        sink: access_log::Sink,
        fields: Vec<access_log::Field>,
    ) -> Result<(), access_log::AccessLogError> {
        let log = AccessLog::start(sink, fields, self.stats.access_log.clone())?;
        *self.access_log.lock() = Some(log);
        Ok(())
    }

    /// This workload, for Istio's metrics labels: applies to snapshots
    /// installed from now on (call before the first install).
    pub fn set_workload(&self, workload: crate::istio_metrics::Workload) {
        self.stats.istio.set_workload(workload);
    }

    /// Starts tracing: requests served by snapshots installed from now on
    /// are traced, `percent` of them sampled when their caller did not
    /// decide. Call before the first install.
    pub fn start_tracing(&self, percent: f64) -> Result<(), crate::tracer::SamplingError> {
        let tracer = Tracer::new(percent, self.stats.tracing.clone())?;
        *self.tracer.lock() = Some(tracer);
        Ok(())
    }

    /// The spans finished since the last call, as one encoded span batch
    /// (an empty one while tracing is off).
    pub fn take_spans(&self) -> Vec<u8> {
        match &*self.tracer.lock() {
            Some(t) => t.take(),
            None => crate::spans::SpanBatch::new(0, 0).finish(),
        }
    }

    /// The exporter's own counts (totals so far), shown with the stats.
    pub fn report_span_export(&self, exported: u64, failed: u64, dropped: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.stats.tracing;
        t.exported.store(exported, Relaxed);
        t.export_failed.store(failed, Relaxed);
        t.export_dropped.store(dropped, Relaxed);
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn stats(&self) -> &Registry {
        &self.stats
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.store.load_full()
    }

    /// Decodes and builds `bytes`, binds new listeners, swaps the snapshot in
    /// (one atomic store), then retires listeners that are gone. On error
    /// nothing changes.
    pub fn apply(&self, bytes: &[u8]) -> Result<u64, ProxyError> {
        self.apply_with(bytes, None)
    }

    /// `hook`: Some(new hook) to install with the snapshot, None to keep the current one.
    fn apply_with(&self, bytes: &[u8], hook: Option<Option<Hook>>) -> Result<u64, ProxyError> {
        let snap = ir::Snapshot::decode(bytes)?;
        let mut state = self.state.lock();
        if state.shut_down {
            return Err(ProxyError::WorkerGone(0));
        }

        // Bind what is new before touching anything, so a bind failure changes nothing.
        let Binding {
            ids,
            fresh,
            next_id,
        } = self.bind_new(&state, &snap)?;
        let mut runtime = Runtime::build(&snap, &ids, &self.stats, &self.loads)?;
        let mut filters = self.filters.lock();
        runtime.filters = match hook {
            Some(new) => new,
            None => filters.clone(),
        };
        *filters = runtime.filters.clone();
        drop(filters);
        // No original destination may lead back into one of our listeners.
        let bound = fresh.iter().map(|f| f.address);
        let kept = state
            .listeners
            .iter()
            .filter(|(name, b)| ids.get(*name) == Some(&b.id))
            .map(|(_, b)| b.address);
        runtime.own_addresses.extend(bound.chain(kept));
        runtime.protected = self.protected.clone();
        runtime.access_log = self.access_log.lock().clone();
        runtime.tracer = self.tracer.lock().clone();
        let version = runtime.version;
        self.store.store(Arc::new(runtime));
        state.next_id = next_id;

        // Retire listeners that were removed or replaced.
        let retired: Vec<String> = state
            .listeners
            .iter()
            .filter(|(name, b)| ids.get(*name) != Some(&b.id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in retired {
            if let Some(b) = state.listeners.remove(&name) {
                self.broadcast(|| Command::Close { id: b.id })?;
            }
        }
        for Fresh {
            name,
            requested,
            protocol,
            id,
            address,
            sockets,
        } in fresh
        {
            for (worker, socket) in self.workers.iter().zip(sockets) {
                worker
                    .blocking_send(Command::Listen {
                        id,
                        protocol,
                        socket,
                    })
                    .map_err(|_| ProxyError::WorkerGone(id))?;
            }
            state.listeners.insert(
                name,
                Bound {
                    id,
                    requested,
                    protocol,
                    address,
                },
            );
        }
        Ok(version)
    }

    /// Ids for the snapshot's listeners: a kept listener keeps its own; a new
    /// (or changed) one is bound here, with the next free id.
    fn bind_new(&self, state: &State, snap: &ir::Snapshot) -> Result<Binding, ProxyError> {
        // Names identify listeners across snapshots: a duplicate would bind a
        // socket no name tracks (never listed, never closed).
        let mut names = std::collections::HashSet::new();
        if let Some(l) = snap.listeners.iter().find(|l| !names.insert(&l.name)) {
            let name = l.name.clone();
            return Err(crate::runtime::BuildError::Duplicate {
                what: "listener",
                name,
            }
            .into());
        }
        let mut binding = Binding {
            ids: HashMap::new(),
            fresh: Vec::new(),
            next_id: state.next_id,
        };
        for l in &snap.listeners {
            if let Some(b) = state.listeners.get(&l.name) {
                if b.requested == l.address && b.protocol == l.protocol {
                    binding.ids.insert(l.name.clone(), b.id);
                    continue;
                }
            }
            let bind_err = |source| ProxyError::Bind {
                name: l.name.clone(),
                address: l.address.clone(),
                source,
            };
            let address = listener::resolve(&l.address).map_err(bind_err)?;
            let sockets = listener::bind(address, self.workers.len()).map_err(bind_err)?;
            let bound = sockets[0].local_addr().map_err(bind_err)?;
            let id = binding.next_id;
            binding.next_id += 1;
            binding.ids.insert(l.name.clone(), id);
            binding.fresh.push(Fresh {
                name: l.name.clone(),
                requested: l.address.clone(),
                protocol: l.protocol,
                id,
                address: bound,
                sockets,
            });
        }
        Ok(binding)
    }

    /// (name, bound address) of every listener.
    pub fn listeners(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .listeners
            .iter()
            .map(|(name, b)| (name.clone(), b.address.to_string()))
            .collect()
    }

    /// Stops accepting, drains connections for up to `deadline`, stops the workers.
    pub fn shutdown(&self, deadline: Duration) {
        let mut state = self.state.lock();
        if state.shut_down {
            return;
        }
        state.shut_down = true;
        state.listeners.clear();
        let mut waits = Vec::new();
        for w in &self.workers {
            let (done, wait) = std::sync::mpsc::channel();
            if w.blocking_send(Command::Shutdown { deadline, done })
                .is_ok()
            {
                waits.push(wait);
            }
        }
        let mut all_done = true;
        for wait in waits {
            all_done &= wait.recv_timeout(deadline + Duration::from_secs(1)).is_ok();
        }
        if all_done {
            // Every worker has left its loop: its thread ends at once.
            for handle in self.threads.lock().drain(..) {
                let _ = handle.join();
            }
        }
    }

    fn broadcast(&self, cmd: impl Fn() -> Command) -> Result<(), ProxyError> {
        for (i, w) in self.workers.iter().enumerate() {
            w.blocking_send(cmd())
                .map_err(|_| ProxyError::WorkerGone(i))?;
        }
        Ok(())
    }
}

fn worker_main(rx: mpsc::Receiver<Command>, store: Arc<ArcSwap<Runtime>>, total: Arc<AtomicUsize>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshfast: cannot start a worker runtime: {e}");
            return;
        }
    };
    rt.block_on(worker(rx, store, total));
}

/// Connections of one worker, for draining.
#[derive(Clone)]
struct Drain {
    signal: watch::Receiver<bool>,
    /// This worker's open connections (the drain waits for them).
    open: Arc<AtomicUsize>,
    /// Every worker's (the connection cap counts them).
    total: Arc<AtomicUsize>,
}

impl Drain {
    fn open_one(&self) -> OpenConn {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        OpenConn(self.open.clone(), self.total.clone())
    }
}

/// One open connection, counted until dropped.
struct OpenConn(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn worker(
    mut rx: mpsc::Receiver<Command>,
    store: Arc<ArcSwap<Runtime>>,
    total: Arc<AtomicUsize>,
) {
    let (drain_tx, drain_rx) = watch::channel(false);
    let drain = Drain {
        signal: drain_rx,
        open: Arc::new(AtomicUsize::new(0)),
        total,
    };
    let builder = Arc::new(downstream::http_builder());
    let mut accepting: HashMap<usize, watch::Sender<bool>> = HashMap::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Listen {
                id,
                protocol,
                socket,
            } => {
                let Ok(socket) = tokio::net::TcpListener::from_std(socket) else {
                    continue;
                };
                let (stop_tx, stop_rx) = watch::channel(false);
                accepting.insert(id, stop_tx);
                let ctx = Arc::new(ConnCtx {
                    store: store.clone(),
                    listener_id: id,
                });
                tokio::spawn(accept(
                    socket,
                    protocol,
                    ctx,
                    stop_rx,
                    drain.clone(),
                    builder.clone(),
                ));
            }
            Command::Close { id } => {
                if let Some(stop) = accepting.remove(&id) {
                    let _ = stop.send(true);
                }
            }
            Command::Shutdown { deadline, done } => {
                for (_, stop) in accepting.drain() {
                    let _ = stop.send(true);
                }
                let _ = drain_tx.send(true);
                let until = tokio::time::Instant::now() + deadline;
                while drain.open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < until
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

async fn accept(
    socket: tokio::net::TcpListener,
    protocol: ir::ListenerProtocol,
    ctx: Arc<ConnCtx>,
    mut stop: watch::Receiver<bool>,
    drain: Drain,
    builder: Arc<auto::Builder<TokioExecutor>>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = socket.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning (Trio's policy).
                if matches!(e.raw_os_error(), Some(23 | 24 | 12 | 105)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let snap = ctx.store.load();
        // The cap counts every worker's connections; past it, close at once
        // (never queue without bound). Existing connections are unaffected.
        // Counted first, then checked: workers accepting at once cannot
        // overshoot together.
        let open = drain.open_one();
        if drain.total.load(Ordering::Relaxed) > snap.downstream.max_connections {
            if let Some(l) = snap.listener(ctx.listener_id) {
                l.stats.cx_overflow.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        // Only a connection iptables redirected has an original destination;
        // ask the kernel only when some cluster needs it.
        let original_dst = if snap.needs_original_dst {
            socket2::SockRef::from(&stream)
                .original_dst()
                .ok()
                .and_then(|a| a.as_socket())
                .filter(|a| Some(*a) != stream.local_addr().ok())
        } else {
            None
        };
        // Policies may ask where the connection was going.
        let destination = snap
            .listener(ctx.listener_id)
            .is_some_and(|l| l.authz.is_some())
            .then(|| original_dst.or_else(|| stream.local_addr().ok()))
            .flatten();
        drop(snap);
        let conn = Conn {
            peer,
            original_dst,
            identity: None,
            destination,
            sni: None,
            held: Arc::new(open),
        };
        let (ctx, signal, builder) = (ctx.clone(), drain.signal.clone(), builder.clone());
        tokio::spawn(downstream::serve(
            stream, conn, ctx, protocol, signal, builder,
        ));
    }
}
