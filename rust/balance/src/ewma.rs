//! Peak-EWMA latency estimation (Finagle's and Linkerd's): an endpoint's cost
//! jumps at once to any slower response time it sees and decays toward faster
//! ones with time constant τ, so a slow endpoint is avoided at once and
//! forgiven gradually.
//!
//! Pure arithmetic over caller-supplied nanosecond timestamps: the caller
//! owns the clock (tokio's, so tests can pause it) and the locking.

/// One endpoint's latency estimate.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    /// The estimate in nanoseconds; the default RTT until a first response.
    cost_ns: f64,
    /// When the estimate was last updated (caller's clock, ns).
    stamp_ns: u64,
    /// Whether a response was seen: the first one replaces the default
    /// outright, so a fast endpoint is not held at the default RTT for τ.
    seen: bool,
}

// === impl PeakEwma ===

impl PeakEwma {
    /// An endpoint not yet heard from, costed at `default_rtt_ns` (so new
    /// endpoints get tried, as Linkerd's default RTT does).
    pub fn new(default_rtt_ns: f64, now_ns: u64) -> Self {
        Self {
            cost_ns: default_rtt_ns,
            stamp_ns: now_ns,
            seen: false,
        }
    }

    /// The estimate at `now_ns`, decayed toward zero since the last update
    /// (Linkerd does this on read, so a once-slow endpoint is tried again).
    pub fn cost(&self, now_ns: u64, tau_ns: f64) -> f64 {
        self.cost_ns * decay(now_ns.saturating_sub(self.stamp_ns), tau_ns)
    }

    /// A response after `rtt_ns` at `now_ns`: the first one, or a slower
    /// one, replaces the estimate (the peak); a faster one is blended in with
    /// weight `1 − e^(−Δt/τ)`, Δt the time since the last update.
    pub fn observe(&mut self, rtt_ns: f64, now_ns: u64, tau_ns: f64) {
        if !self.seen || rtt_ns > self.cost_ns {
            self.seen = true;
            self.cost_ns = rtt_ns;
        } else {
            let w = decay(now_ns.saturating_sub(self.stamp_ns), tau_ns);
            self.cost_ns = self.cost_ns * w + rtt_ns * (1.0 - w);
        }
        self.stamp_ns = self.stamp_ns.max(now_ns);
    }

    /// What the balancer compares: cost × (in-flight + 1), as an integer.
    pub fn load(&self, in_flight: u64, now_ns: u64, tau_ns: f64) -> u64 {
        let load = self.cost(now_ns, tau_ns) * (in_flight as f64 + 1.0);
        // Saturating float-to-int; at least 1 so that nothing is free.
        (load as u64).max(1)
    }
}

/// e^(−Δt/τ): the weight the old estimate keeps after `elapsed_ns`.
fn decay(elapsed_ns: u64, tau_ns: f64) -> f64 {
    if tau_ns <= 0.0 {
        return 0.0;
    }
    (-(elapsed_ns as f64) / tau_ns).exp()
}
