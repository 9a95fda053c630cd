//! The workload's policies with their counters: what a listener holds.

use super::{AuthzError, Facts, Policies};
use crate::stats::{PolicyCounters, Registry};
use meshfast_ir as ir;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The counter name of denials no policy of its own gave: the workload
/// has ALLOW policies and none of them matched.
pub const UNMATCHED: &str = "(no ALLOW policy matched)";

#[derive(Debug)]
pub struct Enforcer {
    policies: Policies,
    /// By policy index.
    stats: Vec<Arc<PolicyCounters>>,
    unmatched: Arc<PolicyCounters>,
}

impl Enforcer {
    /// None when there are no policies (the listener then pays nothing).
    pub fn build(
        policies: &[ir::AuthzPolicy],
        registry: &Registry,
    ) -> Result<Option<Arc<Self>>, AuthzError> {
        let Some(built) = Policies::build(policies)? else {
            return Ok(None);
        };
        let stats = built
            .policies
            .iter()
            .map(|p| registry.policy(&p.name))
            .collect();
        Ok(Some(Arc::new(Self {
            policies: built,
            stats,
            unmatched: registry.policy(UNMATCHED),
        })))
    }

    /// Whether the request (or connection) may go on; counted either way.
    pub fn allows(&self, facts: &Facts<'_>) -> bool {
        let verdict = self.policies.verdict(facts);
        let counters = verdict.by.map_or(&self.unmatched, |i| &self.stats[i]);
        if verdict.allowed {
            if verdict.by.is_some() {
                counters.allowed.fetch_add(1, Relaxed);
            }
        } else {
            counters.denied.fetch_add(1, Relaxed);
        }
        for i in self.policies.shadow_matches(facts) {
            self.stats[i].shadow_matched.fetch_add(1, Relaxed);
        }
        verdict.allowed
    }
}
