//! The outcome event (output, schema `schemas/outcome.v1.json`).
//!
//! One event per decision and per state change of an execution; the final one of an incident
//! is what the idempotency record keeps and what a redelivery re-publishes.

use crate::guardrails::Guardrail;
use crate::rollout::Stage;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The outcome schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

mod json;

/// What the worker decided (docs/design.md#decision-order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The runbook ran; `success` says whether post-checks passed.
    Executed,
    /// A human must approve the suggested action.
    ApprovalRequired,
    /// No automation: no runbook, low confidence, or a suggest-only runbook.
    Manual,
    /// A guardrail said no (`guardrail` names it).
    Blocked,
    /// A pre-check failed or the action could not be rendered safely; nothing changed.
    Aborted,
    /// The event broke the schema; its bytes went to the dead-letter topic.
    Rejected,
    /// The incident id was already handled; nothing was done again.
    Duplicate,
    /// The incident was older than `max_incident_age`.
    Expired,
    /// Shadow mode: guardrails checked and reserved, action rendered, not executed.
    DryRun,
    /// A human moved a runbook's rollout stage (`remediator promote`, the console); about the
    /// runbook, not an incident (`incident_id` null), with `rollout.change`. A change that a
    /// result caused is carried by that result's own outcome.
    RolloutChanged,
}

impl Decision {
    /// Every decision.
    pub const ALL: [Decision; 10] = [
        Decision::Executed,
        Decision::ApprovalRequired,
        Decision::Manual,
        Decision::Blocked,
        Decision::Aborted,
        Decision::Rejected,
        Decision::Duplicate,
        Decision::Expired,
        Decision::DryRun,
        Decision::RolloutChanged,
    ];

    /// Wire name, also the `decision` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Executed => "executed",
            Decision::ApprovalRequired => "approval_required",
            Decision::Manual => "manual",
            Decision::Blocked => "blocked",
            Decision::Aborted => "aborted",
            Decision::Rejected => "rejected",
            Decision::Duplicate => "duplicate",
            Decision::Expired => "expired",
            Decision::DryRun => "dry_run",
            Decision::RolloutChanged => "rollout_changed",
        }
    }
}

/// How a runbook runs (its place on the automation spectrum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Execute without asking.
    Auto,
    /// Propose; execute after a human approves.
    Approval,
    /// Only suggest the action; a human runs it.
    Suggest,
    /// Shadow mode: everything but the action itself.
    DryRun,
}

impl Mode {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Approval => "approval",
            Mode::Suggest => "suggest",
            Mode::DryRun => "dry_run",
        }
    }
}

/// Before or after the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Safety check before acting; a failure aborts.
    Pre,
    /// Verification after acting; a failure triggers rollback.
    Post,
    /// Verification after a rollback.
    Rollback,
}

impl Phase {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
            Phase::Rollback => "rollback",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// When it ran.
    pub phase: Phase,
    /// Check name from the runbook.
    pub name: String,
    /// Did it pass.
    pub passed: bool,
    /// What was observed.
    pub detail: String,
}

/// A rendered action: what was (or would be) done, to what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionView {
    /// Action kind, e.g. `delete_pod`, `scale_deployment`.
    pub kind: String,
    /// The object acted on, e.g. `pod/api-server-abc123` or a webhook URL.
    pub target: String,
    /// Kubernetes namespace, when the action is namespaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Rendered parameters (replicas, patch body, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Equivalent kubectl-style command, for humans; never executed by a shell.
    pub display: String,
}

/// A runbook's verified success rate over its last executions, as carried in outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustView {
    /// Share of the counted executions whose post-checks passed (0..1).
    pub success_rate: f64,
    /// Executions counted (the runbook's trust window at most).
    pub executions: u32,
    /// The runbook is demoted from auto to approval.
    pub demoted: bool,
}

/// Where a runbook with a rollout policy stood for this decision, and what the outcome did to it
/// (docs/rollout.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The stage the decision was taken in.
    pub stage: Stage,
    /// In `canary`: the percent of targets acting automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<u8>,
    /// In `canary`: this incident's target is in that share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_canary: Option<bool>,
    /// Successes counted toward the next stage after this outcome (when it recorded one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<u32>,
    /// Successes the policy needs (`promote_after`).
    pub needed: u32,
    /// The stage change this outcome caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<RolloutChange>,
}

/// A runbook's rollout moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutChange {
    /// The stage it left.
    pub from: Stage,
    /// The stage it is in now.
    pub to: Stage,
    /// The canary share it is at now, in `canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<u8>,
    /// Why, for humans: the evidence, the failure or the human.
    pub why: String,
}

/// One outcome event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Unique id of this event (consumers de-duplicate re-published outcomes by it).
    pub event_id: String,
    /// Incident id; null only for a rejected event whose id was unreadable.
    pub incident_id: Option<String>,
    /// Primary service.
    pub service: Option<String>,
    /// Root cause as reported.
    pub root_cause: Option<String>,
    /// RCA confidence as reported.
    pub confidence: Option<f64>,
    /// Matched runbook.
    pub runbook_id: Option<String>,
    /// What was decided.
    pub decision: Decision,
    /// For `executed`: did post-checks pass; otherwise null.
    pub success: Option<bool>,
    /// A rollback ran.
    pub rolled_back: bool,
    /// Why, for humans.
    pub reason: String,
    /// For `blocked`: which guardrail.
    pub guardrail: Option<Guardrail>,
    /// The rendered (or suggested) action.
    pub action: Option<ActionView>,
    /// Checks that ran.
    pub checks: Vec<CheckOutcome>,
    /// Approval this outcome asks for or was unlocked by.
    pub approval_id: Option<String>,
    /// Who approved or denied, for outcomes of an answered approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// The runbook's verified track record after this execution (the trust ladder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustView>,
    /// The runbook's rollout stage for this decision, and any change this outcome caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    /// The runbook's mode for this decision.
    pub mode: Option<Mode>,
    /// Replica identity.
    pub worker: String,
    /// When the decision was taken.
    #[serde(serialize_with = "rfc3339_millis")]
    pub decided_at: DateTime<Utc>,
    /// When the last step finished.
    #[serde(serialize_with = "rfc3339_millis")]
    pub finished_at: DateTime<Utc>,
    /// `finished_at - decided_at`, in milliseconds.
    pub duration_ms: u64,
}

/// `2026-12-07T14:34:24.123Z`: what `to_rfc3339_opts(SecondsFormat::Millis, true)` writes,
/// without its allocation and formatting machinery (every outcome carries two instants). Years
/// outside 0-9999 and leap seconds, which that format writes differently, are left to chrono.
fn rfc3339_millis<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match millis_text(t) {
        Some(text) => s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?),
        None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
    }
}

/// The text of [`rfc3339_millis`] for years 0-9999 outside a leap second; `None` otherwise.
fn millis_text(t: &DateTime<Utc>) -> Option<[u8; 24]> {
    use chrono::{Datelike, Timelike};
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    if t.nanosecond() >= 1_000_000_000 {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00.000Z";
    for (at, width, value) in [
        (0, 4, year),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second()),
        (20, 3, t.nanosecond() / 1_000_000),
    ] {
        let mut v = value;
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    Some(text)
}

impl Outcome {
    /// The event as one line of JSON.
    pub fn to_json(&self) -> String {
        json::write(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The instants of an outcome read exactly as chrono's RFC 3339 with milliseconds, across
    /// the range of years and at every field's edges (and chrono's own text where it differs).
    #[test]
    fn instants_are_written_as_chrono_writes_them() {
        let write = |t: DateTime<Utc>| {
            let mut out = Vec::new();
            rfc3339_millis(&t, &mut serde_json::Serializer::new(&mut out)).expect("serialised");
            String::from_utf8(out).expect("UTF-8")
        };
        let mut instants: Vec<DateTime<Utc>> = [
            "0000-01-01T00:00:00Z",
            "0009-02-03T04:05:06.007Z",
            "1970-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999999999Z",
            "2026-12-07T14:34:24.123456Z",
            "2028-02-29T12:00:00.5Z",
            "9999-12-31T23:59:59.999Z",
            "2016-12-31T23:59:60.250Z",
        ]
        .iter()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|e| panic!("{s}: {e}"))
        })
        .collect();
        instants.push(
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
                .single()
                .expect("year 10000"),
        );
        instants.push(Utc.with_ymd_and_hms(-1, 6, 15, 10, 20, 30).single().expect("year -1"));
        // And a spread of ordinary instants, a prime number of milliseconds apart.
        let mut t = DateTime::from_timestamp_millis(-62_000_000_000_000).expect("t");
        while t.timestamp() < 253_402_300_799 {
            instants.push(t);
            t += chrono::Duration::milliseconds(9_999_999_967);
        }
        for t in instants {
            assert_eq!(
                write(t),
                format!("\"{}\"", t.to_rfc3339_opts(SecondsFormat::Millis, true)),
                "{t:?}"
            );
        }
    }
}
