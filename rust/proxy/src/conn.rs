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
    /// Where the connection arrived: its original destination, else the
    /// listener's own address. Looked up only on listeners with
    /// AuthorizationPolicies (`destination.ip`/`.port`, `ports`).
    pub destination: Option<SocketAddr>,
    /// The SNI of its TLS handshake (AuthorizationPolicy's `connection.sni`).
    pub sni: Option<Arc<str>>,
    /// What keeps the connection counted (the workers' open count, read by
    /// the connection cap and the drain; its listener's `cx_active`): released
    /// when the connection and any tunnel it was upgraded into have closed —
    /// after a 101, hyper lets go of the connection while its bytes still flow.
    pub held: Held,
}

/// A connection's counting guards, shared by whatever still carries its bytes.
pub type Held = Arc<dyn std::any::Any + Send + Sync>;

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
