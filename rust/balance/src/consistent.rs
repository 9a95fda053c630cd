//! Consistent hashing (Istio's `consistentHash`): the same key always reaches
//! the same endpoint, and removing one of N endpoints moves only about 1/N of
//! the keys. Two tables, as in Envoy: a ring (the default) and Maglev.
//!
//! Endpoint positions come from xxHash64 of the endpoint's address, so every
//! worker and every restart of the proxy builds the same table.

use xxhash_rust::xxh64::xxh64;

/// Bounds the memory a config can make us spend on one table.
const MAX_TABLE: u64 = 1 << 23;
/// Ring points per unit of endpoint weight (more: smoother spread, more memory).
const POINTS_PER_WEIGHT: u64 = 256;

/// The hash of a request's key (header value, cookie, source IP, ...).
pub fn key_hash(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

#[derive(Debug)]
pub enum HashTable {
    /// Sorted (position, endpoint) points; a key goes to the first point at or after it.
    Ring(Vec<(u64, u32)>),
    /// Slot → endpoint; a key goes to slot `hash % len`.
    Maglev(Vec<u32>),
}

impl HashTable {
    /// A ring where each endpoint owns points in proportion to its weight.
    ///
    /// Points per unit of weight depend only on `min_size` (a quarter of it,
    /// at least [`POINTS_PER_WEIGHT`]), never on how many endpoints there are,
    /// so removing an endpoint removes only its own points and moves only its
    /// own keys. (Envoy scales points to fill the ring for the current
    /// endpoints, which moves some other keys too.) From four endpoints of
    /// weight 1 on, the ring has at least `min_size` points.
    pub fn ring(addresses: &[&str], weights: &[u32], min_size: u64) -> Self {
        let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
        let per_weight = POINTS_PER_WEIGHT
            .max(min_size / 4)
            .min(MAX_TABLE / total.max(1))
            .max(1);
        let mut points = Vec::with_capacity((per_weight * total) as usize);
        for (i, (addr, &w)) in addresses.iter().zip(weights).enumerate() {
            let n = per_weight * u64::from(w.max(1));
            for replica in 0..n {
                let point = xxh64(format!("{addr}_{replica}").as_bytes(), 0);
                points.push((point, i as u32));
            }
        }
        points.sort_unstable();
        Self::Ring(points)
    }

    /// A Maglev table of `size` slots (a prime), filled in turns weighted by `weights`.
    pub fn maglev(addresses: &[&str], weights: &[u32], size: u64) -> Self {
        let m = size.clamp(addresses.len().max(1) as u64, MAX_TABLE) as usize;
        let n = addresses.len();
        if n == 0 {
            return Self::Maglev(Vec::new());
        }
        let offsets: Vec<usize> = addresses
            .iter()
            .map(|a| (xxh64(a.as_bytes(), 0) % m as u64) as usize)
            .collect();
        let skips: Vec<usize> = addresses
            .iter()
            .map(|a| (xxh64(a.as_bytes(), 1) % (m as u64 - 1).max(1)) as usize + 1)
            .collect();
        let max_weight = weights.iter().copied().max().unwrap_or(1).max(1);
        let mut next = vec![0usize; n];
        let mut credit = vec![0u64; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        // Weighted Maglev (as Envoy): each turn an endpoint earns credit by its
        // weight and takes a slot for every max_weight of credit.
        while filled < m {
            for i in 0..n {
                credit[i] += u64::from(weights[i].max(1));
                while credit[i] >= u64::from(max_weight) && filled < m {
                    credit[i] -= u64::from(max_weight);
                    loop {
                        let slot = (offsets[i] + next[i] * skips[i]) % m;
                        next[i] += 1;
                        if table[slot] == u32::MAX {
                            table[slot] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        Self::Maglev(table)
    }

    pub fn pick(&self, hash: u64) -> Option<usize> {
        match self {
            Self::Ring(points) => {
                if points.is_empty() {
                    return None;
                }
                let i = points.partition_point(|&(p, _)| p < hash);
                let (_, endpoint) = points[if i == points.len() { 0 } else { i }];
                Some(endpoint as usize)
            }
            Self::Maglev(table) => {
                if table.is_empty() {
                    return None;
                }
                Some(table[(hash % table.len() as u64) as usize] as usize)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn build(kind: &str, addrs: &[String]) -> HashTable {
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let weights = vec![1; refs.len()];
        match kind {
            "ring" => HashTable::ring(&refs, &weights, 1024),
            _ => HashTable::maglev(&refs, &weights, 65537),
        }
    }

    #[test]
    fn same_key_same_endpoint_and_minimal_disruption() {
        for kind in ["ring", "maglev"] {
            let n = 10;
            let all = addresses(n);
            let before = build(kind, &all);
            // Drop endpoint 3: keys on the other nine must stay where they were.
            let fewer: Vec<String> = all
                .iter()
                .filter(|a| !a.ends_with(".3:8080"))
                .cloned()
                .collect();
            let after = build(kind, &fewer);
            let keys = 20_000;
            let mut moved = 0;
            for k in 0..keys {
                let h = key_hash(format!("user-{k}").as_bytes());
                let a = &all[before.pick(h).expect("pick")];
                assert_eq!(before.pick(h), before.pick(h));
                let b = &fewer[after.pick(h).expect("pick")];
                if a != b {
                    moved += 1;
                }
            }
            let share = f64::from(moved) / f64::from(keys);
            // About 1/N of the keys move (those of the removed endpoint), ±5 points.
            assert!((share - 1.0 / n as f64).abs() <= 0.05, "{kind}: {share}");
        }
    }

    #[test]
    fn spread_is_roughly_even_and_weighted() {
        for kind in ["ring", "maglev"] {
            let all = addresses(4);
            let t = build(kind, &all);
            let mut counts = [0u32; 4];
            for k in 0..40_000 {
                counts[t.pick(key_hash(format!("k{k}").as_bytes())).expect("pick")] += 1;
            }
            assert!(
                counts.iter().all(|&c| (6_000..14_000).contains(&c)),
                "{kind}: {counts:?}"
            );
        }
        let all = addresses(2);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let t = HashTable::maglev(&refs, &[3, 1], 65537);
        let mut counts = [0u32; 2];
        for k in 0..40_000 {
            counts[t.pick(key_hash(format!("k{k}").as_bytes())).expect("pick")] += 1;
        }
        assert!((25_000..35_000).contains(&counts[0]), "{counts:?}");
    }
}
