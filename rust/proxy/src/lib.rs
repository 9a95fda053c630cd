//! meshfast's data plane.
//!
//! [`Proxy`] owns N worker threads, each a single-threaded tokio runtime that
//! accepts on its own `SO_REUSEPORT` socket for every listener, so a request
//! is served start to finish on one thread with no cross-thread hand-off. The
//! config is a [`runtime::Runtime`] behind an `ArcSwap`: each request loads it
//! once and keeps that `Arc`, so a swap never changes a request in flight.

pub mod access_log;
mod actions;
pub mod authz;
mod body;
mod breaker;
mod cluster;
mod conn;
mod downstream;
pub mod echo;
pub mod explain;
mod failure_rate;
mod filter_body;
pub mod filters;
mod flags;
mod h2_flood;
mod hashing;
mod headers;
mod http;
pub mod istio_metrics;
mod listener;
mod pool;
mod retry;
pub mod runtime;
pub mod spans;
pub mod spiffe;
pub mod stats;
mod tcp_proxy;
mod tls;
pub mod trace_context;
pub mod tracer;
mod upstream;
mod upstream_tls;
mod workers;

pub use flags::ResponseFlag;
pub use meshfast_ir as ir;
pub use workers::{Proxy, ProxyError, ThreadWrap};
