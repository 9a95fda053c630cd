//! Retries as a sans-IO state machine: the forward phase reports how each try
//! went and is told whether to try again (after a backoff) or stop; the policy
//! (Envoy's `retry_on` conditions, attempts, backoff) is built once per snapshot.

use meshfast_ir as ir;
use std::time::Duration;

/// What a failed try looked like, for deciding whether to retry it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Never reached the upstream.
    ConnectFailure,
    /// The connection ended before a response.
    Reset,
    /// The per-try timeout fired.
    Timeout,
    /// A response, with its status and (for trailers-only gRPC) grpc-status.
    Response(u16, Option<u32>),
}

#[derive(Debug)]
pub struct RetryRt {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub previous_hosts: bool,
    pub remote_localities: bool,
    on_5xx: bool,
    on_gateway: bool,
    on_reset: bool,
    on_connect: bool,
    on_refused: bool,
    on_4xx: bool,
    codes: Vec<u16>,
    grpc: Vec<u32>,
}

impl RetryRt {
    pub fn build(r: &ir::RetryPolicy) -> Self {
        let has = |c: &str| r.retry_on.iter().any(|x| x.trim() == c);
        let grpc = [
            ("cancelled", 1),
            ("deadline-exceeded", 4),
            ("resource-exhausted", 8),
            ("internal", 13),
            ("unavailable", 14),
        ]
        .iter()
        .filter(|(name, _)| has(name))
        .map(|(_, code)| *code)
        .collect();
        Self {
            attempts: r.attempts,
            per_try_timeout: (r.per_try_timeout_ms > 0)
                .then(|| Duration::from_millis(r.per_try_timeout_ms)),
            backoff_base: Duration::from_millis(r.backoff_base_ms.max(1)),
            previous_hosts: r.previous_hosts,
            remote_localities: r.remote_localities,
            on_5xx: has("5xx"),
            on_gateway: has("gateway-error"),
            on_reset: has("reset") || has("5xx") || has("gateway-error"),
            on_connect: has("connect-failure") || has("5xx") || has("gateway-error"),
            on_refused: has("refused-stream"),
            on_4xx: has("retriable-4xx"),
            codes: if has("retriable-status-codes") {
                r.retriable_status_codes.clone()
            } else {
                Vec::new()
            },
            grpc,
        }
    }

    /// Whether a try that reached the upstream may be retried (so the request
    /// must be kept to build again); connect failures give the request back.
    pub fn retries_after_sending(&self, grpc: bool) -> bool {
        self.on_5xx
            || self.on_gateway
            || self.on_reset
            || self.on_4xx
            || !self.codes.is_empty()
            || (grpc && !self.grpc.is_empty())
    }

    pub fn should_retry(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::ConnectFailure => self.on_connect || self.on_refused,
            Outcome::Reset => self.on_reset,
            Outcome::Timeout => self.on_5xx || self.on_gateway,
            Outcome::Response(status, grpc) => {
                (self.on_5xx && status >= 500)
                    || (self.on_gateway && matches!(status, 502..=504))
                    || (self.on_4xx && status == 409)
                    || self.codes.contains(&status)
                    || grpc.is_some_and(|g| self.grpc.contains(&g))
            }
        }
    }

    /// Envoy's fully jittered exponential backoff: up to base × 2^n, capped at 10 × base.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self.backoff_base * 10;
        let ceiling = (self.backoff_base * 2u32.saturating_pow(retry)).min(cap);
        let ms = u64::try_from(ceiling.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(fastrand::u64(..=ms))
    }
}

/// What to do after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Try again after this backoff.
    Retry(Duration),
    /// Pass the last try's result on; `exhausted` when it was retried and
    /// would have been retried again (Envoy's `URX`).
    Stop { exhausted: bool },
}

/// The retry state of one request.
#[derive(Debug)]
pub struct Retries<'a> {
    policy: Option<&'a RetryRt>,
    done: u32,
}

impl<'a> Retries<'a> {
    pub fn new(policy: Option<&'a RetryRt>) -> Self {
        Self { policy, done: 0 }
    }

    /// The next step after a try that ended with `outcome`; `replayable`: the
    /// request can still be built again (a streamed body may not be).
    pub fn after(&mut self, outcome: Outcome, replayable: bool) -> Step {
        let Some(policy) = self.policy else {
            return Step::Stop { exhausted: false };
        };
        let retriable = policy.should_retry(outcome);
        if retriable && self.done < policy.attempts && replayable {
            let backoff = policy.backoff(self.done);
            self.done += 1;
            return Step::Retry(backoff);
        }
        Step::Stop {
            exhausted: retriable && self.done > 0,
        }
    }

    /// Envoy's `previous_hosts` predicate: a retry avoids the endpoint that
    /// just failed. Consistent hashing keeps retries on the key's endpoint.
    pub fn avoid_previous(&self, hashed: bool) -> bool {
        !hashed && self.policy.is_some_and(|r| r.previous_hosts)
    }

    /// `retryRemoteLocalities`: a retry moves past the failed priority.
    pub fn next_priority(&self) -> bool {
        self.done > 0 && self.policy.is_some_and(|r| r.remote_localities)
    }
}

#[cfg(test)]
mod tests;
