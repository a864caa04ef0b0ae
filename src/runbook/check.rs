//! Named checks: pre-checks that gate an action and post-checks that verify it.
//!
//! The vocabulary is closed (an unknown name is a load error) so every check a runbook names is one
//! the executors implement. Checks may be written as a bare name (the kubectl-style form) or as a
//! map with parameters (`{name: pod_becomes_ready, timeout_seconds: 60}`).

use super::template::Template;
use std::time::Duration;

/// A check the executors know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckName {
    /// The target's deployment runs more than one replica (never restart the only pod).
    ReplicasGreaterThanOne,
    /// The target pod restarted fewer than `max_restarts` (3) times: not already flapping.
    RecentRestartsLessThanThree,
    /// The replacement pod becomes Ready within the timeout.
    PodBecomesReady,
    /// The deployment runs fewer than `max_replicas` replicas.
    CurrentReplicasBelowMax,
    /// A metric moved the right way (Prometheus query below/above a threshold).
    MetricsImproved,
    /// The deployment exists.
    DeploymentExists,
    /// The deployment has a previous ReplicaSet revision to roll back to.
    PreviousRevisionAvailable,
    /// The error rate is back under its threshold (Prometheus query).
    ErrorRateNormalized,
    /// The deployment's rollout completed (all replicas updated and available).
    DeploymentRolledOut,
    /// The current time is inside the off-peak window (UTC hours).
    OffPeakHours,
    /// A Prometheus query is below or above a threshold.
    PrometheusQuery,
}

/// Every check name, as written in runbooks.
pub const CHECK_NAMES: &[(&str, CheckName)] = &[
    ("replicas_greater_than_one", CheckName::ReplicasGreaterThanOne),
    (
        "recent_restarts_less_than_three",
        CheckName::RecentRestartsLessThanThree,
    ),
    ("pod_becomes_ready", CheckName::PodBecomesReady),
    ("current_replicas_below_max", CheckName::CurrentReplicasBelowMax),
    ("metrics_improved", CheckName::MetricsImproved),
    ("deployment_exists", CheckName::DeploymentExists),
    ("previous_revision_available", CheckName::PreviousRevisionAvailable),
    ("error_rate_normalized", CheckName::ErrorRateNormalized),
    ("deployment_rolled_out", CheckName::DeploymentRolledOut),
    ("off_peak_hours", CheckName::OffPeakHours),
    ("prometheus_query", CheckName::PrometheusQuery),
];

impl CheckName {
    /// Parse a runbook's check name.
    pub fn parse(s: &str) -> Option<Self> {
        CHECK_NAMES.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
    }

    /// The name as written in runbooks and outcomes.
    pub fn as_str(self) -> &'static str {
        CHECK_NAMES
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or("unknown")
    }

    /// Parameters this check accepts besides `timeout_seconds`.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            CheckName::RecentRestartsLessThanThree => &["max_restarts"],
            CheckName::CurrentReplicasBelowMax => &["max_replicas"],
            CheckName::MetricsImproved | CheckName::ErrorRateNormalized | CheckName::PrometheusQuery => {
                &["query", "below", "above"]
            }
            CheckName::OffPeakHours => &["start_hour", "end_hour"],
            _ => &[],
        }
    }
}

/// A check with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// Which check.
    pub name: CheckName,
    /// How long a post-check may wait for its condition (default 60 s for waiting checks).
    pub timeout: Option<Duration>,
    /// Restart ceiling for `recent_restarts_less_than_three` (default 3).
    pub max_restarts: Option<u32>,
    /// Replica ceiling for `current_replicas_below_max` (default 10, docs/design.md#scaling); also
    /// the cap of the runbook's scale actions that name none.
    pub max_replicas: Option<u32>,
    /// PromQL for query-based checks; may use template variables such as `{service}`.
    pub query: Option<Template>,
    /// Pass when the query result is below this.
    pub below: Option<f64>,
    /// Pass when the query result is above this.
    pub above: Option<f64>,
    /// Off-peak window start (UTC hour, inclusive; default 22).
    pub start_hour: Option<u8>,
    /// Off-peak window end (UTC hour, exclusive; default 6).
    pub end_hour: Option<u8>,
}

impl CheckSpec {
    /// A check with no parameters.
    pub fn named(name: CheckName) -> Self {
        Self {
            name,
            timeout: None,
            max_restarts: None,
            max_replicas: None,
            query: None,
            below: None,
            above: None,
            start_hour: None,
            end_hour: None,
        }
    }

    /// The name as written.
    pub fn name(&self) -> &'static str {
        self.name.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check names are a contract (runbooks name them, outcomes report them), and each check
    /// takes exactly its own parameters.
    #[test]
    fn names_round_trip_and_each_check_takes_its_own_parameters() {
        for (name, check) in CHECK_NAMES {
            assert_eq!(CheckName::parse(name), Some(*check));
            assert_eq!(check.as_str(), *name);
            assert_eq!(CheckSpec::named(*check).name(), *name);
        }
        assert_eq!(CheckName::parse("Pod_Becomes_Ready"), None);
        assert_eq!(CheckName::parse("pod_becomes_ready "), None);
        let params = |n: &str| CheckName::parse(n).unwrap().params();
        assert_eq!(params("recent_restarts_less_than_three"), ["max_restarts"]);
        assert_eq!(params("current_replicas_below_max"), ["max_replicas"]);
        for q in ["metrics_improved", "error_rate_normalized", "prometheus_query"] {
            assert_eq!(params(q), ["query", "below", "above"], "{q}");
        }
        assert_eq!(params("off_peak_hours"), ["start_hour", "end_hour"]);
        for none in [
            "replicas_greater_than_one",
            "pod_becomes_ready",
            "deployment_exists",
            "previous_revision_available",
            "deployment_rolled_out",
        ] {
            assert!(params(none).is_empty(), "{none}");
        }
        let named = CheckSpec::named(CheckName::PodBecomesReady);
        assert_eq!(named.timeout, None);
        assert_eq!(named.max_restarts, None);
    }
}
