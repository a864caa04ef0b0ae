//! The per-replica ceiling on executions: the last line when the shared store lost state.

use crate::guardrails::Scope;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A per-replica ceiling on executions per (runbook, service) per rate window.
///
/// The shared store enforces the exact limit; this in-process copy only matters when the store
/// has lost acknowledged writes (failover, wipe). It bounds the damage to
/// replicas × `max_per_hour` per window.
///
/// It keys like the store's rate limit ([`Scope`]): per (runbook, normalised service) and per
/// (runbook, target), both must have room, so "api" and "API", or one Deployment under varied
/// services, share one ceiling.
#[derive(Debug, Default)]
pub(super) struct LocalCeiling {
    windows: Mutex<HashMap<(String, String), VecDeque<i64>>>,
}

impl LocalCeiling {
    /// Take one execution of `scope` at `now_ms` if fewer than `max` were taken in the window.
    pub(super) fn try_acquire(&self, scope: &Scope, max: u32, window_ms: i64, now_ms: i64) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // Prefixed so a service and a target spelled alike never share a window.
        let mut keys = vec![(scope.runbook.clone(), format!("service:{}", scope.service))];
        if !scope.target.is_empty() {
            keys.push((scope.runbook.clone(), format!("target:{}", scope.target)));
        }
        for key in &keys {
            let q = w.entry(key.clone()).or_default();
            while q.front().is_some_and(|t| *t <= now_ms - window_ms) {
                q.pop_front();
            }
            if q.len() >= max as usize {
                return false;
            }
        }
        for key in keys {
            w.entry(key).or_default().push_back(now_ms);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(service: &str, target: &str) -> Scope {
        Scope {
            runbook: "rb".into(),
            service: Scope::normalise_service(service),
            target: target.into(),
        }
    }

    /// After a store loss the per-replica ceiling is the only rate limit: "API" and "api" are
    /// one service, and one Deployment under varied services is one target.
    #[test]
    fn local_ceiling_keys_on_the_normalised_service_and_the_target() {
        let c = LocalCeiling::default();
        assert!(c.try_acquire(&scope("api", "prod/deployment/api"), 1, 1_000, 0));
        assert!(
            !c.try_acquire(&scope(" API", "prod/deployment/other"), 1, 1_000, 1),
            "same service"
        );
        assert!(
            !c.try_acquire(&scope("web", "prod/deployment/api"), 1, 1_000, 2),
            "same target"
        );
        assert!(c.try_acquire(&scope("web", "prod/deployment/web"), 1, 1_000, 3));
        assert!(
            c.try_acquire(&scope("API", "prod/deployment/api"), 1, 1_000, 1_000),
            "window passed"
        );
    }
}
