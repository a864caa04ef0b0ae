//! One incident through decide -> guard -> execute -> verify -> rollback -> outcome.
//!
//! [`Engine::handle`] is the whole life of one incident, independent of where it came from
//! (Kafka, `replay`, `demo`). It returns the outcome events to publish; the caller publishes them
//! and only then commits the input (at-least-once). The guardrail store makes redelivery safe:
//! an incident already recorded is answered with its recorded outcome, and one whose execution
//! was interrupted by a crash is never executed again.
//!
//! Failure policy: if the store cannot be reached *before* acting, nothing happens and
//! [`EngineError::StoreUnavailable`] tells the caller to pause and retry the same message with
//! the same attempt id (fail closed). Once an action has run, its release and record are retried
//! until the store answers, because forgetting an execution would let it run twice.

use crate::clock::{millis, Clock};
use crate::decision::{self, Facts, GuardrailFact, Intent, RunbookFacts, Verdict};
use crate::executor::{ExecContext, Executor};
use crate::guardrails::{
    Admission, Answer, AnswerResult, Approval, ApprovalState, DecideAnswer, DecideRequest, ExecResult, FinishRequest,
    Guardrail, Limits, RenewRequest, Renewal, Scope, Store, StoreError,
};
use crate::incident::{self, Incident, Partial, Rejection};
use crate::metrics::Metrics;
use crate::outcome::{CheckOutcome, Decision, Mode, Outcome, Phase, TrustView, SCHEMA_VERSION};
use crate::runbook::template::{RenderError, Vars};
use crate::runbook::{Action, Catalogue, CheckSpec, Risk, Runbook};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn, Instrument};

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

/// What handling one message produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// Outcome events to publish, in order (key: incident id).
    pub outcomes: Vec<Outcome>,
    /// The message is poison: copy its raw bytes to the dead-letter topic with this reason.
    pub dead_letter: Option<Rejection>,
    /// The outcomes were recorded earlier and are re-published for a redelivery.
    pub republished: bool,
}

/// Why a message could not be handled now. Nothing was executed; retry it later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The guardrail store is unreachable: fail closed.
    #[error("guardrail store unavailable, nothing executed: {0}")]
    StoreUnavailable(String),
}

/// Worker-wide guardrail defaults (docs/design.md#guardrails), combined with each runbook's own
/// numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardrailDefaults {
    /// Executions in flight across all replicas.
    pub max_concurrent_actions: u32,
    /// Distinct services touched per window.
    pub max_affected_services: u32,
    /// Window of `max_affected_services`.
    pub affected_services_window: Duration,
    /// Consecutive failures that open a runbook's circuit.
    pub failure_threshold: u32,
    /// Time an open circuit waits before its half-open probe.
    pub recovery_timeout: Duration,
}

impl Default for GuardrailDefaults {
    fn default() -> Self {
        Self {
            max_concurrent_actions: 3,
            max_affected_services: 10,
            affected_services_window: Duration::from_secs(15 * 60),
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(300),
        }
    }
}

/// Engine settings (from the worker config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Replica identity written into outcomes.
    pub worker: String,
    /// Worker-wide shadow mode.
    pub dry_run: bool,
    /// Incidents older than this are never acted on.
    pub max_incident_age: Duration,
    /// Claim / lease duration, renewed while an action runs.
    pub lease: Duration,
    /// How long a handled incident id is remembered.
    pub idempotency_ttl: Duration,
    /// Guardrail defaults.
    pub guardrails: GuardrailDefaults,
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
            max_incident_age: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(60),
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            guardrails: GuardrailDefaults::default(),
            rate_window: Duration::from_secs(3600),
            approval_ttl: Duration::from_secs(3600),
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
struct LocalCeiling {
    windows: Mutex<HashMap<(String, String), VecDeque<i64>>>,
}

impl LocalCeiling {
    fn try_acquire(&self, scope: &Scope, max: u32, window_ms: i64, now_ms: i64) -> bool {
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

/// The lease-renewal task of one execution, aborted when dropped: if the execution future is
/// dropped (a drain that aborts it at the end of the grace, a panic in the task that ran it),
/// the task stops renewing instead of keeping the claim and the lease alive for ever.
struct RenewalTask(tokio::task::JoinHandle<()>);

impl Drop for RenewalTask {
    fn drop(&mut self) {
        self.0.abort();
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
    ceiling: LocalCeiling,
    demotions: Mutex<HashMap<String, (Option<String>, Instant)>>,
    notifier: Option<crate::notify::Notifier>,
}

/// Executions a runbook's verified success rate is computed over when it has no trust policy.
const DEFAULT_TRUST_WINDOW: u32 = 20;
/// How long a replica trusts its cached view of a runbook's demotion.
const DEMOTION_CACHE: Duration = Duration::from_secs(5);

/// Why a manual run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    /// No runbook with that id.
    #[error("no runbook {0:?} in the catalogue")]
    UnknownRunbook(String),
    /// The service or a context value is invalid for the runbook.
    #[error("{0}")]
    Invalid(String),
    /// The store failed (nothing was executed).
    #[error(transparent)]
    Engine(EngineError),
}

/// What answering an approval produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The store accepted the answer (approved or denied); false when refused.
    pub accepted: bool,
    /// `approved`, `denied`, or why it was refused.
    pub reason: String,
    /// Outcome events to publish (the audit of the answer and of any execution it unlocked).
    pub outcomes: Vec<Outcome>,
}

/// The idempotency key of the execution an approval unlocks. It starts with a control
/// character (U+001F), which no incident id may contain (incident.rs refuses them), so no
/// incident, however it is named, can claim or pre-record an approval's execution.
fn approval_claim(a: &Approval) -> String {
    format!("\u{1f}approval:{}", a.id)
}

/// SHA-256 of the rendered action (its outcome view, whose maps are ordered): what an approval
/// is bound to, so an answer cannot unlock a different action.
pub fn action_hash(action: &Action) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_string(&action.view()).unwrap_or_default();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An action whose guardrails `attempt` has reserved, with what running it needs.
#[derive(Clone, Copy)]
struct Reserved<'a> {
    /// The id the store's claim is under (the incident's, or its approval's).
    claim_id: &'a str,
    incident: &'a Incident,
    rb: &'a Runbook,
    action: &'a Action,
    vars: &'a Vars,
    attempt: &'a str,
    /// This execution is the circuit's half-open probe.
    probe: bool,
}

/// What happened to an execution's lease while it ran, as its renewal task saw it.
#[derive(Debug, Default)]
struct LeaseLoss {
    /// The blast-radius lease lapsed and could not be taken back (or the claim was taken over).
    slot_lost: AtomicBool,
    /// It held the half-open probe and lost it.
    probe_lost: AtomicBool,
}

/// What an execution ended as, before it is written into an outcome.
struct Execution {
    decision: Decision,
    success: Option<bool>,
    rolled_back: bool,
    reason: String,
    checks: Vec<CheckOutcome>,
    result: ExecResult,
    label: &'static str,
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
            ceiling: LocalCeiling::default(),
            demotions: Mutex::new(HashMap::new()),
            notifier: None,
        }
    }

    /// Also send every new outcome to a notification webhook (never blocking).
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    fn notify(&self, outcomes: &[Outcome]) {
        if let Some(n) = &self.notifier {
            outcomes.iter().for_each(|o| n.notify(o));
        }
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

    /// Set the trust-ladder gauges (`remediator_runbook_success_rate`, `_executions`, `_demoted`)
    /// of every runbook from the shared store, so every replica reports the same record, a
    /// promotion included, not only the replica that last executed the runbook.
    pub async fn refresh_trust_gauges(&self) -> Result<(), StoreError> {
        for rb in self.catalogue.runbooks() {
            let window = rb.trust.map(|t| t.window).unwrap_or(DEFAULT_TRUST_WINDOW);
            let stats = self.store.trust(&rb.id, window).await?;
            // As the engine sees it: only a runbook with a trust policy is ever demoted.
            let demoted = rb.trust.is_some() && self.store.demotion(&rb.id).await?.is_some();
            self.metrics.trust_rate.with_label_values(&[&rb.id]).set(stats.rate());
            self.metrics
                .trust_executions
                .with_label_values(&[&rb.id])
                .set(i64::from(stats.total));
            self.metrics
                .trust_demoted
                .with_label_values(&[&rb.id])
                .set(i64::from(demoted));
        }
        Ok(())
    }

    /// Handle one message. `attempt` must be unique per delivery and reused when the same
    /// delivery is retried after [`EngineError`], so a retry never reserves twice.
    pub async fn handle(&self, payload: &[u8], source: Option<&Source>, attempt: &str) -> Result<Handled, EngineError> {
        let started = Instant::now();
        let result = match incident::parse(payload) {
            Err((rejection, partial)) => {
                warn!(field = %rejection.field, reason = %rejection, source = ?source.map(|s| s.to_string()), "incident rejected");
                let o = self.rejected(&rejection, &partial);
                Ok(Handled {
                    outcomes: vec![o],
                    dead_letter: Some(rejection),
                    republished: false,
                })
            }
            Ok(incident) => {
                let span = tracing::info_span!("incident", id = %incident.id);
                self.process(&incident, source, attempt).instrument(span).await
            }
        };
        if let Ok(h) = &result {
            self.metrics
                .decision_seconds
                .with_label_values(&[] as &[&str])
                .observe(started.elapsed().as_secs_f64());
            if !h.republished {
                self.notify(&h.outcomes);
                for o in &h.outcomes {
                    self.metrics.incidents.with_label_values(&[o.decision.as_str()]).inc();
                    if let Some(g) = o.guardrail {
                        self.metrics.guardrail_blocks.with_label_values(&[g.as_str()]).inc();
                    }
                }
            }
        }
        result
    }

    async fn process(
        &self,
        incident: &Incident,
        source: Option<&Source>,
        attempt: &str,
    ) -> Result<Handled, EngineError> {
        let now = self.clock.now();
        let matched = self.catalogue.match_incident(incident).map(|(rb, _)| rb);
        let vars = Vars::from_incident(incident);
        let rendered = matched.map(|rb| render(rb, incident, &vars));
        let facts = Facts {
            invalid: None,
            duplicate: false,
            age: incident
                .detected_at
                .map(|d| (now - d).to_std().unwrap_or(Duration::ZERO)),
            ahead: incident
                .detected_at
                .and_then(|d| (d - now).to_std().ok())
                .unwrap_or(Duration::ZERO),
            max_age: self.settings.max_incident_age,
            root_cause: incident.root_cause.clone(),
            runbook: match matched {
                Some(rb) => Some(RunbookFacts {
                    demoted: self.demotion(rb).await,
                    ..runbook_facts(rb)
                }),
                None => None,
            },
            confidence: incident.confidence,
            render_error: rendered
                .as_ref()
                .and_then(|r| r.as_ref().err())
                .map(ToString::to_string),
            guardrail: GuardrailFact::Unknown,
            global_dry_run: self.settings.dry_run,
        };
        let action = rendered.as_ref().and_then(|r| r.as_ref().ok());
        let view = action.map(Action::view);
        let mut base = self.base(Some(incident), matched, now);
        base.action = view.clone();
        base.mode = matched.map(|rb| self.effective_mode(rb));

        let intent = match decision::decide(&facts) {
            Verdict::Final {
                decision,
                reason,
                guardrail,
            } => {
                let mut o = base;
                o.decision = decision;
                o.reason = reason;
                o.guardrail = guardrail;
                let outcomes = vec![o];
                let req = self.request(
                    incident,
                    source,
                    attempt,
                    Admission::Record {
                        outcomes: to_json(&outcomes),
                        ttl_ms: ms(self.settings.idempotency_ttl),
                    },
                );
                return match self.claim(&req).await? {
                    DecideAnswer::Recorded => Ok(Handled {
                        outcomes,
                        dead_letter: None,
                        republished: false,
                    }),
                    other => self.settle(other, incident, matched, now, attempt).await,
                };
            }
            Verdict::Proceed(intent) => intent,
        };
        // Proceed: a runbook matched and its action rendered.
        let (Some(rb), Some(action), Some(rf)) = (matched, action, facts.runbook.clone()) else {
            unreachable!("decide() proceeds only with a matched runbook and a rendered action")
        };
        let reason = decision::intent_reason(intent, &rf);
        self.proceed(incident, rb, action, &vars, intent, reason, base, source, attempt)
            .await
    }

    /// Rules 6-10 for a runbook and its rendered action: guardrails, then approval, suggestion,
    /// dry run or execution. `reason` is the outcome's reason when nothing intervenes.
    #[allow(clippy::too_many_arguments)]
    async fn proceed(
        &self,
        incident: &Incident,
        rb: &Runbook,
        action: &Action,
        vars: &Vars,
        intent: Intent,
        reason: String,
        base: Outcome,
        source: Option<&Source>,
        attempt: &str,
    ) -> Result<Handled, EngineError> {
        let now = base.decided_at;
        let scope = guard_scope(rb, incident, action);
        let limits = self.limits(rb);
        // A dry run holds the slots a real run would, but never the circuit's probe (it proves
        // nothing about the action, so it must neither close nor count for the circuit).
        let admission = if intent == Intent::DryRun {
            Admission::DryRun {
                scope: scope.clone(),
                limits: limits.clone(),
            }
        } else if intent.reserves() {
            Admission::Reserve {
                scope: scope.clone(),
                limits: limits.clone(),
            }
        } else {
            Admission::Check {
                scope: scope.clone(),
                limits: limits.clone(),
            }
        };
        let answer = self.claim(&self.request(incident, source, attempt, admission)).await?;
        let probe = match answer {
            DecideAnswer::Allowed { probe, conservative } => {
                if conservative {
                    warn!(runbook = %rb.id, "guardrail store lost its state recently: running conservatively");
                }
                probe
            }
            DecideAnswer::Blocked { guardrail, detail } => {
                let mut o = base;
                o.decision = Decision::Blocked;
                o.guardrail = Some(guardrail);
                o.reason = detail;
                return self.finalize(&incident.id, attempt, vec![o]).await;
            }
            other => return self.settle(other, incident, Some(rb), now, attempt).await,
        };
        let mut o = base;
        o.mode = Some(intent.mode());
        o.decision = intent.decision();
        o.reason = reason;
        match intent {
            Intent::Suggest => {}
            Intent::Approval => {
                // What a human approves is the action as the cluster makes it now (an undo's
                // revisions): pinned before it is shown and hashed.
                let action = match self.executor.pin(action).await {
                    Ok(pinned) => pinned,
                    Err(e) => {
                        o.decision = Decision::Aborted;
                        o.reason = format!(
                            "could not read the live state the approval must be bound to: {e}; no approval asked, \
                             nothing changed"
                        );
                        return self.finalize(&incident.id, attempt, vec![o]).await;
                    }
                };
                o.action = Some(action.view());
                let (approval, joined) = self.request_approval(incident, rb, &action).await;
                o.approval_id = Some(approval.id.clone());
                o.reason.push_str(&format!(
                    "; {} {}{} pending until {}",
                    if joined { "joins approval" } else { "approval" },
                    approval.id,
                    if joined {
                        " (same runbook, target and action, asked for by an earlier incident),"
                    } else {
                        ""
                    },
                    DateTime::<Utc>::from_timestamp_millis(approval.expires_at_ms)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default()
                ));
            }
            Intent::DryRun => {
                // Nothing ran: release the slots without any word to the circuit.
                self.finish_retrying(&FinishRequest {
                    incident_id: incident.id.clone(),
                    attempt: attempt.to_string(),
                    scope,
                    limits,
                    result: ExecResult::NotRun,
                })
                .await;
            }
            Intent::Execute => {
                let reserved = Reserved {
                    claim_id: &incident.id,
                    incident,
                    rb,
                    action,
                    vars,
                    attempt,
                    probe,
                };
                o = self.run_reserved(reserved, scope, limits, o).await;
            }
        }
        self.finalize(&incident.id, attempt, vec![o]).await
    }

    /// Execute an action whose guardrails are reserved (by `attempt`), release them, feed the
    /// circuit breaker and the trust ladder, and write the result into `o`.
    async fn run_reserved(&self, r: Reserved<'_>, scope: Scope, limits: Limits, mut o: Outcome) -> Outcome {
        let Reserved {
            claim_id,
            incident,
            rb,
            attempt,
            ..
        } = r;
        let window = ms(self.settings.rate_window) as i64;
        let now_ms = millis(self.clock.now());
        if !self.ceiling.try_acquire(&scope, rb.max_per_hour, window, now_ms) {
            self.finish_retrying(&FinishRequest {
                incident_id: claim_id.to_string(),
                attempt: attempt.to_string(),
                scope,
                limits,
                result: ExecResult::NotRun,
            })
            .await;
            o.decision = Decision::Blocked;
            o.guardrail = Some(Guardrail::RateLimit);
            o.reason = format!(
                "per-replica ceiling of {}/hour reached for {} on {} (the shared store may have lost state)",
                rb.max_per_hour,
                rb.id,
                incident.service()
            );
            return o;
        }
        let exec = self.execute(r).await;
        let fin = self
            .finish_retrying(&FinishRequest {
                incident_id: claim_id.to_string(),
                attempt: attempt.to_string(),
                scope,
                limits,
                result: exec.result,
            })
            .await;
        self.metrics
            .circuit_state
            .with_label_values(&[&rb.id])
            .set(fin.circuit.gauge());
        self.metrics.actions.with_label_values(&[&rb.id, exec.label]).inc();
        o.decision = exec.decision;
        o.success = exec.success;
        o.rolled_back = exec.rolled_back;
        o.reason = exec.reason;
        o.checks = exec.checks;
        if fin.opened {
            o.reason.push_str(&format!(
                "; circuit opened after {} consecutive failure{}",
                fin.failures,
                if fin.failures == 1 { "" } else { "s" }
            ));
        }
        if exec.result != ExecResult::NotRun {
            o.trust = self.update_trust(rb, exec.success == Some(true), &mut o.reason).await;
        }
        o
    }

    /// Feed one verified result to the runbook's record; demote it when its policy says so.
    /// The trust ladder is advisory bookkeeping after the fact: a store error here is logged,
    /// never allowed to lose the outcome.
    async fn update_trust(&self, rb: &Runbook, success: bool, reason: &mut String) -> Option<TrustView> {
        let window = rb.trust.map(|t| t.window).unwrap_or(DEFAULT_TRUST_WINDOW);
        let stats = match self.store.record_trust(&rb.id, success, window).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, runbook = %rb.id, "could not record the verified result");
                return None;
            }
        };
        self.metrics.trust_rate.with_label_values(&[&rb.id]).set(stats.rate());
        self.metrics
            .trust_executions
            .with_label_values(&[&rb.id])
            .set(i64::from(stats.total));
        let mut demoted = self.demotion(rb).await.is_some();
        if let Some(policy) = rb.trust {
            if rb.mode == Mode::Auto && !demoted && stats.total >= policy.min_runs && stats.rate() < policy.floor {
                let why = format!(
                    "verified success {:.0}% < floor {:.0}% over the last {} executions",
                    stats.rate() * 100.0,
                    policy.floor * 100.0,
                    stats.total
                );
                match self.store.demote(&rb.id, &why).await {
                    Ok(newly) => {
                        demoted = true;
                        self.cache_demotion(&rb.id, Some(why.clone()));
                        if newly {
                            warn!(runbook = %rb.id, %why, "runbook demoted from auto to approval");
                            reason.push_str(&format!("; runbook {} demoted from auto to approval: {why}", rb.id));
                        }
                    }
                    Err(e) => warn!(error = %e, runbook = %rb.id, "could not demote the runbook"),
                }
            }
        }
        self.metrics
            .trust_demoted
            .with_label_values(&[&rb.id])
            .set(i64::from(demoted));
        Some(TrustView {
            success_rate: stats.rate(),
            executions: stats.total,
            demoted,
        })
    }

    /// Why a runbook with a trust policy is demoted, if it is; cached a few seconds so a
    /// decision does not pay an extra store round trip (another replica's demotion is seen
    /// within [`DEMOTION_CACHE`]).
    async fn demotion(&self, rb: &Runbook) -> Option<String> {
        rb.trust?;
        if let Some((why, at)) = self.demotions.lock().unwrap_or_else(|e| e.into_inner()).get(&rb.id) {
            if at.elapsed() < DEMOTION_CACHE {
                return why.clone();
            }
        }
        match self.store.demotion(&rb.id).await {
            Ok(why) => {
                self.cache_demotion(&rb.id, why.clone());
                why
            }
            // Unknown: the guardrail call that follows fails closed anyway.
            Err(_) => None,
        }
    }

    fn cache_demotion(&self, runbook: &str, why: Option<String>) {
        self.demotions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(runbook.to_string(), (why, Instant::now()));
    }

    /// Create the pending approval an `approval_required` decision asks for, bound to the hash
    /// of the rendered action as the executor pinned it (an undo's live revisions included:
    /// [`Executor::pin`]; retried until the store answers: the decision is already taken),
    /// or join the one already pending for the same runbook, target and action (`true`): an alert
    /// storm asks a human once, not once per incident.
    async fn request_approval(&self, incident: &Incident, rb: &Runbook, action: &Action) -> (Approval, bool) {
        let view = action.view();
        let pending = Approval {
            id: self.ids.next(),
            incident_id: incident.id.clone(),
            runbook: rb.id.clone(),
            action_hash: action_hash(action),
            action: action.view().display,
            incident: serde_json::to_string(incident).unwrap_or_default(),
            created_at_ms: 0,
            expires_at_ms: 0,
            state: ApprovalState::Pending,
            approver: None,
            // Newline-separated: no runbook id, namespace, target or hash contains one. The
            // action hash is part of it: an incident joins only an approval for the very action
            // it would run, so what the approver sees is what every joined incident asked for.
            group: [
                rb.id.as_str(),
                view.namespace.as_deref().unwrap_or(""),
                &view.target,
                &action_hash(action),
            ]
            .join("\n"),
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            match self
                .store
                .create_approval(&pending, ms(self.settings.approval_ttl))
                .await
            {
                Ok(a) if a.id != pending.id => {
                    info!(approval = %a.id, incident = %incident.id, "incident joins the pending approval of its target");
                    return (a, true);
                }
                Ok(a) => {
                    self.metrics.approval_created();
                    return (a, false);
                }
                Err(e) => {
                    self.metrics.store_errors.inc();
                    warn!(error = %e, "could not store the approval; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Answer a pending approval (HTTP API, approvals topic, `remediator approve|deny`).
    ///
    /// The store accepts at most one answer per approval; expired, replayed, tampered and unknown
    /// approvals are refused, and every answer, refused or not, is audited as an outcome. An
    /// accepted approval re-checks freshness, re-renders the action (it must hash to what was
    /// approved) and goes through the guardrails again before executing: what was safe when the
    /// approval was asked for may not be safe any more.
    pub async fn answer(&self, approval_id: &str, answer: &Answer) -> Result<Answered, EngineError> {
        let answered = self.answer_inner(approval_id, answer).await?;
        self.notify(&answered.outcomes);
        Ok(answered)
    }

    async fn answer_inner(&self, approval_id: &str, answer: &Answer) -> Result<Answered, EngineError> {
        let now = self.clock.now();
        let refuse = |o: Outcome, why: String| {
            self.metrics.approvals.with_label_values(&["refused"]).inc();
            self.metrics.incidents.with_label_values(&[o.decision.as_str()]).inc();
            warn!(approval = approval_id, approver = %answer.approver, reason = %why, "approval answer refused");
            Ok(Answered {
                accepted: false,
                reason: why,
                outcomes: vec![o],
            })
        };
        let mut o = self.base(None, None, now);
        o.approval_id = Some(approval_id.to_string());
        o.approver = Some(answer.approver.clone());
        o.mode = Some(Mode::Approval);
        o.decision = Decision::Rejected;
        let valid = |v: &str| !v.is_empty() && v.chars().count() <= 128 && !v.chars().any(char::is_control);
        if !valid(approval_id) || !valid(&answer.approver) {
            o.approver = None;
            let why =
                "approval answer refused: approval id and approver must be 1..128 printable characters".to_string();
            o.reason = why.clone();
            return refuse(o, why);
        }
        let mut retried = false;
        let result = self.store.answer_approval(approval_id, answer).await.map_err(|e| {
            self.metrics.store_errors.inc();
            EngineError::StoreUnavailable(e.to_string())
        })?;
        let describe = |a: &Approval, o: &mut Outcome| {
            o.incident_id = Some(a.incident_id.clone());
            o.runbook_id = Some(a.runbook.clone());
            if let Ok(i) = incident::parse(a.incident.as_bytes()) {
                o.service = Some(i.service().to_string());
                o.root_cause = Some(i.root_cause.clone());
                o.confidence = Some(i.confidence);
            }
        };
        let a = match result {
            AnswerResult::NotFound => {
                let why = format!("approval answer refused: approval {approval_id} does not exist");
                o.reason = why.clone();
                return refuse(o, why);
            }
            AnswerResult::Expired(a) => {
                describe(&a, &mut o);
                o.decision = Decision::Expired;
                let why = format!(
                    "approval answer refused: approval {approval_id} expired at {}",
                    DateTime::<Utc>::from_timestamp_millis(a.expires_at_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                );
                o.reason = why.clone();
                return refuse(o, why);
            }
            AnswerResult::AlreadyAnswered(a) => {
                describe(&a, &mut o);
                let why = format!(
                    "approval answer refused: approval {approval_id} was already {} by {} (single use)",
                    a.state.as_str(),
                    a.approver.as_deref().unwrap_or("someone")
                );
                o.reason = why.clone();
                return refuse(o, why);
            }
            AnswerResult::Tampered(a) => {
                describe(&a, &mut o);
                let why = format!(
                    "approval answer refused: the answer names action hash {}, the approval is bound to {}",
                    answer.action_hash.as_deref().unwrap_or("-"),
                    a.action_hash
                );
                o.reason = why.clone();
                return refuse(o, why);
            }
            AnswerResult::Accepted(a) => a,
            // A retry of this approver's accepted answer (its first handling failed after the
            // store took it: a store error before the claim, an unpublished outcome): finish it.
            // The execution claim under the approval's id still allows one run; a finished one
            // answers with its recorded outcomes, which are published again.
            AnswerResult::Repeated(a) => {
                info!(approval = approval_id, approver = %answer.approver, "approval answer retried; finishing it");
                retried = true;
                a
            }
        };
        describe(&a, &mut o);
        o.action = None;
        if !retried {
            self.metrics.approval_answered();
        }
        if a.state == ApprovalState::Denied {
            if !retried {
                self.metrics.approvals.with_label_values(&["denied"]).inc();
            }
            o.decision = Decision::Manual;
            o.reason = format!("approval {} denied by {}; not executed", a.id, answer.approver);
            let outcomes = self.finalize_answer(&a, vec![o]).await;
            return Ok(Answered {
                accepted: true,
                reason: "denied".into(),
                outcomes,
            });
        }
        if !retried {
            self.metrics.approvals.with_label_values(&["approved"]).inc();
        }
        let outcomes = self.execute_approved(&a, &answer.approver, o).await?;
        Ok(Answered {
            accepted: true,
            reason: "approved".into(),
            outcomes,
        })
    }

    /// `remediator execute`: a human runs a runbook by hand, through the same rendering, checks,
    /// guardrails, execution, verification and audit as an automatic run. The person running it
    /// is its approver, so an approval-mode runbook runs without asking again; the incident id is
    /// `manual-<uuid>`, its root cause the runbook's first trigger, its confidence 1.
    pub async fn execute_manual(
        &self,
        runbook: &str,
        service: &str,
        context: BTreeMap<String, String>,
        dry_run: bool,
        operator: &str,
    ) -> Result<Handled, ManualError> {
        let rb = self
            .catalogue
            .get(runbook)
            .ok_or_else(|| ManualError::UnknownRunbook(runbook.to_string()))?;
        let json = serde_json::json!({
            "id": format!("manual-{}", uuid::Uuid::new_v4()),
            "root_cause": rb.triggers.first().cloned().unwrap_or_default(),
            "confidence": 1.0,
            "services": [service],
            "context": context,
        });
        let incident =
            incident::parse(json.to_string().as_bytes()).map_err(|(r, _)| ManualError::Invalid(r.to_string()))?;
        let vars = Vars::from_incident(&incident);
        let action = render(rb, &incident, &vars).map_err(|e| ManualError::Invalid(e.to_string()))?;
        let intent = if dry_run || rb.dry_run || self.settings.dry_run {
            Intent::DryRun
        } else {
            Intent::Execute
        };
        let mut base = self.base(Some(&incident), Some(rb), self.clock.now());
        base.action = Some(action.view());
        base.approver = Some(operator.to_string());
        let reason = format!("manual run of {} by {operator}", rb.id);
        let attempt = uuid::Uuid::new_v4().to_string();
        let mut handled = self
            .proceed(&incident, rb, &action, &vars, intent, reason, base, None, &attempt)
            .await
            .map_err(ManualError::Engine)?;
        for o in &mut handled.outcomes {
            if o.decision == Decision::Executed {
                o.reason = format!("manual run by {operator}: {}", o.reason);
            }
            self.metrics.incidents.with_label_values(&[o.decision.as_str()]).inc();
        }
        self.notify(&handled.outcomes);
        Ok(handled)
    }

    /// An audit outcome for an approval answer refused before it reached the store (a malformed
    /// message on the approvals topic).
    pub fn refused_answer(&self, approval_id: Option<&str>, approver: Option<&str>, reason: &str) -> Outcome {
        let mut o = self.base(None, None, self.clock.now());
        o.decision = Decision::Rejected;
        o.mode = Some(Mode::Approval);
        o.approval_id = approval_id.map(str::to_string);
        o.approver = approver.filter(|a| !a.is_empty()).map(str::to_string);
        o.reason = format!("approval answer refused: {reason}");
        self.metrics.approvals.with_label_values(&["refused"]).inc();
        o
    }

    /// An audit outcome for an answer on the approvals topic whose signature (or action hash) is
    /// missing or wrong: refused before the store, counted as `unauthenticated`. The approver it
    /// claims is only quoted in the reason: nobody proved it.
    pub fn unauthenticated_answer(&self, approval_id: &str, claimed_approver: &str, reason: &str) -> Outcome {
        let mut o = self.base(None, None, self.clock.now());
        o.decision = Decision::Rejected;
        o.mode = Some(Mode::Approval);
        let valid = |v: &str| !v.is_empty() && v.chars().count() <= 128 && !v.chars().any(char::is_control);
        o.approval_id = Some(approval_id.to_string()).filter(|a| valid(a));
        o.reason = format!(
            "approval answer refused: {reason}; claimed approver {:?}; not executed",
            crate::incident::shorten(claimed_approver)
        );
        self.metrics.approvals.with_label_values(&["unauthenticated"]).inc();
        o
    }

    /// Run an approved action: re-check freshness, the action's binding and the guardrails.
    async fn execute_approved(
        &self,
        a: &Approval,
        approver: &str,
        mut o: Outcome,
    ) -> Result<Vec<Outcome>, EngineError> {
        let now = self.clock.now();
        o.decided_at = now;
        let incident = match incident::parse(a.incident.as_bytes()) {
            Ok(i) => i,
            Err((r, _)) => {
                o.decision = Decision::Aborted;
                o.reason = format!("approved by {approver}, but the stored incident is unreadable: {r}");
                return Ok(self.finalize_answer(a, vec![o]).await);
            }
        };
        let Some(rb) = self.catalogue.get(&a.runbook) else {
            o.decision = Decision::Aborted;
            o.reason = format!("approved by {approver}, but runbook {} no longer exists", a.runbook);
            return Ok(self.finalize_answer(a, vec![o]).await);
        };
        let vars = Vars::from_incident(&incident);
        let action = match render(rb, &incident, &vars) {
            Ok(action) => action,
            Err(e) => {
                o.decision = Decision::Aborted;
                o.reason = format!("approved by {approver}, but the action no longer renders: {e}");
                return Ok(self.finalize_answer(a, vec![o]).await);
            }
        };
        // Pinned again as when the approval was asked for: an undo whose deployment was deployed
        // (or undone) since then restores something else now, and hashes differently.
        let action = match self.executor.pin(&action).await {
            Ok(pinned) if action_hash(&pinned) == a.action_hash => pinned,
            Ok(pinned) => {
                o.decision = Decision::Aborted;
                o.reason = format!(
                    "approved by {approver}, but runbook {} now renders a different action than the one approved \
                     (approved: {}; now: {}); not executed (ask again)",
                    rb.id,
                    a.action,
                    pinned.view().display
                );
                return Ok(self.finalize_answer(a, vec![o]).await);
            }
            Err(e) => {
                o.decision = Decision::Aborted;
                o.reason = format!(
                    "approved by {approver}, but the live state the approval is bound to could not be read: {e}; \
                     not executed (ask again)"
                );
                return Ok(self.finalize_answer(a, vec![o]).await);
            }
        };
        o.action = Some(action.view());
        if let Some(age) = incident
            .detected_at
            .map(|d| (now - d).to_std().unwrap_or(Duration::ZERO))
        {
            if age > self.settings.max_incident_age {
                o.decision = Decision::Expired;
                o.reason = format!(
                    "approved by {approver}, but the incident is {} old, older than max_incident_age {}: \
                     never act on stale data",
                    decision::human(age),
                    decision::human(self.settings.max_incident_age)
                );
                return Ok(self.finalize_answer(a, vec![o]).await);
            }
        }
        // The execution is claimed under its own id: the incident itself is already recorded
        // (approval_required), and an approval is single use.
        let claim_id = approval_claim(a);
        let attempt = uuid::Uuid::new_v4().to_string();
        let scope = guard_scope(rb, &incident, &action);
        let limits = self.limits(rb);
        // An approval never overrides shadow mode: on a dry-run worker or for a dry-run runbook
        // the approved action is checked and reserved like any dry run (never the circuit's
        // probe), recorded as `dry_run` and never handed to the executor.
        let dry_run = rb.dry_run || self.settings.dry_run;
        let admission = if dry_run {
            Admission::DryRun {
                scope: scope.clone(),
                limits: limits.clone(),
            }
        } else {
            Admission::Reserve {
                scope: scope.clone(),
                limits: limits.clone(),
            }
        };
        let req = DecideRequest {
            incident_id: claim_id.clone(),
            attempt: attempt.clone(),
            worker: self.settings.worker.clone(),
            source: None,
            lease_ms: ms(self.settings.lease),
            admission,
        };
        match self.claim(&req).await? {
            DecideAnswer::Allowed { .. } if dry_run => {
                // Nothing ran: release the slots without any word to the circuit.
                self.finish_retrying(&FinishRequest {
                    incident_id: claim_id.clone(),
                    attempt: attempt.clone(),
                    scope,
                    limits,
                    result: ExecResult::NotRun,
                })
                .await;
                o.decision = Decision::DryRun;
                o.reason = format!(
                    "approved by {approver}; dry run ({}): guardrails checked and reserved, action rendered but not executed",
                    if rb.dry_run { "runbook dry_run" } else { "worker dry_run" }
                );
            }
            DecideAnswer::Allowed { probe, .. } => {
                let reserved = Reserved {
                    claim_id: &claim_id,
                    incident: &incident,
                    rb,
                    action: &action,
                    vars: &vars,
                    attempt: &attempt,
                    probe,
                };
                o = self.run_reserved(reserved, scope, limits, o).await;
                if o.decision == Decision::Executed {
                    o.reason = format!("approved by {approver}; {}", o.reason);
                }
            }
            DecideAnswer::Blocked { guardrail, detail } => {
                o.decision = Decision::Blocked;
                o.guardrail = Some(guardrail);
                o.reason = format!("approved by {approver}, but the guardrails changed since: {detail}");
            }
            DecideAnswer::Duplicate { outcomes, .. } => {
                return Ok(serde_json::from_str(&outcomes).unwrap_or_default());
            }
            other => {
                o.decision = Decision::Aborted;
                o.reason = format!("approved by {approver}, but the execution claim was refused: {other:?}");
            }
        }
        self.metrics.incidents.with_label_values(&[o.decision.as_str()]).inc();
        if let Some(g) = o.guardrail {
            self.metrics.guardrail_blocks.with_label_values(&[g.as_str()]).inc();
        }
        Ok(self.finalize(&claim_id, &attempt, vec![o]).await?.outcomes)
    }

    /// Record the outcome of an answer that did not reach the guardrails (denied, aborted,
    /// expired) under the approval's claim id, so its audit trail is complete. When an earlier
    /// try of the same answer recorded one already, that one is returned (and published again)
    /// instead: a retry repeats the audit, it does not add a different one.
    ///
    /// When another try of the same answer holds the execution claim (in progress) or was
    /// interrupted while executing, this try's own outcome ("expired", "aborted; not executed")
    /// would be false: the action runs or may have run. It says so instead, and records
    /// nothing of its own (an interrupted claim gets its final `aborted` outcome, as any
    /// interrupted incident does).
    async fn finalize_answer(&self, a: &Approval, mut outcomes: Vec<Outcome>) -> Vec<Outcome> {
        let attempt = uuid::Uuid::new_v4().to_string();
        let req = DecideRequest {
            incident_id: approval_claim(a),
            attempt: attempt.clone(),
            worker: self.settings.worker.clone(),
            source: None,
            lease_ms: ms(self.settings.lease),
            admission: Admission::Record {
                outcomes: to_json(&outcomes),
                ttl_ms: ms(self.settings.idempotency_ttl),
            },
        };
        // Best effort: the answer itself is already final in the store.
        match self.store.decide(&req).await {
            Ok(DecideAnswer::Duplicate { outcomes: recorded, .. }) => {
                if let Ok(recorded) = serde_json::from_str::<Vec<Outcome>>(&recorded) {
                    if !recorded.is_empty() {
                        return recorded;
                    }
                }
            }
            Ok(DecideAnswer::InProgress { worker, .. }) => {
                for o in &mut outcomes {
                    o.decision = Decision::Duplicate;
                    o.guardrail = None;
                    o.reason = format!(
                        "approval {} is being executed by another try of this answer (worker {worker}); \
                         its outcome is published when it finishes; this try did nothing",
                        a.id
                    );
                }
            }
            Ok(DecideAnswer::Interrupted { worker }) => {
                for o in &mut outcomes {
                    o.decision = Decision::Aborted;
                    o.guardrail = None;
                    o.reason = format!(
                        "approval {}: an earlier try of this answer by {worker} was interrupted while executing; \
                         its effect is unknown and an action is never run twice, so it is not retried",
                        a.id
                    );
                }
                match self.finalize(&approval_claim(a), &attempt, outcomes.clone()).await {
                    Ok(h) => outcomes = h.outcomes,
                    Err(e) => warn!(error = %e, approval = %a.id, "could not record the answer's outcome"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, approval = %a.id, "could not record the answer's outcome"),
        }
        for o in &outcomes {
            self.metrics.incidents.with_label_values(&[o.decision.as_str()]).inc();
        }
        outcomes
    }

    /// Answers of the store that end handling without a new decision of ours.
    async fn settle(
        &self,
        answer: DecideAnswer,
        incident: &Incident,
        runbook: Option<&Runbook>,
        now: DateTime<Utc>,
        attempt: &str,
    ) -> Result<Handled, EngineError> {
        match answer {
            DecideAnswer::Duplicate { outcomes, same_source } => {
                let recorded: Vec<Outcome> = serde_json::from_str(&outcomes).unwrap_or_default();
                if same_source && !recorded.is_empty() {
                    info!(
                        count = recorded.len(),
                        "redelivered incident: re-publishing its recorded outcome"
                    );
                    self.metrics.outcomes_republished.inc_by(recorded.len() as u64);
                    return Ok(Handled {
                        outcomes: recorded,
                        dead_letter: None,
                        republished: true,
                    });
                }
                let mut o = self.base(Some(incident), runbook, now);
                o.decision = Decision::Duplicate;
                o.reason = match recorded.last() {
                    Some(prev) => format!(
                        "incident id already handled ({} by {} at {}); not acting again",
                        prev.decision.as_str(),
                        prev.worker,
                        prev.decided_at.to_rfc3339()
                    ),
                    None => "incident id already handled; not acting again".into(),
                };
                Ok(Handled {
                    outcomes: vec![o],
                    dead_letter: None,
                    republished: false,
                })
            }
            DecideAnswer::Interrupted { worker } => {
                let mut o = self.base(Some(incident), runbook, now);
                o.decision = Decision::Aborted;
                o.reason = format!(
                    "a previous attempt by {worker} was interrupted while executing; its effect is unknown and an \
                     action is never run twice, so it is not retried"
                );
                self.finalize(&incident.id, attempt, vec![o]).await
            }
            other => Err(EngineError::StoreUnavailable(format!(
                "unexpected store answer {other:?}"
            ))),
        }
    }

    /// Run pre-checks, the action, post-checks and, on failure, the rollback.
    async fn execute(&self, r: Reserved<'_>) -> Execution {
        let Reserved {
            claim_id,
            incident,
            rb,
            action,
            vars,
            attempt,
            probe,
        } = r;
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let (renewal, lease) = self.spawn_renewal(claim_id, attempt, &rb.id, probe);
        let mut vars = vars.clone();
        let mut checks = Vec::new();
        let action_id = format!("{}-{}", rb.id, attempt);
        fn ctx<'a>(
            i: &'a Incident,
            rb: &'a Runbook,
            a: &'a Action,
            vars: &'a Vars,
            id: &'a str,
            rollback: bool,
        ) -> ExecContext<'a> {
            ExecContext {
                incident: i,
                runbook: &rb.id,
                action: a,
                vars,
                action_id: id,
                rollback,
            }
        }
        let mut exec = 'run: {
            let pre_ctx = ctx(incident, rb, action, &vars, &action_id, false);
            if let Some(failure) = self
                .run_checks(&rb.pre_checks, Phase::Pre, &pre_ctx, true, &mut checks)
                .await
            {
                break 'run Execution {
                    decision: Decision::Aborted,
                    success: None,
                    rolled_back: false,
                    reason: format!("{failure}; nothing changed"),
                    checks,
                    result: ExecResult::NotRun,
                    label: "aborted",
                };
            }
            let report = match self
                .executor
                .execute(action, &ctx(incident, rb, action, &vars, &action_id, false))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    break 'run Execution {
                        decision: Decision::Executed,
                        success: Some(false),
                        rolled_back: false,
                        reason: format!("action {} failed: {e}", action.kind()),
                        checks,
                        result: ExecResult::Failure,
                        label: "error",
                    };
                }
            };
            if let Some(why) = report.refused {
                break 'run Execution {
                    decision: Decision::Aborted,
                    success: None,
                    rolled_back: false,
                    reason: format!("action {} refused: {why}; nothing changed", action.kind()),
                    checks,
                    result: ExecResult::NotRun,
                    label: "aborted",
                };
            }
            for (k, v) in &report.captured {
                vars.capture(k, v.clone());
            }
            let post_ctx = ctx(incident, rb, action, &vars, &action_id, false);
            let failed = self
                .run_checks(&rb.post_checks, Phase::Post, &post_ctx, false, &mut checks)
                .await;
            let Some(failure) = failed else {
                break 'run Execution {
                    decision: Decision::Executed,
                    success: Some(true),
                    rolled_back: false,
                    reason: format!(
                        "{}; verified by {} post-check{}{}",
                        report.detail,
                        rb.post_checks.len(),
                        if rb.post_checks.len() == 1 { "" } else { "s" },
                        if probe {
                            " (half-open probe succeeded: circuit closed)"
                        } else {
                            ""
                        }
                    ),
                    checks,
                    result: ExecResult::Success,
                    label: "success",
                };
            };
            let Some(rollback) = &rb.rollback else {
                break 'run Execution {
                    decision: Decision::Executed,
                    success: Some(false),
                    rolled_back: false,
                    reason: format!("{failure}; no rollback defined (self-healing action)"),
                    checks,
                    result: ExecResult::Failure,
                    label: "failure",
                };
            };
            let rendered = rollback.render(&vars, &rb.scope.namespaces);
            let outcome = match rendered {
                Err(e) => Err(format!("rollback not rendered: {e}")),
                Ok(rb_action) => self
                    .executor
                    .execute(&rb_action, &ctx(incident, rb, action, &vars, &action_id, true))
                    .await
                    .map_err(|e| format!("rollback failed: {e}"))
                    .and_then(|r| match &r.refused {
                        Some(why) => Err(format!("rollback refused: {why}")),
                        None => Ok(r),
                    }),
            };
            let outcome = match outcome {
                Ok(report) => {
                    // Never assume the rollback worked either.
                    let rb_ctx = ctx(incident, rb, action, &vars, &action_id, true);
                    let unverified = self
                        .run_checks(&rb.rollback_checks, Phase::Rollback, &rb_ctx, false, &mut checks)
                        .await;
                    unverified.map_or(Ok(report), Err)
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => Execution {
                    decision: Decision::Executed,
                    success: Some(false),
                    rolled_back: true,
                    reason: format!("{failure}; rolled back ({})", r.detail),
                    checks,
                    result: ExecResult::Failure,
                    label: "rolled_back",
                },
                Err(e) => Execution {
                    decision: Decision::Executed,
                    success: Some(false),
                    rolled_back: false,
                    reason: format!("{failure}; {e}"),
                    checks,
                    result: ExecResult::ForceOpen,
                    label: "rollback_failed",
                },
            }
        };
        // A runbook that acts automatically with nothing to undo it says so on every execution.
        if let Some(why) = &rb.irreversible_override {
            exec.reason
                .push_str(&format!(" [runbook override allow_irreversible_auto: {why}]"));
        }
        drop(renewal);
        if lease.slot_lost.load(Ordering::SeqCst) {
            exec.reason.push_str(
                "; its blast-radius slot lapsed during the action (lease renewals failed for longer than \
                 guardrails.lease) and could not be taken back: max_concurrent_actions did not hold for it",
            );
        }
        if lease.probe_lost.load(Ordering::SeqCst) {
            // Its result no longer speaks for the circuit (finish.lua), so it closed nothing.
            exec.reason = exec.reason.replace(" (half-open probe succeeded: circuit closed)", "");
            exec.reason
                .push_str("; its half-open probe lapsed during the action and another execution may have probed");
        }
        self.metrics.in_flight.dec();
        self.metrics
            .action_seconds
            .with_label_values(&[&rb.id])
            .observe(started.elapsed().as_secs_f64());
        info!(runbook = %rb.id, result = exec.label, reason = %exec.reason, "execution finished");
        exec
    }

    /// Run `specs` in order, appending each result to `checks`; the first failure, described,
    /// is returned. Pre-checks stop at it (`stop_at_failure`); verification runs every check so
    /// the outcome shows the whole picture.
    async fn run_checks(
        &self,
        specs: &[CheckSpec],
        phase: Phase,
        ctx: &ExecContext<'_>,
        stop_at_failure: bool,
        checks: &mut Vec<CheckOutcome>,
    ) -> Option<String> {
        let what = match phase {
            Phase::Pre => "pre-check",
            Phase::Post => "post-check",
            Phase::Rollback => "rollback check",
        };
        let mut failed = None;
        for c in specs {
            let r = self.executor.check(c, ctx).await;
            if !r.passed && failed.is_none() {
                failed = Some(format!("{what} {} failed: {}", c.name(), r.detail));
            }
            checks.push(CheckOutcome {
                phase,
                name: c.name().into(),
                passed: r.passed,
                detail: r.detail,
            });
            if failed.is_some() && stop_at_failure {
                break;
            }
        }
        failed
    }

    /// Keep the claim, the blast-radius lease and any probe alive while an action runs.
    ///
    /// Renewed every third of the lease; after a store error, again promptly (backoff from
    /// 100 ms, at most a third of the lease), so a short outage does not cost the lease. If the
    /// lease lapsed anyway, the store takes it back when `max_concurrent_actions` still allows;
    /// otherwise the loss is counted (`remediator_lease_lapses_total{result="lost"}`) and written
    /// into the outcome through the returned [`LeaseLoss`].
    fn spawn_renewal(
        &self,
        incident_id: &str,
        attempt: &str,
        runbook: &str,
        probe: bool,
    ) -> (RenewalTask, Arc<LeaseLoss>) {
        let store = Arc::clone(&self.store);
        let metrics = self.metrics.clone();
        let lease = self.settings.lease;
        let req = RenewRequest {
            incident_id: incident_id.to_string(),
            attempt: attempt.to_string(),
            runbook: runbook.to_string(),
            lease_ms: ms(lease),
            max_concurrent_actions: self.settings.guardrails.max_concurrent_actions,
        };
        let loss = Arc::new(LeaseLoss::default());
        let seen = Arc::clone(&loss);
        let every = lease / 3;
        let task = tokio::spawn(async move {
            let first_retry = Duration::from_millis(100).min(every);
            let (mut wait, mut backoff, mut holds_probe) = (every, first_retry, probe);
            loop {
                tokio::time::sleep(wait).await;
                wait = every;
                match store.renew(&req).await {
                    Ok(Renewal::Renewed) => backoff = first_retry,
                    Ok(Renewal::Reacquired { probe }) => {
                        backoff = first_retry;
                        warn!(incident_id = %req.incident_id, "execution lease lapsed and was re-acquired");
                        metrics.lease_lapses.with_label_values(&["reacquired"]).inc();
                        if holds_probe && !probe {
                            holds_probe = false;
                            seen.probe_lost.store(true, Ordering::SeqCst);
                        }
                    }
                    Ok(answer @ (Renewal::Lapsed | Renewal::Stale)) => {
                        backoff = first_retry;
                        if !seen.slot_lost.swap(true, Ordering::SeqCst) {
                            warn!(incident_id = %req.incident_id, ?answer, "execution lease lapsed and could not be re-acquired");
                            metrics.lease_lapses.with_label_values(&["lost"]).inc();
                        }
                        if holds_probe {
                            holds_probe = false;
                            seen.probe_lost.store(true, Ordering::SeqCst);
                        }
                        if answer == Renewal::Stale {
                            // Another attempt owns the incident now: nothing of ours to renew.
                            return;
                        }
                    }
                    Err(e) => {
                        metrics.store_errors.inc();
                        warn!(error = %e, "could not renew the execution lease; retrying");
                        wait = backoff;
                        backoff = (backoff * 2).min(every);
                    }
                }
            }
        });
        (RenewalTask(task), loss)
    }

    /// Record the final outcomes (retrying: this incident has been decided) and return them.
    async fn finalize(
        &self,
        record_id: &str,
        attempt: &str,
        mut outcomes: Vec<Outcome>,
    ) -> Result<Handled, EngineError> {
        let now = self.clock.now();
        for o in &mut outcomes {
            o.finished_at = now.max(o.decided_at);
            o.duration_ms = (o.finished_at - o.decided_at).num_milliseconds().max(0) as u64;
        }
        let json = to_json(&outcomes);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self
                .store
                .record(record_id, attempt, &json, ms(self.settings.idempotency_ttl))
                .await
            {
                Ok(()) => {
                    return Ok(Handled {
                        outcomes,
                        dead_letter: None,
                        republished: false,
                    })
                }
                Err(e) => {
                    self.metrics.store_errors.inc();
                    warn!(error = %e, "could not record the outcome; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Release a reservation, retrying until the store answers: an unreleased execution would
    /// keep its blast-radius slot until the lease expires and miss the circuit breaker.
    async fn finish_retrying(&self, req: &FinishRequest) -> crate::guardrails::FinishAnswer {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.finish(req).await {
                Ok(a) => return a,
                Err(e) => {
                    self.metrics.store_errors.inc();
                    warn!(error = %e, "could not release the reservation; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Ask the store, waiting while another replica holds a live claim on the incident.
    async fn claim(&self, req: &DecideRequest) -> Result<DecideAnswer, EngineError> {
        loop {
            match self.store.decide(req).await {
                Ok(DecideAnswer::InProgress { worker, retry_after_ms }) => {
                    info!(%worker, retry_after_ms, "incident claimed by another replica; waiting");
                    tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(50, 1000))).await;
                }
                Ok(a) => return Ok(a),
                Err(e) => {
                    self.metrics.store_errors.inc();
                    return Err(match e {
                        StoreError::Unavailable(m) | StoreError::Protocol(m) => EngineError::StoreUnavailable(m),
                    });
                }
            }
        }
    }

    fn request(
        &self,
        incident: &Incident,
        source: Option<&Source>,
        attempt: &str,
        admission: Admission,
    ) -> DecideRequest {
        DecideRequest {
            incident_id: incident.id.clone(),
            attempt: attempt.to_string(),
            worker: self.settings.worker.clone(),
            source: source.map(ToString::to_string),
            lease_ms: ms(self.settings.lease),
            admission,
        }
    }

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
            record_ttl_ms: ms(self.settings.idempotency_ttl),
        }
    }

    fn effective_mode(&self, rb: &Runbook) -> Mode {
        match rb.mode {
            Mode::Auto if rb.dry_run || self.settings.dry_run => Mode::DryRun,
            m => m,
        }
    }

    fn base(&self, incident: Option<&Incident>, runbook: Option<&Runbook>, decided_at: DateTime<Utc>) -> Outcome {
        let finished_at = self.clock.now().max(decided_at);
        Outcome {
            schema_version: SCHEMA_VERSION,
            event_id: self.ids.next(),
            incident_id: incident.map(|i| i.id.clone()),
            service: incident.map(|i| i.service().to_string()),
            root_cause: incident.map(|i| i.root_cause.clone()),
            confidence: incident.map(|i| i.confidence),
            runbook_id: runbook.map(|r| r.id.clone()),
            decision: Decision::Manual,
            success: None,
            rolled_back: false,
            reason: String::new(),
            guardrail: None,
            action: None,
            checks: Vec::new(),
            approval_id: None,
            approver: None,
            trust: None,
            mode: None,
            worker: self.settings.worker.clone(),
            decided_at,
            finished_at,
            duration_ms: (finished_at - decided_at).num_milliseconds().max(0) as u64,
        }
    }

    fn rejected(&self, rejection: &Rejection, partial: &Partial) -> Outcome {
        let now = self.clock.now();
        let mut o = self.base(None, None, now);
        o.incident_id = partial.id.clone();
        o.service = partial.service.clone();
        o.root_cause = partial.root_cause.clone();
        o.decision = Decision::Rejected;
        o.reason = format!("invalid incident: {rejection}");
        o
    }
}

fn to_json(outcomes: &[Outcome]) -> String {
    serde_json::to_string(outcomes).unwrap_or_else(|_| "[]".into())
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
    }
}

/// What the guardrails hold a decision to: the runbook, the normalised service, and the object
/// the action touches (`<namespace>/<kind>/<name>`), so the rate limit and cooldown cannot be
/// walked past by varying the incident's free-text `service` for the same object.
fn guard_scope(rb: &Runbook, incident: &Incident, action: &Action) -> Scope {
    let view = action.view();
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

    /// Dropping the execution (a drain abort, a panic) stops its renewal task.
    #[tokio::test]
    async fn renewal_task_is_aborted_when_dropped() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = RenewalTask(tokio::spawn(async move {
            let _alive = tx;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
        drop(task);
        let ended = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(
            matches!(ended, Ok(Err(_))),
            "the task ended (its sender dropped): {ended:?}"
        );
    }
}
