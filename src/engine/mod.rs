//! One incident through decide -> guard -> execute -> verify -> rollback -> outcome.
//!
//! [`Engine::handle`] is the whole life of one incident, independent of where it came from
//! (Kafka, `replay`, `demo`). It returns the outcome events to publish; the caller publishes them
//! and only then commits the input (at-least-once). The guardrail store makes redelivery safe:
//! an incident already recorded is answered with its recorded outcome, and one whose execution
//! was interrupted by a crash is never executed again.
//!
//! The engine is split by flow, each file one way an action comes to run:
//!
//! | file | flow |
//! |---|---|
//! | `automatic.rs` | an incident from the input: the decision order, the guardrails, the intent |
//! | `approvals.rs` | asking a human, and an answer: its checks again, then the execution |
//! | `manual.rs` | `remediator execute`: a human runs a runbook by hand |
//! | `execution.rs` | a reserved action: pre-checks, action, post-checks, rollback, lease renewal |
//! | `trust.rs` | the trust ladder: verified results, demotion, its gauges |
//! | `store.rs` | every store call of the flows, with its retry policy |
//!
//! Every decision and its reason come from `crate::decision`; this module gathers the facts,
//! asks the store and the executor, and builds each outcome once (`Engine::outcome`).
//!
//! Failure policy: if the store cannot be reached *before* acting, nothing happens and
//! [`EngineError::StoreUnavailable`] tells the caller to pause and retry the same message with
//! the same attempt id (fail closed). Once an action has run, its release and record are retried
//! until the store answers, because forgetting an execution would let it run twice.

mod approvals;
mod automatic;
mod ceiling;
mod execution;
mod manual;
mod rollout;
mod store;
mod trust;

pub use approvals::{action_hash, Answered};
pub use manual::ManualError;
pub(crate) use trust::window as trust_window;

use crate::clock::{millis, Clock};
use crate::config::GuardrailsConfig;
use crate::decision::{self, RunbookFacts};
use crate::executor::Executor;
use crate::guardrails::{DecideAnswer, Guardrail, Limits, Scope, Store, StoreError};
use crate::incident::{self, Incident, Partial};
use crate::metrics::Metrics;
use crate::outcome::{ActionView, CheckOutcome, Decision, Mode, Outcome, RolloutView, TrustView, SCHEMA_VERSION};
use crate::runbook::template::{RenderError, Vars};
use crate::runbook::{Action, Catalogue, Risk, Runbook};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{warn, Instrument};

/// Where a message came from, for redelivery detection and dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// One message of [`Engine::handle_batch`]: its bytes, where it came from, and its attempt id
/// (unique per delivery, reused when the same delivery is tried again).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The raw event.
    pub payload: &'a [u8],
    /// Where it came from, if from Kafka.
    pub source: Option<&'a Source>,
    /// The attempt id.
    pub attempt: &'a str,
}

/// What handling one message produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// Outcome events to publish, in order (key: incident id).
    pub outcomes: Vec<Outcome>,
    /// The message is poison: copy its raw bytes to the dead-letter topic with this reason.
    pub dead_letter: Option<incident::Rejection>,
    /// The outcomes were recorded earlier and are re-published for a redelivery.
    pub republished: bool,
    /// Each outcome's event as JSON, serialised once when the outcomes were made: the
    /// idempotency record, the outcomes topic and replay's output all use this text.
    json: Vec<String>,
}

impl Handled {
    /// New outcomes of a message (not poison, not re-published).
    fn new(outcomes: Vec<Outcome>) -> Self {
        Self::with(outcomes, None, false)
    }

    fn with(outcomes: Vec<Outcome>, dead_letter: Option<incident::Rejection>, republished: bool) -> Self {
        let json = outcomes.iter().map(Outcome::to_json).collect();
        Handled {
            outcomes,
            dead_letter,
            republished,
            json,
        }
    }

    /// Each outcome with its event as one line of JSON, in order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = (&Outcome, &str)> {
        // The text was written when the outcomes were made; nothing may change them after
        // without writing it again (see `Handled::reword_rejections`).
        debug_assert_eq!(
            self.json,
            self.outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>(),
            "outcomes changed after they were serialised"
        );
        self.outcomes.iter().zip(self.json.iter().map(String::as_str))
    }

    /// The events as one JSON array: what the idempotency record keeps.
    fn record(&self) -> String {
        json_array(&self.json)
    }

    /// Give the `rejected` outcomes this `reason` (the event and its JSON alike).
    pub fn reword_rejections(&mut self, reason: &str) {
        for (o, j) in self.outcomes.iter_mut().zip(self.json.iter_mut()) {
            if o.decision == Decision::Rejected {
                o.reason = reason.to_owned();
                *j = o.to_json();
            }
        }
    }
}

/// Why a message could not be handled now. Nothing was executed; retry it later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The guardrail store is unreachable: fail closed.
    #[error("guardrail store unavailable, nothing executed: {0}")]
    StoreUnavailable(String),
}

/// Engine settings (from the worker config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Replica identity written into outcomes.
    pub worker: String,
    /// Worker-wide shadow mode.
    pub dry_run: bool,
    /// The `guardrails` section of the worker config: the worker-wide guardrail numbers
    /// (docs/design.md#guardrails), combined with each runbook's own, and the incident age,
    /// lease and idempotency horizon.
    pub guardrails: GuardrailsConfig,
    /// Sliding rate-limit window: one hour by contract; shorter only in tests.
    pub rate_window: Duration,
    /// How long an approval can be answered.
    pub approval_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            worker: "remediator".into(),
            dry_run: false,
            guardrails: GuardrailsConfig::default(),
            rate_window: Duration::from_secs(3600),
            approval_ttl: Duration::from_secs(3600),
        }
    }
}

impl From<&crate::config::Config> for Settings {
    /// The engine's part of the worker configuration (validated at load).
    fn from(c: &crate::config::Config) -> Self {
        Settings {
            worker: c.worker_id.clone(),
            dry_run: c.dry_run,
            guardrails: c.guardrails.clone(),
            approval_ttl: c.approvals.ttl,
            ..Settings::default()
        }
    }
}

/// How outcome event ids are made.
#[derive(Debug)]
pub enum EventIds {
    /// Random UUIDs (production).
    Random,
    /// UUIDv5 of a counter: the same input gives the same ids (`replay`).
    Deterministic(AtomicU64),
}

impl EventIds {
    fn next(&self) -> String {
        match self {
            EventIds::Random => uuid::Uuid::new_v4().to_string(),
            EventIds::Deterministic(n) => {
                let i = n.fetch_add(1, Ordering::Relaxed);
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("remediator-event-{i}").as_bytes()).to_string()
            }
        }
    }
}

/// The remediation engine: everything needed to take one incident to its outcome.
pub struct Engine {
    catalogue: Arc<Catalogue>,
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    metrics: Metrics,
    ids: EventIds,
    ceiling: ceiling::LocalCeiling,
    demotions: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Each rollout runbook's record as last read or written (see `rollout.rs`).
    rollouts: Mutex<HashMap<String, (crate::rollout::RolloutRecord, Instant)>>,
    notifier: Option<crate::notify::Notifier>,
}

/// What an outcome is about: the incident (or what could be read of a rejected one), its
/// runbook, the action, the mode it ran in and the approval it asks for or was unlocked by.
#[derive(Debug, Clone, Default)]
struct Subject {
    incident_id: Option<String>,
    service: Option<String>,
    root_cause: Option<String>,
    confidence: Option<f64>,
    runbook_id: Option<String>,
    action: Option<ActionView>,
    mode: Option<Mode>,
    approval_id: Option<String>,
    approver: Option<String>,
    /// The runbook's rollout stage for this decision (docs/rollout.md).
    rollout: Option<RolloutView>,
}

impl Subject {
    /// An incident and the runbook it matched.
    fn of(incident: &Incident, runbook: Option<&Runbook>) -> Self {
        Subject {
            incident_id: Some(incident.id.clone()),
            service: Some(incident.service().to_string()),
            root_cause: Some(incident.root_cause.clone()),
            confidence: Some(incident.confidence),
            runbook_id: runbook.map(|r| r.id.clone()),
            ..Subject::default()
        }
    }

    /// What could be read of an event that failed validation.
    fn partial(partial: &Partial) -> Self {
        Subject {
            incident_id: partial.id.clone(),
            service: partial.service.clone(),
            root_cause: partial.root_cause.clone(),
            ..Subject::default()
        }
    }
}

/// What an outcome says happened: a decision and why, and for an execution what it did.
#[derive(Debug, Clone)]
struct Report {
    decision: Decision,
    reason: String,
    guardrail: Option<Guardrail>,
    success: Option<bool>,
    rolled_back: bool,
    checks: Vec<CheckOutcome>,
    trust: Option<TrustView>,
    /// What the result did to the runbook's rollout (its evidence and change go into the
    /// subject's view; without one, this is the view).
    rollout: Option<RolloutView>,
}

impl Report {
    fn new(decision: Decision, reason: String) -> Self {
        Report {
            decision,
            reason,
            guardrail: None,
            success: None,
            rolled_back: false,
            checks: Vec::new(),
            trust: None,
            rollout: None,
        }
    }
}

impl From<decision::Final> for Report {
    fn from(f: decision::Final) -> Self {
        Report {
            guardrail: f.guardrail,
            ..Report::new(f.decision, f.reason)
        }
    }
}

impl Engine {
    /// Assemble an engine.
    pub fn new(
        catalogue: Arc<Catalogue>,
        store: Arc<dyn Store>,
        executor: Arc<dyn Executor>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        metrics: Metrics,
        ids: EventIds,
    ) -> Self {
        Self {
            catalogue,
            store,
            executor,
            clock,
            settings,
            metrics,
            ids,
            ceiling: ceiling::LocalCeiling::default(),
            demotions: Mutex::new(HashMap::new()),
            rollouts: Mutex::new(HashMap::new()),
            notifier: None,
        }
    }

    /// Also send every new outcome to a notification webhook (never blocking).
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The loaded catalogue.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The guardrail store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Set `remediator_approvals_pending` and `remediator_approval_oldest_pending_seconds` from
    /// the shared store (one count-plus-oldest read, no approval read; the worker does it
    /// periodically, never per decision). Returns how many approvals are pending.
    pub async fn refresh_approval_gauges(&self) -> Result<usize, StoreError> {
        let s = self.store.pending_summary().await?;
        self.metrics
            .set_pending_approvals(s.count, s.oldest_created_ms, millis(self.clock.now()));
        Ok(s.count)
    }

    /// Set `remediator_circuit_state` of every runbook from the shared store (the worker does it
    /// periodically, so every replica reports the circuit, not only the one that last fed it).
    pub(crate) async fn refresh_circuit_gauges(&self) -> Result<(), StoreError> {
        for rb in self.catalogue.runbooks() {
            let c = self.store.circuit(&rb.id).await?;
            self.metrics
                .circuit_state
                .with_label_values(&[&rb.id])
                .set(c.state.gauge());
        }
        Ok(())
    }

    /// Handle one message. `attempt` must be unique per delivery and reused when the same
    /// delivery is retried after [`EngineError`], so a retry never reserves twice.
    pub async fn handle(&self, payload: &[u8], source: Option<&Source>, attempt: &str) -> Result<Handled, EngineError> {
        let started = Instant::now();
        self.handle_from(started, incident::parse(payload), source, attempt)
            .await
    }

    /// [`Engine::handle`] of a message already parsed with [`incident::parse`] (`remediator
    /// replay` parses on another thread while the engine decides the lines before).
    pub async fn handle_parsed(
        &self,
        parsed: Result<Incident, (incident::Rejection, Partial)>,
        source: Option<&Source>,
        attempt: &str,
    ) -> Result<Handled, EngineError> {
        self.handle_from(Instant::now(), parsed, source, attempt).await
    }

    async fn handle_from(
        &self,
        started: Instant,
        parsed: Result<Incident, (incident::Rejection, Partial)>,
        source: Option<&Source>,
        attempt: &str,
    ) -> Result<Handled, EngineError> {
        let result = match parsed {
            Err((rejection, partial)) => Ok(self.rejected(rejection, &partial, source)),
            Ok(incident) => {
                let span = tracing::info_span!("incident", id = %incident.id);
                self.process(&incident, source, attempt).instrument(span).await
            }
        };
        self.handled(started, &result);
        result
    }

    /// Handle several messages of one partition, in order, with one question to the store for
    /// all of them ([`GuardrailStore::decide_batch`](crate::guardrails::GuardrailStore::decide_batch)):
    /// the outcomes are those [`Engine::handle`] gives them one after another.
    ///
    /// Returns the outcomes of the messages handled, in order: the first ones of `messages`, at
    /// least one. Those after the store's batch ended (at an action reserved, which runs first,
    /// or at an incident another replica holds) are left: handle them in a later call, with the
    /// same attempts. [`EngineError`] only when none could be handled (the store is unavailable):
    /// retry them all with the same attempts.
    pub async fn handle_batch(&self, messages: &[Message<'_>]) -> Result<Vec<Handled>, EngineError> {
        let started = Instant::now();
        let parsed: Vec<_> = messages.iter().map(|m| incident::parse(m.payload)).collect();
        let mut prepared = Vec::with_capacity(messages.len());
        let mut requests = Vec::with_capacity(messages.len());
        for (m, p) in messages.iter().zip(&parsed) {
            prepared.push(match p {
                Ok(incident) => {
                    let (p, request) = self.prepare(incident, m.source, m.attempt).await;
                    requests.push(request);
                    Some(p)
                }
                Err(_) => None,
            });
        }
        let answers = self.claim_batch(&requests).await?;
        // The store stopped at an answer that ends the batch: nothing after it is handled now.
        let stopped = answers.len() < requests.len();
        let mut answers = answers.into_iter();
        let mut handled = Vec::with_capacity(messages.len());
        for ((m, parsed), prepared) in messages.iter().zip(&parsed).zip(prepared) {
            let result = match (parsed, prepared) {
                (Err((rejection, partial)), _) => Ok(self.rejected(rejection.clone(), partial, m.source)),
                (Ok(incident), Some(prepared)) => match answers.next() {
                    // Held by another replica: waited for at the start of a later call.
                    None | Some(DecideAnswer::InProgress { .. }) => break,
                    Some(answer) => {
                        let span = tracing::info_span!("incident", id = %incident.id);
                        self.complete(prepared, answer).instrument(span).await
                    }
                },
                (Ok(_), None) => unreachable!("every incident that parsed was prepared"),
            };
            self.handled(started, &result);
            match result {
                Ok(h) => handled.push(h),
                // What was handled stands (its outcomes are final); this one is retried.
                Err(e) if handled.is_empty() => return Err(e),
                Err(_) => break,
            }
            if stopped && answers.len() == 0 {
                break;
            }
        }
        Ok(handled)
    }

    /// The outcome of an event that failed validation (rule 1: nothing else about it counts).
    fn rejected(&self, rejection: incident::Rejection, partial: &Partial, source: Option<&Source>) -> Handled {
        warn!(field = %rejection.field, reason = %rejection, source = ?source.map(|s| s.to_string()), "incident rejected");
        let verdict = decision::decide(&decision::Facts::rejected(rejection.to_string()));
        let decision::Verdict::Final(rejected) = verdict else {
            unreachable!("decide() rejects an invalid event")
        };
        let o = self.outcome(&Subject::partial(partial), self.clock.now(), rejected.into());
        Handled::with(vec![o], Some(rejection), false)
    }

    /// A message was handled (or failed): `remediator_decision_duration_seconds`, and its new
    /// outcomes [`Engine::emit`]ted.
    fn handled(&self, started: Instant, result: &Result<Handled, EngineError>) {
        if let Ok(h) = result {
            self.metrics
                .decision_seconds
                .with_label_values(&[] as &[&str])
                .observe(started.elapsed().as_secs_f64());
            if !h.republished {
                self.emit(&h.outcomes);
            }
        }
    }

    /// New outcomes leave the engine: counted (`remediator_incidents_total`, and
    /// `remediator_guardrail_blocks_total` for a block) and sent to the notification webhook.
    /// Every flow calls this once for what it returns; re-published outcomes never come here.
    fn emit(&self, outcomes: &[Outcome]) {
        for o in outcomes {
            self.metrics.incidents.with_label_values(&[o.decision.as_str()]).inc();
            if let Some(g) = o.guardrail {
                self.metrics.guardrail_blocks.with_label_values(&[g.as_str()]).inc();
            }
        }
        if let Some(n) = &self.notifier {
            outcomes.iter().for_each(|o| n.notify(o));
        }
    }

    /// The outcome event of `subject`, decided at `decided_at`, saying `report`: built once, when
    /// it is final, and stamped with its finish time.
    fn outcome(&self, subject: &Subject, decided_at: DateTime<Utc>, report: Report) -> Outcome {
        let finished_at = self.clock.now().max(decided_at);
        let s = subject.clone();
        Outcome {
            schema_version: SCHEMA_VERSION,
            event_id: self.ids.next(),
            incident_id: s.incident_id,
            service: s.service,
            root_cause: s.root_cause,
            confidence: s.confidence,
            runbook_id: s.runbook_id,
            decision: report.decision,
            success: report.success,
            rolled_back: report.rolled_back,
            reason: report.reason,
            guardrail: report.guardrail,
            action: s.action,
            checks: report.checks,
            approval_id: s.approval_id,
            approver: s.approver,
            trust: report.trust,
            // The decision's view, with what the result did to the rollout.
            rollout: match (s.rollout, report.rollout) {
                (Some(decided), Some(result)) => Some(RolloutView {
                    evidence: result.evidence,
                    change: result.change,
                    ..decided
                }),
                (decided, result) => result.or(decided),
            },
            mode: s.mode,
            worker: self.settings.worker.clone(),
            decided_at,
            finished_at,
            duration_ms: (finished_at - decided_at).num_milliseconds().max(0) as u64,
        }
    }

    /// The guardrail numbers of a runbook: its own, and the worker's defaults.
    fn limits(&self, rb: &Runbook) -> Limits {
        let g = &self.settings.guardrails;
        Limits {
            max_per_hour: rb.max_per_hour,
            rate_window_ms: ms(self.settings.rate_window),
            cooldown_ms: ms(rb.cooldown),
            failure_threshold: g.failure_threshold,
            recovery_ms: ms(g.recovery_timeout),
            max_concurrent_actions: g.max_concurrent_actions,
            max_affected_services: g.max_affected_services,
            runbook_max_services: rb.blast_radius_limit.unwrap_or(0),
            services_window_ms: ms(g.affected_services_window),
            conservative_ms: ms(self.settings.rate_window),
            record_ttl_ms: ms(self.settings.guardrails.idempotency_ttl),
        }
    }

    /// The mode an outcome reports for a runbook before its intent is known.
    fn effective_mode(&self, rb: &Runbook) -> Mode {
        match rb.mode {
            Mode::Auto if rb.dry_run || self.settings.dry_run => Mode::DryRun,
            m => m,
        }
    }
}

fn to_json(outcomes: &[Outcome]) -> String {
    json_array(&outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>())
}

/// `[a,b,...]` from the JSON texts of its elements.
fn json_array(elements: &[String]) -> String {
    let mut array = String::with_capacity(2 + elements.iter().map(|e| e.len() + 1).sum::<usize>());
    array.push('[');
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            array.push(',');
        }
        array.push_str(e);
    }
    array.push(']');
    array
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn runbook_facts(rb: &Runbook) -> RunbookFacts {
    RunbookFacts {
        id: rb.id.clone(),
        min_confidence: rb.min_confidence,
        mode: rb.mode,
        dry_run: rb.dry_run,
        risk: match rb.risk {
            Risk::Low => "LOW",
            Risk::Medium => "MEDIUM",
            Risk::High => "HIGH",
        },
        demoted: None,
        rollout: None,
    }
}

/// What the guardrails hold a decision to: the runbook, the normalised service, and the object
/// the action touches (`<namespace>/<kind>/<name>`), so the rate limit and cooldown cannot be
/// walked past by varying the incident's free-text `service` for the same object.
fn guard_scope(rb: &Runbook, incident: &Incident, view: &ActionView) -> Scope {
    let target = match (view.namespace.as_deref(), view.target.as_str()) {
        (_, "") => String::new(),
        (Some(ns), t) => format!("{ns}/{t}"),
        (None, t) => t.to_string(),
    };
    Scope {
        runbook: rb.id.clone(),
        service: Scope::normalise_service(incident.service()),
        target,
    }
}

/// Render a runbook's action for an incident, enforcing its service scope.
fn render(rb: &Runbook, incident: &Incident, vars: &Vars) -> Result<Action, RenderError> {
    if !rb.scope.services.is_empty() && !rb.scope.services.iter().any(|s| s == incident.service()) {
        return Err(RenderError {
            var: "service".into(),
            message: format!(
                "{:?} is outside the runbook's scope ({})",
                incident.service(),
                rb.scope.services.join(", ")
            ),
        });
    }
    rb.action.render(vars, &rb.scope.namespaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, reason: &str) -> Outcome {
        let mut o: Outcome = serde_json::from_str(
            r#"{"schema_version":1,"event_id":"e","incident_id":"i","service":"s","root_cause":"r",
                "confidence":0.95,"runbook_id":"restart-pod","decision":"dry_run","success":null,
                "rolled_back":false,"reason":"x","guardrail":null,"action":null,"checks":[],
                "approval_id":null,"mode":"dry_run","worker":"w","decided_at":"2026-12-07T00:00:00.000Z",
                "finished_at":"2026-12-07T00:00:00.001Z","duration_ms":1}"#,
        )
        .expect("an outcome");
        o.incident_id = Some(id.into());
        o.reason = reason.into();
        o
    }

    /// The record (and any array of events) is what serde_json writes for the outcomes, so a
    /// redelivery reads back exactly the events that were published.
    #[test]
    fn a_record_is_the_json_array_of_its_events() {
        for outcomes in [
            vec![],
            vec![outcome("a", "one")],
            vec![outcome("a", "one \"quoted\""), outcome("b", "two\nlines")],
        ] {
            let theirs = serde_json::to_string(&outcomes).expect("serialisable");
            assert_eq!(to_json(&outcomes), theirs);
            let handled = Handled::new(outcomes.clone());
            assert_eq!(handled.record(), theirs);
            let back: Vec<Outcome> = serde_json::from_str(&handled.record()).expect("valid JSON");
            assert_eq!(back, outcomes);
            let lines: Vec<&str> = handled.events().map(|(_, json)| json).collect();
            assert_eq!(
                lines,
                outcomes
                    .iter()
                    .map(|o| serde_json::to_string(o).expect("ok"))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Rewording a rejection rewrites its event's text too.
    #[test]
    fn reworded_rejections_are_written_again() {
        let mut rejected = outcome("a", "invalid incident: $: not valid JSON");
        rejected.decision = Decision::Rejected;
        let mut handled = Handled::new(vec![rejected, outcome("b", "kept")]);
        handled.reword_rejections("invalid incident: $: null payload");
        let events: Vec<(&Outcome, &str)> = handled.events().collect();
        assert_eq!(events[0].0.reason, "invalid incident: $: null payload");
        assert!(events[0].1.contains("null payload"), "{}", events[0].1);
        assert!(events[1].1.contains("\"kept\""), "{}", events[1].1);
    }
}
