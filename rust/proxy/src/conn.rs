//! What an accepted connection knows that its requests (HTTP) or its one
//! stream (TCP) need.

use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where a connection came from and was going.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Where the client was going before iptables redirected it here.
    pub original_dst: Option<SocketAddr>,
    /// The client's SPIFFE ID, when it came over mesh mTLS.
    pub identity: Option<Arc<str>>,
}

/// The listener a connection arrived on, and the snapshot store its requests
/// load from (once per request).
pub struct ConnCtx {
    pub store: Arc<ArcSwap<Runtime>>,
    pub listener_id: usize,
}

impl std::fmt::Debug for ConnCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnCtx")
            .field("listener_id", &self.listener_id)
            .finish()
    }
}
