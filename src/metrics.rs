//! Every metric the worker exports, defined once (names and meanings in
//! docs/observability.md#metrics).
//!
//! A [`Metrics`] owns its own registry so tests, `demo` and `replay` never collide with each
//! other or with a process-global registry.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// All metrics of one worker.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `remediator_incidents_total{decision}`: outcomes of incidents by decision.
    pub incidents: IntCounterVec,
    /// `remediator_actions_total{runbook,result}`: executions by result
    /// (`success`, `failure`, `rolled_back`, `rollback_failed`, `aborted`, `error`).
    pub actions: IntCounterVec,
    /// `remediator_guardrail_blocks_total{guardrail}`.
    pub guardrail_blocks: IntCounterVec,
    /// `remediator_decision_duration_seconds`: incident received -> decision taken.
    pub decision_seconds: HistogramVec,
    /// `remediator_action_duration_seconds{runbook}`: pre-checks through verification.
    pub action_seconds: HistogramVec,
    /// `remediator_circuit_state{runbook}`: 0 closed, 1 half-open, 2 open.
    pub circuit_state: IntGaugeVec,
    /// `remediator_actions_in_flight`: executions running in this replica.
    pub in_flight: IntGauge,
    /// `remediator_kafka_consumer_lag{partition}`: high watermark minus position.
    pub consumer_lag: IntGaugeVec,
    /// `remediator_dlq_messages_total`: poison messages copied to the dead-letter topic.
    pub dlq: IntCounter,
    /// `remediator_store_errors_total`: guardrail store calls that failed (the worker paused).
    pub store_errors: IntCounter,
    /// `remediator_outcomes_published_total`: outcome events acknowledged by the broker.
    pub outcomes_published: IntCounter,
    /// `remediator_outcomes_republished_total`: recorded outcomes re-published for redeliveries.
    pub outcomes_republished: IntCounter,
    /// `remediator_delivery_retries_total`: records (outcomes, dead-letter copies) sent again
    /// after a failed delivery, including those sent again to keep a partition's order.
    pub delivery_retries: IntCounter,
    /// `remediator_runbook_success_rate{runbook}`: verified success rate over the trust window.
    pub trust_rate: GaugeVec,
    /// `remediator_runbook_executions{runbook}`: executions counted in the trust window.
    pub trust_executions: IntGaugeVec,
    /// `remediator_runbook_demoted{runbook}`: 1 when the runbook is demoted from auto to approval.
    pub trust_demoted: IntGaugeVec,
    /// `remediator_rollout_stage{runbook}`: a runbook's rollout stage (0 shadow, 1 approval,
    /// 2 canary, 3 auto), for runbooks with a rollout policy, from the shared record.
    pub rollout_stage: IntGaugeVec,
    /// `remediator_rollout_canary_share{runbook}`: the percent of targets acting automatically
    /// (0 outside the canary stage, 100 at auto).
    pub rollout_share: IntGaugeVec,
    /// `remediator_rollout_changes_total{runbook,from,to}`: stage changes this replica made.
    pub rollout_changes: IntCounterVec,
    /// `remediator_approvals_total{result}`: approval answers (`approved`, `denied`, `refused`).
    pub approvals: IntCounterVec,
    /// `remediator_notifications_total{result}`: webhook notifications (`sent`, `failed`, `dropped`).
    pub notifications: IntCounterVec,
    /// `remediator_approvals_pending`: approvals pending and not expired in the shared store (every
    /// replica reports the same value: aggregate with `max`, not `sum`).
    pub approvals_pending: IntGauge,
    /// `remediator_approval_oldest_pending_seconds`: age of the oldest of them, 0 when none.
    pub approval_oldest_pending: Gauge,
    /// `remediator_alertmanager_alerts_total{status}`: alerts the Alertmanager intake received, by
    /// what became of them (`firing`, `resolved`, `rejected`, `failed`; see `crate::alertmanager`).
    pub alertmanager_alerts: IntCounterVec,
    /// `remediator_lease_lapses_total{result}`: executions whose blast-radius lease lapsed while
    /// they ran (renewals failed for longer than the lease), by what the renewal then did:
    /// `reacquired` (the limit still allowed it) or `lost` (the action ran outside the limit).
    pub lease_lapses: IntCounterVec,
    /// `remediator_store_decisions_per_call`: decisions the guardrail store answered in one call
    /// (a partition's waiting incidents are asked together, up to `kafka.decide_batch`).
    pub store_decisions_per_call: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        ];
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.clone()), labels)
                .expect("valid metric definition");
            registry.register(Box::new(h.clone())).expect("unique metric name");
            h
        };
        let incidents = counter_vec(
            "remediator_incidents_total",
            "Incident outcomes by decision.",
            &["decision"],
        );
        let actions = counter_vec(
            "remediator_actions_total",
            "Executions by runbook and result.",
            &["runbook", "result"],
        );
        let guardrail_blocks = counter_vec(
            "remediator_guardrail_blocks_total",
            "Decisions blocked, by guardrail.",
            &["guardrail"],
        );
        let decision_seconds = histogram(
            "remediator_decision_duration_seconds",
            "Time from incident received to decision.",
            &[],
        );
        let action_seconds = histogram(
            "remediator_action_duration_seconds",
            "Time of an execution, pre-checks through verification and rollback.",
            &["runbook"],
        );
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "remediator_circuit_state",
                "Circuit breaker per runbook: 0 closed, 1 half-open, 2 open.",
            ),
            &["runbook"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(circuit_state.clone()))
            .expect("unique metric name");
        let in_flight = IntGauge::new("remediator_actions_in_flight", "Executions running in this replica.")
            .expect("valid metric definition");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric name");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "remediator_kafka_consumer_lag",
                "Incidents waiting per partition (high watermark - position).",
            ),
            &["partition"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique metric name");
        let dlq = counter(
            "remediator_dlq_messages_total",
            "Poison messages copied to the dead-letter topic.",
        );
        let store_errors = counter("remediator_store_errors_total", "Guardrail store calls that failed.");
        let outcomes_published = counter(
            "remediator_outcomes_published_total",
            "Outcome events acknowledged by the broker.",
        );
        let outcomes_republished = counter(
            "remediator_outcomes_republished_total",
            "Recorded outcomes re-published because their incident was redelivered.",
        );
        let delivery_retries = counter(
            "remediator_delivery_retries_total",
            "Records sent again after a failed delivery (and the records after them, to keep their order).",
        );
        let alertmanager_alerts = counter_vec(
            "remediator_alertmanager_alerts_total",
            "Alerts received by the Alertmanager intake, by what became of them.",
            &["status"],
        );
        let store_decisions_per_call = Histogram::with_opts(
            HistogramOpts::new(
                "remediator_store_decisions_per_call",
                "Decisions the guardrail store answered in one call (kafka.decide_batch).",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(store_decisions_per_call.clone()))
            .expect("unique metric name");
        let lease_lapses = counter_vec(
            "remediator_lease_lapses_total",
            "Executions whose lease lapsed while they ran, by result (reacquired, lost).",
            &["result"],
        );
        let int_gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["runbook"]).expect("valid metric definition");
            registry.register(Box::new(g.clone())).expect("unique metric name");
            g
        };
        let trust_rate = GaugeVec::new(
            Opts::new(
                "remediator_runbook_success_rate",
                "Verified success rate of a runbook over its trust window.",
            ),
            &["runbook"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(trust_rate.clone()))
            .expect("unique metric name");
        let trust_executions = int_gauge_vec(
            "remediator_runbook_executions",
            "Executions counted in a runbook's trust window.",
        );
        let trust_demoted = int_gauge_vec(
            "remediator_runbook_demoted",
            "1 when a runbook is demoted from auto to approval.",
        );
        let rollout_stage = int_gauge_vec(
            "remediator_rollout_stage",
            "Rollout stage of a runbook with a rollout policy: 0 shadow, 1 approval, 2 canary, 3 auto.",
        );
        let rollout_share = int_gauge_vec(
            "remediator_rollout_canary_share",
            "Percent of a runbook's targets acting automatically (0 before canary, 100 at auto).",
        );
        let rollout_changes = counter_vec(
            "remediator_rollout_changes_total",
            "Rollout stage changes made by this replica.",
            &["runbook", "from", "to"],
        );
        let approvals = counter_vec("remediator_approvals_total", "Approval answers by result.", &["result"]);
        let notifications = counter_vec(
            "remediator_notifications_total",
            "Webhook notifications by result.",
            &["result"],
        );
        let approvals_pending = IntGauge::new(
            "remediator_approvals_pending",
            "Approvals pending and not expired in the shared store (the same on every replica).",
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(approvals_pending.clone()))
            .expect("unique metric name");
        let approval_oldest_pending = Gauge::new(
            "remediator_approval_oldest_pending_seconds",
            "Age of the oldest pending approval in the shared store, 0 when none.",
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(approval_oldest_pending.clone()))
            .expect("unique metric name");
        Self {
            registry,
            approvals_pending,
            approval_oldest_pending,
            trust_rate,
            trust_executions,
            trust_demoted,
            rollout_stage,
            rollout_share,
            rollout_changes,
            approvals,
            notifications,
            incidents,
            actions,
            guardrail_blocks,
            decision_seconds,
            action_seconds,
            circuit_state,
            in_flight,
            consumer_lag,
            dlq,
            store_errors,
            outcomes_published,
            outcomes_republished,
            delivery_retries,
            alertmanager_alerts,
            lease_lapses,
            store_decisions_per_call,
        }
    }

    /// Set the approval gauges from the shared store's view: `count` approvals pending, the
    /// oldest created at `oldest_created_ms`, at `now_ms` (both milliseconds since the epoch).
    pub fn set_pending_approvals(&self, count: usize, oldest_created_ms: Option<i64>, now_ms: i64) {
        self.approvals_pending.set(i64::try_from(count).unwrap_or(i64::MAX));
        let age_ms = oldest_created_ms.map_or(0, |c| now_ms.saturating_sub(c).max(0));
        // Milliseconds to seconds; f64 is exact far beyond any real age.
        self.approval_oldest_pending.set(age_ms as f64 / 1000.0);
    }

    /// This replica created a pending approval: count it until the next refresh from the store.
    pub fn approval_created(&self) {
        self.approvals_pending.inc();
    }

    /// This replica's answer was accepted: one approval fewer until the next refresh (the oldest
    /// age is only known again then, unless none is left).
    pub fn approval_answered(&self) {
        if self.approvals_pending.get() > 0 {
            self.approvals_pending.dec();
        }
        if self.approvals_pending.get() == 0 {
            self.approval_oldest_pending.set(0.0);
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(m: &Metrics, name: &str) -> Option<f64> {
        m.render()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    #[test]
    fn pending_approval_gauges_follow_the_store_and_local_answers() {
        let m = Metrics::new();
        assert_eq!(sample(&m, "remediator_approvals_pending"), Some(0.0));
        assert_eq!(sample(&m, "remediator_approval_oldest_pending_seconds"), Some(0.0));

        m.set_pending_approvals(3, Some(1_000_000), 1_930_500);
        assert_eq!(sample(&m, "remediator_approvals_pending"), Some(3.0));
        assert_eq!(sample(&m, "remediator_approval_oldest_pending_seconds"), Some(930.5));

        m.approval_created();
        assert_eq!(m.approvals_pending.get(), 4);
        for _ in 0..3 {
            m.approval_answered();
        }
        assert_eq!(m.approvals_pending.get(), 1);
        assert_eq!(m.approval_oldest_pending.get(), 930.5, "unknown until the next refresh");
        m.approval_answered();
        m.approval_answered();
        assert_eq!(m.approvals_pending.get(), 0, "never below zero");
        assert_eq!(m.approval_oldest_pending.get(), 0.0, "nothing pending, nothing waiting");

        // A store clock slightly ahead of this replica's never gives a negative age.
        m.set_pending_approvals(1, Some(5_000), 4_000);
        assert_eq!(m.approval_oldest_pending.get(), 0.0);
        m.set_pending_approvals(0, None, 4_000);
        assert_eq!(sample(&m, "remediator_approvals_pending"), Some(0.0));
    }
}
