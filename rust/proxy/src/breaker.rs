//! Connection-pool limits: Istio's `connectionPool`, Envoy's cluster circuit
//! breakers. Per cluster per sidecar, shared by every worker: the gauges are
//! atomics in the cluster's [`Counters`], which the stats registry keeps by
//! name, so what is open or in flight stays counted across config swaps.
//!
//! Past a limit a request fails at once (503 `UO`), never queued without
//! bound: the only wait is a pending request's, for a connection, and at
//! most `max_pending_requests` of them wait.
//!
//! A limit left at Istio's default (2^32-1) is no limit, and nothing is
//! counted for it: an unlimited cluster pays no shared atomic per request.

use crate::stats::Counters;
use meshfast_ir as ir;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Istio's "unlimited" (2^32-1).
pub const UNLIMITED: u64 = u32::MAX as u64;

/// The limits of one cluster, from its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections: u64,
    pub pending: u64,
    pub requests: u64,
    pub retries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_ir(None)
    }
}

impl Limits {
    pub fn from_ir(l: Option<&ir::ConnectionLimits>) -> Self {
        let l = l.cloned().unwrap_or_default();
        Self {
            connections: u64::from(l.max_connections),
            pending: u64::from(l.max_pending_requests),
            requests: u64::from(l.max_requests),
            retries: u64::from(l.max_retries),
        }
    }
}

/// What is open, waiting or in flight for a cluster, across workers and
/// snapshots. Only limited resources are counted.
#[derive(Debug, Default)]
pub struct Gauges {
    connections: AtomicU64,
    pending: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    /// Woken when a connection of the cluster closes, goes back to its
    /// pool idle, or is added to a pool: a pending request looks again.
    changed: Notify,
}

impl Gauges {
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }

    pub fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
enum Resource {
    Connection,
    Pending,
    Request,
    Retry,
}

impl Resource {
    fn gauge(self, g: &Gauges) -> &AtomicU64 {
        match self {
            Self::Connection => &g.connections,
            Self::Pending => &g.pending,
            Self::Request => &g.requests,
            Self::Retry => &g.retries,
        }
    }
}

/// One unit of a limited resource, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    stats: Arc<Counters>,
    resource: Resource,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let gauges = &self.stats.breaker;
        self.resource.gauge(gauges).fetch_sub(1, Relaxed);
        if let Resource::Connection = self.resource {
            gauges.changed.notify_waiters();
        }
    }
}

/// Past a limit: the request fails with `UO` (already counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// A cluster's limits with its shared gauges.
#[derive(Debug, Clone, Copy)]
pub struct Breaker<'a> {
    pub limits: &'a Limits,
    pub stats: &'a Arc<Counters>,
}

impl<'a> Breaker<'a> {
    /// A slot of `resource` under `max`; `Ok(None)`: unlimited, not counted.
    fn take(&self, resource: Resource, max: u64) -> Result<Option<Slot>, Overflow> {
        if max >= UNLIMITED {
            return Ok(None);
        }
        let gauge = resource.gauge(&self.stats.breaker);
        gauge
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .map_err(|_| Overflow)?;
        Ok(Some(Slot {
            stats: self.stats.clone(),
            resource,
        }))
    }

    /// A request in flight (`http2MaxRequests`); overflow counts as
    /// `upstream_rq_active_overflow`, as Envoy (1.40) counts it.
    pub fn request(&self) -> Result<Option<Slot>, Overflow> {
        self.take(Resource::Request, self.limits.requests)
            .inspect_err(|_| {
                self.stats.rq_active_overflow.fetch_add(1, Relaxed);
            })
    }

    /// A request waiting for a connection (`http1MaxPendingRequests`);
    /// overflow counts as `upstream_rq_pending_overflow`.
    pub fn pending(&self) -> Result<Option<Slot>, Overflow> {
        self.take(Resource::Pending, self.limits.pending)
            .inspect_err(|_| {
                self.stats.rq_pending_overflow.fetch_add(1, Relaxed);
            })
    }

    /// A retry in flight (`maxRetries`), held until the retry's outcome is
    /// known; overflow counts as `upstream_rq_retry_overflow`.
    pub fn retry(&self) -> Result<Option<Slot>, Overflow> {
        self.take(Resource::Retry, self.limits.retries)
            .inspect_err(|_| {
                self.stats.rq_retry_overflow.fetch_add(1, Relaxed);
            })
    }

    /// A new connection (`maxConnections`); None: at the limit (the caller
    /// counts `upstream_cx_overflow` once per request that has to wait).
    pub fn connection(&self) -> Option<Option<Slot>> {
        self.take(Resource::Connection, self.limits.connections)
            .ok()
    }

    /// A connection over the limit: Envoy's exception for a pool with no
    /// connection at all, whose pending requests would otherwise wait on
    /// connections only other workers can use.
    pub fn forced_connection(&self) -> Slot {
        self.stats.breaker.connections.fetch_add(1, Relaxed);
        Slot {
            stats: self.stats.clone(),
            resource: Resource::Connection,
        }
    }

    pub fn limits_connections(&self) -> bool {
        self.limits.connections < UNLIMITED
    }

    pub fn cx_overflow(&self) {
        self.stats.cx_overflow.fetch_add(1, Relaxed);
    }

    /// Resolves at the next [`notify`]; enable it before looking, so that a
    /// change between the look and the wait is not lost.
    pub fn changed(&self) -> Notified<'a> {
        self.stats.breaker.changed.notified()
    }
}

/// Wakes a cluster's pending requests: a connection went back to its pool
/// idle or joined one.
pub fn notify(stats: &Counters) {
    stats.breaker.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(n: u32) -> Limits {
        Limits::from_ir(Some(&ir::ConnectionLimits {
            max_connections: n,
            max_pending_requests: n,
            max_requests: n,
            max_retries: n,
        }))
    }

    #[test]
    fn slots_are_given_back_and_overflow_is_counted() {
        let stats = Arc::new(Counters::default());
        let l = limits(1);
        let b = Breaker {
            limits: &l,
            stats: &stats,
        };
        let held = b.request().expect("first").expect("counted");
        assert_eq!(b.request().expect_err("over the limit"), Overflow);
        assert_eq!(stats.rq_active_overflow.load(Relaxed), 1);
        assert_eq!(stats.rq_pending_overflow.load(Relaxed), 0);
        drop(held);
        assert_eq!(stats.breaker.requests(), 0);
        assert!(b.request().is_ok());
        let _r = b.retry().expect("retry").expect("counted");
        assert!(b.retry().is_err());
        assert_eq!(stats.rq_retry_overflow.load(Relaxed), 1);
        let _c = b.connection().expect("room").expect("counted");
        assert!(b.connection().is_none());
        let forced = b.forced_connection();
        assert_eq!(stats.breaker.connections(), 2);
        drop(forced);
        assert_eq!(stats.breaker.connections(), 1);
    }

    #[test]
    fn unlimited_counts_nothing() {
        let stats = Arc::new(Counters::default());
        let l = Limits::default();
        let b = Breaker {
            limits: &l,
            stats: &stats,
        };
        assert!(b.request().expect("unlimited").is_none());
        assert!(b.connection().expect("unlimited").is_none());
        assert_eq!(stats.breaker.requests(), 0);
        assert!(!b.limits_connections());
    }
}
