//! Weighted choice: a precomputed smooth weighted round-robin sequence (nginx's
//! algorithm) walked by an atomic cursor, and a cumulative table for random picks.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Sequences longer than this fall back to random weighted picks.
const MAX_SEQUENCE: u64 = 1 << 16;

#[derive(Debug)]
pub struct Wrr {
    /// Exact, smooth interleaving: over any `sequence.len()` consecutive picks
    /// each choice appears exactly in proportion to its weight.
    sequence: Vec<u32>,
    cursor: AtomicUsize,
    cumulative: Vec<u64>,
}

// === impl Wrr ===

impl Wrr {
    /// Zero weights are never picked (unless all are zero, then uniform).
    pub fn new(weights: &[u32]) -> Self {
        let all_zero = weights.iter().all(|&w| w == 0);
        let weights: Vec<u64> = weights
            .iter()
            .map(|&w| if all_zero { 1 } else { u64::from(w) })
            .collect();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut total = 0;
        for w in &weights {
            total += w;
            cumulative.push(total);
        }
        let divisor = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
        let length = total.checked_div(divisor).unwrap_or(0);
        let sequence = if length > 0 && length <= MAX_SEQUENCE {
            smooth_sequence(&weights.iter().map(|w| w / divisor).collect::<Vec<_>>())
        } else {
            Vec::new()
        };
        Self {
            sequence,
            cursor: AtomicUsize::new(0),
            cumulative,
        }
    }

    pub fn next(&self) -> usize {
        if self.sequence.is_empty() {
            return self.random();
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.sequence[n % self.sequence.len()] as usize
    }

    pub fn random(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let x = fastrand::u64(..total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out
}
