//! The rules that types alone cannot state: positive durations, the lifetimes that must outlive
//! one another (an incident's claim, its idempotency record, an approval's execution claim), the
//! ranges of counts, timeouts and the confidence default, the labels the Alertmanager mapping
//! needs, a worker id, and the Redis key prefix and URL. Run once, at load; each error names its
//! key, and `load.rs` adds where in the file that key was written.

use super::{invalid, Config, ConfigError};
use std::time::Duration;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.guardrails;
        let (k, am) = (&self.kubernetes, &self.alertmanager);
        for (key, d) in [
            ("guardrails.affected_services_window", g.affected_services_window),
            ("guardrails.recovery_timeout", g.recovery_timeout),
            ("guardrails.max_incident_age", g.max_incident_age),
            ("guardrails.lease", g.lease),
            ("guardrails.idempotency_ttl", g.idempotency_ttl),
            ("approvals.ttl", self.approvals.ttl),
            ("kubernetes.check_timeout", k.check_timeout),
            ("kubernetes.poll_interval", k.poll_interval),
            ("kubernetes.api_timeout", k.api_timeout),
            ("alertmanager.delivery_timeout", am.delivery_timeout),
            ("shutdown.grace", self.shutdown.grace),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        // A proxy's identity header is believed only from the proxies named, and both or
        // neither are set.
        let a = &self.approvals;
        if let Err((key, why)) = super::TrustedProxy::parse(&a.identity_header, &a.trusted_proxies) {
            return Err(invalid(key, why));
        }
        // An incident may be acted on while younger than max_incident_age; its claim record (and
        // the done record) must outlive that, or a redelivery could find no record and still be
        // fresh enough to act.
        let max_age = g.max_incident_age;
        let grace = Duration::from_millis(crate::guardrails::memory::CLAIM_GRACE_MS);
        if max_age >= grace {
            return Err(invalid(
                "guardrails.max_incident_age",
                format!(
                    "must be below {}s, the claim grace (how long an incident's claim outlives its lease)",
                    grace.as_secs()
                ),
            ));
        }
        if max_age >= g.idempotency_ttl {
            return Err(invalid(
                "guardrails.max_incident_age",
                "must be below guardrails.idempotency_ttl (a redelivery must never outlive its record while still fresh)",
            ));
        }
        // A repeated approval answer re-enters the execution claim kept under the approval's
        // claim id; that record must outlive the approval itself (answerable for approvals.ttl,
        // kept 24 h longer for the audit), or a late repeat could find no claim and run again.
        let approval_life = self.approvals.ttl.saturating_add(Duration::from_secs(24 * 3600));
        if g.idempotency_ttl <= approval_life {
            return Err(invalid(
                "guardrails.idempotency_ttl",
                "must be greater than approvals.ttl + 24h (an approval's execution claim must outlive the approval)",
            ));
        }
        if g.lease < Duration::from_secs(3) {
            return Err(invalid(
                "guardrails.lease",
                "must be at least 3s (it is renewed every third)",
            ));
        }
        for (key, v) in [
            ("guardrails.max_concurrent_actions", g.max_concurrent_actions),
            ("guardrails.max_affected_services", g.max_affected_services),
            ("guardrails.failure_threshold", g.failure_threshold),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.kafka.max_in_flight == 0 || self.kafka.max_in_flight > 10_000 {
            return Err(invalid("kafka.max_in_flight", "must be between 1 and 10000"));
        }
        if self.kafka.decide_batch == 0 || self.kafka.decide_batch > 256 {
            return Err(invalid("kafka.decide_batch", "must be between 1 and 256"));
        }
        if !(1..=60_000).contains(&self.redis.timeout_ms) {
            return Err(invalid("redis.timeout_ms", "must be between 1 and 60000"));
        }
        if !(k.error_rate_below.is_finite()) {
            return Err(invalid("kubernetes.error_rate_below", "must be a number"));
        }
        if !(0.0..=1.0).contains(&am.default_confidence) {
            return Err(invalid(
                "alertmanager.default_confidence",
                "must be between 0.0 and 1.0",
            ));
        }
        let m = &am.label_mapping;
        for (key, labels) in [
            ("alertmanager.label_mapping.root_cause", &m.root_cause),
            ("alertmanager.label_mapping.service", &m.service),
        ] {
            if labels.iter().all(|l| l.is_empty()) {
                return Err(invalid(key, "must name at least one label"));
            }
        }
        if self.worker_id.is_empty() {
            return Err(invalid("worker_id", "must not be empty"));
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            return Err(invalid("redis.key_prefix", "must be non-empty and contain no braces"));
        }
        if self.console.recent_outcomes > 10_000 {
            return Err(invalid("console.recent_outcomes", "must be at most 10000"));
        }
        let url = &self.console.public_url;
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid(
                "console.public_url",
                "must be an http:// or https:// address (or empty: no link)",
            ));
        }
        if url.contains(|c: char| c.is_whitespace() || c.is_control() || c == '#') {
            return Err(invalid(
                "console.public_url",
                "must not contain spaces, control characters or '#' (the approval's page is added after '#')",
            ));
        }
        // The scheme chooses the topology; the message never repeats the URL (it may hold a
        // password).
        crate::guardrails::topology::Topology::parse(&self.redis.url).map_err(|m| invalid("redis.url", m))?;
        Ok(())
    }
}
