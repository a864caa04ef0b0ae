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
    Admission, DecideAnswer, DecideRequest, ExecResult, FinishRequest, Guardrail, GuardrailStore, Limits, Scope,
    StoreError,
};
use crate::incident::{self, Incident, Partial, Rejection};
use crate::metrics::Metrics;
use crate::outcome::{CheckOutcome, Decision, Mode, Outcome, Phase, SCHEMA_VERSION};
use crate::runbook::template::{RenderError, Vars};
use crate::runbook::{Action, Catalogue, Risk, Runbook};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Worker-wide guardrail defaults (DESIGN.md §2), combined with each runbook's own numbers.
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
#[derive(Debug, Default)]
struct LocalCeiling {
    windows: Mutex<HashMap<(String, String), VecDeque<i64>>>,
}

impl LocalCeiling {
    fn try_acquire(&self, runbook: &str, service: &str, max: u32, window_ms: i64, now_ms: i64) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let q = w.entry((runbook.to_string(), service.to_string())).or_default();
        while q.front().is_some_and(|t| *t <= now_ms - window_ms) {
            q.pop_front();
        }
        if q.len() >= max as usize {
            return false;
        }
        q.push_back(now_ms);
        true
    }
}

/// The remediation engine: everything needed to take one incident to its outcome.
pub struct Engine {
    catalogue: Arc<Catalogue>,
    store: Arc<dyn GuardrailStore>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    metrics: Metrics,
    ids: EventIds,
    ceiling: LocalCeiling,
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
        store: Arc<dyn GuardrailStore>,
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
    pub fn store(&self) -> &Arc<dyn GuardrailStore> {
        &self.store
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
            max_age: self.settings.max_incident_age,
            root_cause: incident.root_cause.clone(),
            runbook: matched.map(runbook_facts),
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
        let (Some(rb), Some(action)) = (matched, action) else {
            unreachable!("decide() proceeds only with a matched runbook and a rendered action")
        };
        let scope = Scope {
            runbook: rb.id.clone(),
            service: incident.service().to_string(),
        };
        let limits = self.limits(rb);
        let admission = if intent.reserves() {
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
                return self.finalize(incident, attempt, vec![o]).await;
            }
            other => return self.settle(other, incident, matched, now, attempt).await,
        };
        let rf = runbook_facts(rb);
        let mut o = base;
        o.mode = Some(intent.mode());
        o.decision = intent.decision();
        o.reason = decision::intent_reason(intent, &rf);
        match intent {
            Intent::Approval | Intent::Suggest => {}
            Intent::DryRun => {
                self.finish_retrying(&FinishRequest {
                    incident_id: incident.id.clone(),
                    attempt: attempt.to_string(),
                    scope,
                    limits,
                    result: ExecResult::Success,
                })
                .await;
            }
            Intent::Execute => {
                let window = ms(self.settings.rate_window) as i64;
                if !self.ceiling.try_acquire(
                    &rb.id,
                    incident.service(),
                    rb.max_per_hour,
                    window,
                    millis(self.clock.now()),
                ) {
                    self.finish_retrying(&FinishRequest {
                        incident_id: incident.id.clone(),
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
                    return self.finalize(incident, attempt, vec![o]).await;
                }
                let exec = self.execute(incident, rb, action, &vars, attempt, probe).await;
                let fin = self
                    .finish_retrying(&FinishRequest {
                        incident_id: incident.id.clone(),
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
            }
        }
        self.finalize(incident, attempt, vec![o]).await
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
                self.finalize(incident, attempt, vec![o]).await
            }
            other => Err(EngineError::StoreUnavailable(format!(
                "unexpected store answer {other:?}"
            ))),
        }
    }

    /// Run pre-checks, the action, post-checks and, on failure, the rollback.
    async fn execute(
        &self,
        incident: &Incident,
        rb: &Runbook,
        action: &Action,
        vars: &Vars,
        attempt: &str,
        probe: bool,
    ) -> Execution {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let renewal = self.spawn_renewal(&incident.id, attempt);
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
        let exec = 'run: {
            for c in &rb.pre_checks {
                let r = self
                    .executor
                    .check(c, &ctx(incident, rb, action, &vars, &action_id, false))
                    .await;
                checks.push(CheckOutcome {
                    phase: Phase::Pre,
                    name: c.name().into(),
                    passed: r.passed,
                    detail: r.detail.clone(),
                });
                if !r.passed {
                    break 'run Execution {
                        decision: Decision::Aborted,
                        success: None,
                        rolled_back: false,
                        reason: format!("pre-check {} failed: {}; nothing changed", c.name(), r.detail),
                        checks,
                        result: ExecResult::NotRun,
                        label: "aborted",
                    };
                }
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
            for (k, v) in &report.captured {
                vars.set(k, v.clone());
            }
            let mut failed = None;
            for c in &rb.post_checks {
                let r = self
                    .executor
                    .check(c, &ctx(incident, rb, action, &vars, &action_id, false))
                    .await;
                if !r.passed && failed.is_none() {
                    failed = Some(format!("post-check {} failed: {}", c.name(), r.detail));
                }
                checks.push(CheckOutcome {
                    phase: Phase::Post,
                    name: c.name().into(),
                    passed: r.passed,
                    detail: r.detail,
                });
            }
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
                    .map_err(|e| format!("rollback failed: {e}")),
            };
            let outcome = match outcome {
                Ok(report) => {
                    // Never assume the rollback worked either.
                    let mut unverified = None;
                    for c in &rb.rollback_checks {
                        let r = self
                            .executor
                            .check(c, &ctx(incident, rb, action, &vars, &action_id, true))
                            .await;
                        if !r.passed && unverified.is_none() {
                            unverified = Some(format!("rollback check {} failed: {}", c.name(), r.detail));
                        }
                        checks.push(CheckOutcome {
                            phase: Phase::Rollback,
                            name: c.name().into(),
                            passed: r.passed,
                            detail: r.detail,
                        });
                    }
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
        renewal.abort();
        self.metrics.in_flight.dec();
        self.metrics
            .action_seconds
            .with_label_values(&[&rb.id])
            .observe(started.elapsed().as_secs_f64());
        info!(runbook = %rb.id, result = exec.label, reason = %exec.reason, "execution finished");
        exec
    }

    /// Keep the claim and the blast-radius lease alive while an action runs.
    fn spawn_renewal(&self, incident_id: &str, attempt: &str) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(&self.store);
        let (id, attempt) = (incident_id.to_string(), attempt.to_string());
        let lease = self.settings.lease;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if let Err(e) = store.renew(&id, &attempt, ms(lease)).await {
                    warn!(error = %e, "could not renew the execution lease");
                }
            }
        })
    }

    /// Record the final outcomes (retrying: this incident has been decided) and return them.
    async fn finalize(
        &self,
        incident: &Incident,
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
                .record(&incident.id, attempt, &json, ms(self.settings.idempotency_ttl))
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
