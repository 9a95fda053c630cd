//! The failure-rate circuit breaker (a meshfast extension, DestinationRule
//! annotation `meshfast.io/failure-rate-breaker`), per endpoint, as a sans-IO
//! state machine: the data path tells it how each try went ([`FailureRate::record`])
//! and asks whether an endpoint may take a request ([`FailureRate::admit`]);
//! time is passed in, so tests drive it with made-up instants.
//!
//! The rate is a continuous-time exponentially weighted average of the
//! failure indicator with time constant τ: an observation x ∈ {0, 1} at time
//! t, Δt after the previous one, gives F ← F·e^(−Δt/τ) + x·(1 − e^(−Δt/τ)).
//! Observations at the same instant (concurrent tries, paused test time)
//! share their interval: x is their failure fraction. Under a sustained
//! failure fraction p from t₀ (F = 0 there), F(t) = p·(1 − e^(−(t−t₀)/τ)).
//! A decayed request count V ← V·e^(−Δt/τ) + n (≈ requests in the last τ)
//! guards against opening on a handful of requests.
//!
//! Closed → open when F > threshold and V ≥ min_requests: no traffic for the
//! cool-down, cool_down·2^(openings−1) capped at max_cool_down. Open →
//! half-open at the first request after the cool-down: at most `probes`
//! requests are let through; one failure reopens (longer), `probes`
//! successes close. On closing the rate restarts *at the threshold* (and V at
//! min_requests): a just-recovered endpoint must keep its failure rate under
//! the threshold from the start, so one that still fails reopens at its first
//! failure instead of having to climb from 0 again. The opening count (the
//! backoff) is forgotten once the breaker stays closed for max_cool_down.

use meshfast_ir::FailureRateBreaker as Config;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
        }
    }
}

/// One endpoint's breaker.
#[derive(Debug, Clone)]
pub struct FailureRate {
    state: State,
    /// The rate and volume as of `prev` (before the batch at `at`).
    base: f64,
    volume_base: f64,
    prev: Instant,
    /// The instant of the latest observations and their counts.
    at: Instant,
    fails: u32,
    total: u32,
    openings: u32,
    open_until: Instant,
    closed_at: Instant,
    probes_admitted: u32,
    probes_ok: u32,
    half_open_since: Instant,
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

impl FailureRate {
    /// A closed breaker with rate 0 from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Closed,
            base: 0.0,
            volume_base: 0.0,
            prev: now,
            at: now,
            fails: 0,
            total: 0,
            openings: 0,
            open_until: now,
            closed_at: now,
            probes_admitted: 0,
            probes_ok: 0,
            half_open_since: now,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Openings since the backoff was last forgotten.
    pub fn openings(&self) -> u32 {
        self.openings
    }

    /// e^(−Δt/τ) over the latest interval.
    fn decay(&self, c: &Config) -> f64 {
        let dt = self.at.saturating_duration_since(self.prev).as_secs_f64();
        let tau = ms(c.tau_ms.max(1)).as_secs_f64();
        (-dt / tau).exp()
    }

    /// The failure rate F as of the latest observation.
    pub fn rate(&self, c: &Config) -> f64 {
        if self.total == 0 {
            return self.base;
        }
        let d = self.decay(c);
        let x = f64::from(self.fails) / f64::from(self.total);
        self.base * d + x * (1.0 - d)
    }

    /// The decayed request count V as of the latest observation.
    pub fn volume(&self, c: &Config) -> f64 {
        if self.total == 0 {
            return self.volume_base;
        }
        self.volume_base * self.decay(c) + f64::from(self.total)
    }

    fn observe(&mut self, c: &Config, failed: bool, now: Instant) {
        if now > self.at {
            self.base = self.rate(c);
            self.volume_base = self.volume(c);
            self.prev = self.at;
            self.at = now;
            self.fails = 0;
            self.total = 0;
        }
        self.total = self.total.saturating_add(1);
        self.fails = self.fails.saturating_add(u32::from(failed));
    }

    /// How long the next opening lasts: cool_down · 2^(openings − 1), capped.
    fn cool_down(&self, c: &Config) -> Duration {
        let base = c.cool_down_ms.max(1);
        let factor = 1u64 << self.openings.saturating_sub(1).min(32);
        ms(base
            .saturating_mul(factor)
            .min(c.max_cool_down_ms.max(base)))
    }

    fn open(&mut self, c: &Config, now: Instant) {
        self.openings = self.openings.saturating_add(1);
        self.state = State::Open;
        self.open_until = now + self.cool_down(c);
    }

    fn close(&mut self, c: &Config, now: Instant) {
        self.state = State::Closed;
        self.closed_at = now;
        self.base = c.threshold;
        self.volume_base = f64::from(c.min_requests);
        self.prev = now;
        self.at = now;
        self.fails = 0;
        self.total = 0;
    }

    /// How a try that this breaker admitted went. Outcomes arriving while
    /// open are of tries admitted before it opened: ignored.
    pub fn record(&mut self, c: &Config, failed: bool, now: Instant) {
        match self.state {
            State::Open => {}
            State::HalfOpen if failed => self.open(c, now),
            State::HalfOpen => {
                self.probes_ok += 1;
                if self.probes_ok >= c.probes.max(1) {
                    self.close(c, now);
                }
            }
            State::Closed => {
                if self.openings > 0
                    && now.saturating_duration_since(self.closed_at) >= ms(c.max_cool_down_ms)
                {
                    self.openings = 0;
                }
                self.observe(c, failed, now);
                if self.rate(c) > c.threshold && self.volume(c) >= f64::from(c.min_requests) {
                    self.open(c, now);
                }
            }
        }
    }

    /// Whether a request may go to this endpoint now, without taking a
    /// probe: for choosing among endpoints.
    pub fn available(&self, c: &Config, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open => now >= self.open_until,
            State::HalfOpen => self.probes_admitted < c.probes.max(1) || self.probes_stale(c, now),
        }
    }

    /// Probes whose outcome never came (a cancelled request) would keep the
    /// breaker half-open forever: after a cool-down without a verdict, a
    /// new round of probes may go.
    fn probes_stale(&self, c: &Config, now: Instant) -> bool {
        now.saturating_duration_since(self.half_open_since) >= ms(c.cool_down_ms.max(1))
    }

    /// Takes the endpoint for a request: always when closed; when open, not
    /// before the cool-down ends, then as one of at most `probes` probes.
    pub fn admit(&mut self, c: &Config, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open if now < self.open_until => false,
            State::Open => {
                self.state = State::HalfOpen;
                self.half_open_since = now;
                self.probes_admitted = 1;
                self.probes_ok = 0;
                true
            }
            State::HalfOpen => {
                if self.probes_stale(c, now) {
                    self.half_open_since = now;
                    self.probes_admitted = 0;
                    self.probes_ok = 0;
                }
                if self.probes_admitted < c.probes.max(1) {
                    self.probes_admitted += 1;
                    true
                } else {
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
