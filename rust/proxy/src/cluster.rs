//! A cluster as the data path sees it: endpoints, how to pick one (balancer,
//! consistent hash, locality priorities), and each endpoint's passive health
//! (outlier ejection) and warmup.
//!
//! Per-endpoint state lives in [`EndpointStates`], keyed by (cluster,
//! address), so in-flight counts, failure streaks and ejections survive
//! config swaps, as Pingora keeps its health table by backend; an endpoint
//! the config no longer names is forgotten at the next swap, so state stays
//! the size of the live endpoint set however endpoints churn.
//!
//! Time is tokio's: outlier and warmup tests run on paused time.

use crate::breaker::{Breaker, Limits};
use crate::failure_rate::FailureRate;
use crate::hashing::HashRt;
use crate::stats::{self, Counters, Scope};
use crate::upstream_tls::UpstreamTlsRt;
use meshfast_balance::{Load, PeakEwma, Policy, Selector};
use meshfast_ir as ir;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Envoy's `max_ejection_time` default.
const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Picks tried before scanning for any healthy, warm endpoint.
const PICK_ATTEMPTS: usize = 8;
/// PEAK_EWMA: the cost of an endpoint not yet heard from (Linkerd's default RTT).
const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
/// PEAK_EWMA: the decay's time constant τ (Linkerd's default).
const EWMA_DECAY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster {cluster:?}: endpoint address {address:?} is not host:port")]
    BadEndpoint { cluster: String, address: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The share of its weight an endpoint `age_ms` old gets: Envoy's
/// `max(min_percent, (age / duration) ^ (1 / aggression))`, 1 once warm.
fn warm_factor(age_ms: u64, w: &ir::Warmup) -> f64 {
    if age_ms >= w.duration_ms {
        return 1.0;
    }
    let time = age_ms as f64 / w.duration_ms as f64;
    let aggression = if w.aggression > 0.0 {
        w.aggression
    } else {
        1.0
    };
    time.powf(1.0 / aggression)
        .max(w.min_percent / 100.0)
        .min(1.0)
}

/// Milliseconds since the first call: a cheap monotonic clock for atomics.
/// tokio's clock, so that paused time in tests moves it.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let epoch = Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now));
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds on the same clock as [`now_ms`] (PEAK_EWMA's clock).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let epoch = Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now));
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

fn tau_ns() -> f64 {
    EWMA_DECAY.as_nanos() as f64
}

/// What the data path knows about one endpoint across snapshots.
#[derive(Debug)]
pub struct EndpointState {
    pub load: Arc<Load>,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// 0: not ejected; else ejected until this `now_ms()`.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    /// When this endpoint joined the cluster (warmup starts here).
    added_ms: u64,
    /// The failure-rate breaker (used when the cluster configures one).
    failure_rate: Mutex<FailureRate>,
    /// PEAK_EWMA's latency estimate (used when the cluster balances so).
    ewma: Mutex<PeakEwma>,
}

impl EndpointState {
    fn new() -> Self {
        Self {
            load: Arc::default(),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            added_ms: now_ms(),
            failure_rate: Mutex::new(FailureRate::new(Instant::now())),
            ewma: Mutex::new(PeakEwma::new(EWMA_DEFAULT_RTT.as_nanos() as f64, now_ns())),
        }
    }

    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }
}

#[derive(Debug, Default)]
pub struct EndpointStates(Mutex<HashMap<(String, String), Arc<EndpointState>>>);

impl EndpointStates {
    /// Keeps only the endpoints `live` names (those of the snapshot just
    /// built). Requests still on an older snapshot keep their own `Arc`s.
    pub fn retain(&self, live: &HashSet<(&str, &str)>) {
        self.0
            .lock()
            .retain(|(c, a), _| live.contains(&(c.as_str(), a.as_str())));
    }

    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    fn get(&self, cluster: &str, address: &str) -> Arc<EndpointState> {
        self.0
            .lock()
            .entry((cluster.to_owned(), address.to_owned()))
            .or_insert_with(|| Arc::new(EndpointState::new()))
            .clone()
    }
}

#[derive(Debug)]
pub struct EndpointRt {
    pub address: String,
    pub authority: http::uri::Authority,
    pub weight: u32,
    pub priority: u32,
    pub load: Arc<Load>,
    pub state: Arc<EndpointState>,
}

/// Endpoints of one priority, with their own balancer.
#[derive(Debug)]
struct Level {
    members: Vec<usize>,
    selector: Selector,
}

/// How a try went, for outlier detection.
#[derive(Debug, Clone, Copy)]
pub enum Health {
    Success,
    /// A 5xx response.
    ServerError(u16),
    /// Connect failure, reset or timeout: counts for both 5xx and gateway streaks.
    LocalFailure,
}

#[derive(Debug)]
pub struct ClusterRt {
    pub name: String,
    pub protocol: ir::UpstreamProtocol,
    pub connect_timeout: Duration,
    pub endpoints: Vec<EndpointRt>,
    /// Priority levels, lowest (preferred) first; one level in the common case.
    levels: Vec<Level>,
    /// Consistent hashing, when the cluster asks for it (replaces the balancer).
    pub hash: Option<HashRt>,
    outlier: Option<ir::OutlierDetection>,
    warmup: Option<ir::Warmup>,
    /// Endpoints come from each request's original destination instead.
    pub original_dst: bool,
    /// TLS origination (DestinationRule `tls`).
    pub tls: Option<UpstreamTlsRt>,
    /// The failure-rate breaker's settings (its state is per endpoint).
    failure_rate: Option<ir::FailureRateBreaker>,
    /// PEAK_EWMA: tries are timed and the balancer weighs latency.
    pub peak_ewma: bool,
    /// Connection-pool limits; their gauges live in `stats` (across swaps).
    pub limits: Limits,
    pub stats: Arc<Counters>,
    /// Istio's metrics of requests and connections sent here.
    pub istio: Arc<crate::istio_metrics::IstioSet>,
}

// === impl ClusterRt ===

impl ClusterRt {
    pub fn build(
        c: &ir::Cluster,
        registry: &stats::Registry,
        states: &EndpointStates,
    ) -> Result<Self, ClusterError> {
        let mut endpoints = Vec::with_capacity(c.endpoints.len());
        for e in &c.endpoints {
            let bad = || ClusterError::BadEndpoint {
                cluster: c.name.clone(),
                address: e.address.clone(),
            };
            let authority: http::uri::Authority = e.address.parse().map_err(|_| bad())?;
            if authority.port_u16().is_none() {
                return Err(bad());
            }
            let state = states.get(&c.name, &e.address);
            endpoints.push(EndpointRt {
                address: e.address.clone(),
                authority,
                weight: e.weight,
                priority: e.priority,
                load: state.load.clone(),
                state,
            });
        }
        let policy = match c.lb {
            ir::LbPolicy::RoundRobin => Policy::RoundRobin,
            ir::LbPolicy::LeastRequest => Policy::LeastRequest,
            ir::LbPolicy::Random => Policy::Random,
            ir::LbPolicy::PeakEwma => Policy::PeakEwma,
        };
        let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let levels = priorities
            .into_iter()
            .map(|p| {
                let members: Vec<usize> = (0..endpoints.len())
                    .filter(|&i| endpoints[i].priority == p)
                    .collect();
                let weights: Vec<u32> = members.iter().map(|&i| endpoints[i].weight).collect();
                Level {
                    selector: Selector::new(policy, &weights),
                    members,
                }
            })
            .collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let addresses: Vec<&str> = endpoints.iter().map(|e| e.address.as_str()).collect();
        let hash = c
            .hash
            .as_ref()
            .map(|h| HashRt::build(h, &addresses, &weights));
        Ok(Self {
            hash,
            name: c.name.clone(),
            protocol: c.protocol,
            connect_timeout: Duration::from_millis(if c.connect_timeout_ms == 0 {
                10_000
            } else {
                c.connect_timeout_ms
            }),
            levels,
            outlier: c.outlier.clone(),
            warmup: c.warmup.clone().filter(|w| w.duration_ms > 0),
            original_dst: c.original_dst,
            tls: c
                .tls
                .as_ref()
                .map(|t| {
                    UpstreamTlsRt::build(&c.name, t, c.protocol == ir::UpstreamProtocol::Http2)
                })
                .transpose()?,
            endpoints,
            limits: Limits::from_ir(c.limits.as_ref()),
            failure_rate: c.failure_rate.clone(),
            peak_ewma: policy == Policy::PeakEwma,
            stats: registry.get(Scope::Cluster, &c.name),
            istio: registry.istio.for_cluster(&c.name),
        })
    }

    /// The cluster's connection-pool limits with their shared gauges.
    pub fn breaker(&self) -> Breaker<'_> {
        Breaker {
            limits: &self.limits,
            stats: &self.stats,
        }
    }

    pub fn pick(&self) -> Option<&EndpointRt> {
        self.endpoints.get(self.pick_index()?)
    }

    /// An endpoint by the balancer: from the lowest priority with a healthy
    /// endpoint, skipping ejected ones and (probabilistically) warming ones.
    pub fn pick_index(&self) -> Option<usize> {
        self.pick_index_from(0)
    }

    /// Like [`ClusterRt::pick_index`], from priority `min` on: a retry with
    /// `retryRemoteLocalities` moves past the priority that just failed.
    /// With nothing from `min` on, the preferred priorities are used again.
    pub fn pick_index_from(&self, min: u32) -> Option<usize> {
        if min > 0 {
            let first = self.levels.iter().position(|l| {
                l.members
                    .first()
                    .is_some_and(|&i| self.endpoints[i].priority >= min)
            });
            if let Some(first) = first {
                if let Some(i) = self.pick_in(&self.levels[first..]) {
                    return Some(i);
                }
            }
        }
        self.pick_in(&self.levels)
    }

    fn pick_in(&self, levels: &[Level]) -> Option<usize> {
        // The common case: one level, no health or warmup to consider.
        if levels.len() == 1
            && self.outlier.is_none()
            && self.warmup.is_none()
            && self.failure_rate.is_none()
        {
            let level = &levels[0];
            let j = self.pick_member(level)?;
            return level.members.get(j).copied();
        }
        let now = now_ms();
        let instant = Instant::now();
        let open = |i: usize| !self.breaker_available(i, instant);
        for level in levels {
            let healthy = level
                .members
                .iter()
                .filter(|&&i| !self.endpoints[i].state.ejected(now) && !open(i))
                .count();
            let panic = self.outlier.as_ref().is_some_and(|o| {
                o.min_health_percent > 0
                    && healthy * 100 < level.members.len() * o.min_health_percent as usize
            });
            if healthy == 0 && !panic {
                continue;
            }
            let usable = |i: usize| panic || (!self.endpoints[i].state.ejected(now) && !open(i));
            for _ in 0..PICK_ATTEMPTS {
                let j = self.pick_member(level)?;
                let i = level.members[j];
                if usable(i) && self.warm_enough(i, now) {
                    return Some(i);
                }
            }
            return level.members.iter().copied().find(|&i| usable(i));
        }
        None
    }

    /// One pick of `level`'s balancer: an index into its members. Only a
    /// PEAK_EWMA cluster reads the clock and the latency estimates.
    fn pick_member(&self, level: &Level) -> Option<usize> {
        if !self.peak_ewma {
            return level
                .selector
                .pick(|j| self.endpoints[level.members[j]].load.get());
        }
        let (now, tau) = (now_ns(), tau_ns());
        level.selector.pick(|j| {
            let e = &self.endpoints[level.members[j]];
            e.state.ewma.lock().load(e.load.get(), now, tau)
        })
    }

    /// PEAK_EWMA hears how long endpoint `i` took to answer (send to
    /// response headers). Nothing for other clusters.
    pub fn observe_rtt(&self, i: usize, rtt: Duration) {
        if !self.peak_ewma {
            return;
        }
        if let Some(e) = self.endpoints.get(i) {
            let rtt = rtt.as_nanos() as f64;
            e.state.ewma.lock().observe(rtt, now_ns(), tau_ns());
        }
    }

    /// PEAK_EWMA's current latency estimate of endpoint `i`, in ms.
    pub fn ewma_ms(&self, i: usize) -> Option<f64> {
        if !self.peak_ewma {
            return None;
        }
        let e = self.endpoints.get(i)?;
        Some(e.state.ewma.lock().cost(now_ns(), tau_ns()) / 1e6)
    }

    /// The hashed endpoint, unless it is ejected or its failure-rate breaker
    /// is open (then the balancer decides).
    pub fn pick_hashed(&self, hash: u64) -> Option<usize> {
        let i = self.hash.as_ref()?.table.pick(hash)?;
        if self.endpoints[i].state.ejected(now_ms()) || !self.breaker_available(i, Instant::now()) {
            return self.pick_index();
        }
        Some(i)
    }

    /// Slow start: a new endpoint is accepted with a probability that grows
    /// from `min_percent` to 1 over the warmup (Envoy's slow_start_config).
    fn warm_enough(&self, i: usize, now: u64) -> bool {
        let Some(w) = &self.warmup else {
            return true;
        };
        let factor = warm_factor(now.saturating_sub(self.endpoints[i].state.added_ms), w);
        factor >= 1.0 || fastrand::f64() < factor
    }

    /// Whether endpoint `i`'s failure-rate breaker would let a request
    /// through now (always, without a breaker). Takes no probe.
    fn breaker_available(&self, i: usize, now: Instant) -> bool {
        let Some(c) = &self.failure_rate else {
            return true;
        };
        self.endpoints[i]
            .state
            .failure_rate
            .lock()
            .available(c, now)
    }

    /// Takes endpoint `i` for a request as its failure-rate breaker allows:
    /// false when it is open, or half-open with all its probes out.
    #[inline] // Every request asks; without a failure-rate breaker, one branch.
    pub fn admit(&self, i: usize) -> bool {
        let Some(c) = &self.failure_rate else {
            return true;
        };
        let Some(e) = self.endpoints.get(i) else {
            return false;
        };
        e.state.failure_rate.lock().admit(c, Instant::now())
    }

    /// Outlier detection and the failure-rate breaker hear how a try went.
    pub fn record(&self, i: usize, health: Health) {
        if let (Some(c), Some(e)) = (&self.failure_rate, self.endpoints.get(i)) {
            let failed = !matches!(health, Health::Success);
            e.state
                .failure_rate
                .lock()
                .record(c, failed, Instant::now());
        }
        self.record_outlier(i, health);
    }

    /// Outlier detection: count a try's result against its endpoint and eject
    /// it when a failure streak reaches a threshold.
    fn record_outlier(&self, i: usize, health: Health) {
        let Some(o) = &self.outlier else {
            return;
        };
        let Some(e) = self.endpoints.get(i) else {
            return;
        };
        let s = &e.state;
        let (five, gateway) = match health {
            Health::Success => {
                s.consecutive_5xx.store(0, Relaxed);
                s.consecutive_gateway.store(0, Relaxed);
                return;
            }
            Health::ServerError(status) => (true, matches!(status, 502..=504)),
            Health::LocalFailure => (true, true),
        };
        let n5 = if five {
            s.consecutive_5xx.fetch_add(1, Relaxed) + 1
        } else {
            0
        };
        let ng = if gateway {
            s.consecutive_gateway.fetch_add(1, Relaxed) + 1
        } else {
            s.consecutive_gateway.store(0, Relaxed);
            0
        };
        let tripped = (o.consecutive_5xx > 0 && n5 >= o.consecutive_5xx)
            || (o.consecutive_gateway > 0 && ng >= o.consecutive_gateway);
        if tripped {
            self.eject(i, o);
        }
    }

    fn eject(&self, i: usize, o: &ir::OutlierDetection) {
        let now = now_ms();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.state.ejected(now))
            .count();
        // maxEjectionPercent, but at least one endpoint may always be ejected.
        let allowed = (self.endpoints.len() * o.max_ejection_percent as usize / 100).max(1);
        let s = &self.endpoints[i].state;
        if s.ejected(now) || ejected >= allowed {
            return;
        }
        let times = s.times_ejected.fetch_add(1, Relaxed) + 1;
        let base = o.base_ejection_ms.max(1);
        let length = (base * u64::from(times))
            .min(MAX_EJECTION.as_millis() as u64)
            .max(base);
        s.ejected_until.store(now + length, Relaxed);
        s.consecutive_5xx.store(0, Relaxed);
        s.consecutive_gateway.store(0, Relaxed);
        self.stats.ejections.fetch_add(1, Relaxed);
    }

    /// `/clusters`' view of endpoint `i`'s failure-rate breaker; None without one.
    pub fn breaker_json(&self, i: usize) -> Option<serde_json::Value> {
        let c = self.failure_rate.as_ref()?;
        let b = self.endpoints.get(i)?.state.failure_rate.lock();
        Some(serde_json::json!({
            "state": b.state().name(),
            "failure_rate": b.rate(c),
            "openings": b.openings(),
        }))
    }

    pub fn health_json(&self, i: usize) -> &'static str {
        if self.endpoints[i].state.ejected(now_ms()) {
            "EJECTED"
        } else {
            "HEALTHY"
        }
    }
}

#[cfg(test)]
mod tests;
