//! Choosing one of N weighted choices, per request, without locks.
//!
//! Every selector is built once per snapshot (off the request path) and then
//! only read; the little mutable state there is (a round-robin cursor, the
//! callers' in-flight counts) is atomic.

mod consistent;
mod ewma;
mod weighted;

pub use consistent::{key_hash, HashTable};
pub use ewma::PeakEwma;
pub use weighted::Wrr;

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    /// Power of two choices over in-flight requests (Envoy's and Istio's default).
    LeastRequest,
    Random,
    /// Power of two choices over peak-EWMA latency × (in-flight + 1), as
    /// Linkerd balances: the caller's `load(i)` reports that product
    /// ([`PeakEwma::load`]); the choice itself is `LeastRequest`'s.
    PeakEwma,
}

/// Picks an endpoint index. `load(i)` reports endpoint i's load: in-flight
/// requests for `LeastRequest`, the peak-EWMA load for `PeakEwma` (only
/// those two ask).
#[derive(Debug)]
pub struct Selector {
    policy: Policy,
    weights: Vec<u32>,
    uniform: bool,
    wrr: Wrr,
}

// === impl Selector ===

impl Selector {
    pub fn new(policy: Policy, weights: &[u32]) -> Self {
        // A weight of 0 would starve an endpoint forever; Envoy treats it as 1.
        let weights: Vec<u32> = weights.iter().map(|&w| w.max(1)).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        Self {
            policy,
            wrr: Wrr::new(&weights),
            uniform,
            weights,
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    pub fn pick(&self, load: impl Fn(usize) -> u64) -> Option<usize> {
        match self.weights.len() {
            0 => None,
            1 => Some(0),
            n => Some(match self.policy {
                Policy::RoundRobin => self.wrr.next(),
                Policy::Random => self.random(n),
                Policy::LeastRequest | Policy::PeakEwma => {
                    let a = self.random(n);
                    let mut b = self.random(n);
                    if a == b {
                        // Two distinct candidates, still weight-proportional enough.
                        b = (a + 1 + fastrand::usize(..n - 1)) % n;
                    }
                    if self.cost(a, &load) <= self.cost(b, &load) {
                        a
                    } else {
                        b
                    }
                }
            }),
        }
    }

    /// In-flight requests per unit of weight, compared without division.
    fn cost(&self, i: usize, load: &impl Fn(usize) -> u64) -> u128 {
        if self.uniform {
            return u128::from(load(i));
        }
        // (load + 1) / weight, scaled by the product of all other weights is
        // overkill; scale by a common constant instead.
        (u128::from(load(i)) + 1) * 1_000_000 / u128::from(self.weights[i])
    }

    fn random(&self, n: usize) -> usize {
        if self.uniform {
            fastrand::usize(..n)
        } else {
            self.wrr.random()
        }
    }
}

/// An in-flight counter per endpoint, shared by every snapshot that has the
/// endpoint so that least-request state survives config swaps.
#[derive(Debug, Default)]
pub struct Load(AtomicU64);

// === impl Load ===

impl Load {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn start(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
