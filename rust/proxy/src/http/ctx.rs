//! The one record of a request, created when it is decoded and owned by it to
//! the log phase: where it came from, the snapshot's route and cluster it
//! was given, the response flags it collected and its filters' state.
//! Phases read and add facts here; nothing is carried in headers and parsed
//! back (Envoy's `StreamInfo`, Pingora's per-request CTX). Timing marks join
//! it with their first reader (the access log).

use super::filters::Filtered;
use super::respond::{self, ProxyBody};
use crate::cluster::ClusterRt;
use crate::conn::Conn;
use crate::flags::{Flags, ResponseFlag};
use crate::runtime::{Destination, ListenerRt, RouteRt, Runtime};
use crate::stats::{ActiveGuard, Counters};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use meshfast_route::Table;
use std::sync::Arc;

pub struct RequestCtx<'a> {
    pub snap: &'a Runtime,
    pub conn: Conn,
    pub listener: &'a ListenerRt,
    pub table: &'a Table<RouteRt>,
    pub route: Option<&'a RouteRt>,
    /// The route's weighted destination, picked once per match.
    pub dest: Option<&'a Destination>,
    pub cluster: Option<&'a Arc<ClusterRt>>,
    /// `:authority` or Host; a filter that changes Host moves it.
    pub authority: String,
    pub request_id: Option<HeaderValue>,
    /// HTTP/1.x (a refusal of its framing closes the connection).
    pub http1: bool,
    pub flags: Flags,
    /// The filters whose request phase let the request through, until their
    /// response or log phase runs. Boxed: only routes with filters have one,
    /// and inline it would grow every request's future by ~300 bytes.
    pub filtered: Option<Box<Filtered<'a>>>,
    /// The request's `Origin`, when the route's CORS policy allows it.
    pub cors_origin: Option<HeaderValue>,
    /// The access log's entry, when the log is on (None costs nothing).
    pub log: Option<Box<crate::access_log::Entry>>,
    /// When the request came (its duration, for Istio's metrics and the log).
    pub started: tokio::time::Instant,
    /// The request body's bytes, once forwarding has it.
    pub received: crate::access_log::Received,
    /// A gRPC request (`content-type: application/grpc…`).
    pub grpc: bool,
    /// The request's span, when tracing sampled it (None costs nothing).
    pub span: Option<Box<crate::tracer::Open>>,
    /// `rq_active` of the listener, route and cluster while the request lives.
    active: [Option<ActiveGuard>; 3],
}

impl<'a> RequestCtx<'a> {
    pub fn new(
        snap: &'a Runtime,
        listener: &'a ListenerRt,
        table: &'a Table<RouteRt>,
        conn: Conn,
    ) -> Self {
        Self {
            snap,
            conn,
            listener,
            table,
            route: None,
            dest: None,
            cluster: None,
            authority: String::new(),
            request_id: None,
            http1: false,
            flags: Flags::default(),
            filtered: None,
            cors_origin: None,
            log: None,
            started: tokio::time::Instant::now(),
            received: crate::access_log::Received::default(),
            grpc: false,
            span: None,
            active: [Some(ActiveGuard::request(&listener.stats)), None, None],
        }
    }

    /// The request now follows `route` (again, when a filter moved it).
    pub fn set_route(&mut self, route: &'a RouteRt) {
        if self.route.is_some_and(|r| std::ptr::eq(r, route)) {
            return;
        }
        self.route = Some(route);
        self.dest = route.destinations.pick();
        self.active[1] = Some(ActiveGuard::request(&route.stats));
    }

    pub fn set_cluster(&mut self, cluster: &'a Arc<ClusterRt>) {
        self.cluster = Some(cluster);
        self.active[2] = Some(ActiveGuard::request(&cluster.stats));
    }

    /// The counters of the listener, route and cluster the request reached.
    pub fn counters(&self) -> impl Iterator<Item = &'a Arc<Counters>> {
        [
            Some(&self.listener.stats),
            self.route.map(|r| &r.stats),
            self.cluster.map(|c| &c.stats),
        ]
        .into_iter()
        .flatten()
    }

    /// The listener's, route's and cluster's counters for a streaming body.
    pub fn sinks(&self) -> [Option<Arc<Counters>>; 3] {
        [
            Some(self.listener.stats.clone()),
            self.route.map(|r| r.stats.clone()),
            self.cluster.map(|c| c.stats.clone()),
        ]
    }

    /// The local reply for a failure: the flag's status and Envoy's words.
    pub fn fail(&mut self, flag: ResponseFlag) -> Response<ProxyBody> {
        self.flags.insert(flag);
        respond::failure(flag)
    }

    /// A locally generated answer.
    pub fn local(
        &mut self,
        status: StatusCode,
        flag: Option<ResponseFlag>,
        body: Option<Bytes>,
    ) -> Response<ProxyBody> {
        if let Some(f) = flag {
            self.flags.insert(f);
        }
        respond::local(status, body)
    }
}
