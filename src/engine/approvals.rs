//! Asking a human, and the answer: an approval is bound to the hash of the action it shows, is
//! answered at most once, and an approved action is checked again
//! ([`crate::decision::decide_approved`]) and goes through the guardrails again before it runs.

use super::execution::Reserved;
use super::{guard_scope, render, to_json, Engine, EngineError, Report, Subject};
use crate::decision::{decide_approved, ApprovedFacts, GuardrailFact, Intent, Verdict};
use crate::guardrails::{
    Admission, Answer, AnswerResult, Approval, ApprovalState, DecideAnswer, ExecResult, FinishRequest, Guardrail,
};
use crate::incident::{self, Incident};
use crate::outcome::{Decision, Mode, Outcome};
use crate::runbook::template::Vars;
use crate::runbook::{Action, Runbook};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::{info, warn};

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

/// Outcomes of an answer, and whether they were recorded by an earlier try of it (published
/// again, not counted again).
struct AnswerOutcomes {
    outcomes: Vec<Outcome>,
    republished: bool,
}

impl AnswerOutcomes {
    fn new(outcomes: Vec<Outcome>) -> Self {
        AnswerOutcomes {
            outcomes,
            republished: false,
        }
    }
}

/// The idempotency key of the execution an approval unlocks. It starts with a control
/// character (U+001F), which no incident id may contain (`crate::incident` refuses them), so no
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

/// What an `approval_required` outcome adds to its reason: the approval it asks for (or joins)
/// and until when it can be answered.
pub(super) fn pending_note(approval: &Approval, joined: bool) -> String {
    format!(
        "{} {}{} pending until {}",
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
    )
}

/// An approval id or approver name the API and the topic accept: 1..128 printable characters.
fn printable(v: &str) -> bool {
    !v.is_empty() && v.chars().count() <= 128 && !v.chars().any(char::is_control)
}

impl Engine {
    /// Create the pending approval an `approval_required` decision asks for, bound to the hash
    /// of the rendered action as the executor pinned it (an undo's live revisions included:
    /// [`crate::executor::Executor::pin`]; retried until the store answers: the decision is
    /// already taken), or join the one already pending for the same runbook, target and action
    /// (`true`): an alert storm asks a human once, not once per incident.
    pub(super) async fn request_approval(
        &self,
        incident: &Incident,
        rb: &Runbook,
        action: &Action,
    ) -> (Approval, bool) {
        let view = action.view();
        let hash = action_hash(action);
        let pending = Approval {
            id: self.ids.next(),
            incident_id: incident.id.clone(),
            runbook: rb.id.clone(),
            action_hash: hash.clone(),
            action: view.display.clone(),
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
                &hash,
            ]
            .join("\n"),
        };
        let a = self.create_approval_retrying(&pending).await;
        if a.id != pending.id {
            info!(approval = %a.id, incident = %incident.id, "incident joins the pending approval of its target");
            return (a, true);
        }
        self.metrics.approval_created();
        (a, false)
    }

    /// Answer a pending approval (HTTP API, approvals topic, `remediator approve|deny`).
    ///
    /// The store accepts at most one answer per approval; expired, replayed, tampered and unknown
    /// approvals are refused, and every answer, refused or not, is audited as an outcome. An
    /// accepted approval re-checks freshness, re-renders the action (it must hash to what was
    /// approved) and goes through the guardrails again before executing: what was safe when the
    /// approval was asked for may not be safe any more.
    pub async fn answer(&self, approval_id: &str, answer: &Answer) -> Result<Answered, EngineError> {
        let (answered, republished) = self.answer_inner(approval_id, answer).await?;
        if !republished {
            self.emit(&answered.outcomes);
        }
        Ok(answered)
    }

    async fn answer_inner(&self, approval_id: &str, answer: &Answer) -> Result<(Answered, bool), EngineError> {
        let now = self.clock.now();
        let refuse = |subject: &Subject, decision: Decision, why: String| {
            self.metrics.approvals.with_label_values(&["refused"]).inc();
            warn!(approval = approval_id, approver = %answer.approver, reason = %why, "approval answer refused");
            let o = self.outcome(subject, now, Report::new(decision, why.clone()));
            Ok((
                Answered {
                    accepted: false,
                    reason: why,
                    outcomes: vec![o],
                },
                false,
            ))
        };
        let mut subject = Subject {
            approval_id: Some(approval_id.to_string()),
            approver: Some(answer.approver.clone()),
            mode: Some(Mode::Approval),
            ..Subject::default()
        };
        if !printable(approval_id) || !printable(&answer.approver) {
            subject.approver = None;
            let why = "approval answer refused: approval id and approver must be 1..128 printable characters";
            return refuse(&subject, Decision::Rejected, why.to_string());
        }
        let result = self.store.answer_approval(approval_id, answer).await.map_err(|e| {
            self.metrics.store_errors.inc();
            EngineError::StoreUnavailable(e.to_string())
        })?;
        let describe = |a: &Approval, s: &mut Subject| {
            s.incident_id = Some(a.incident_id.clone());
            s.runbook_id = Some(a.runbook.clone());
            if let Ok(i) = incident::parse(a.incident.as_bytes()) {
                s.service = Some(i.service().to_string());
                s.root_cause = Some(i.root_cause.clone());
                s.confidence = Some(i.confidence);
            }
        };
        let (a, retried) = match result {
            AnswerResult::NotFound => {
                let why = format!("approval answer refused: approval {approval_id} does not exist");
                return refuse(&subject, Decision::Rejected, why);
            }
            AnswerResult::Expired(a) => {
                describe(&a, &mut subject);
                let why = format!(
                    "approval answer refused: approval {approval_id} expired at {}",
                    DateTime::<Utc>::from_timestamp_millis(a.expires_at_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                );
                return refuse(&subject, Decision::Expired, why);
            }
            AnswerResult::AlreadyAnswered(a) => {
                describe(&a, &mut subject);
                let why = format!(
                    "approval answer refused: approval {approval_id} was already {} by {} (single use)",
                    a.state.as_str(),
                    a.approver.as_deref().unwrap_or("someone")
                );
                return refuse(&subject, Decision::Rejected, why);
            }
            AnswerResult::Tampered(a) => {
                describe(&a, &mut subject);
                let why = format!(
                    "approval answer refused: the answer names action hash {}, the approval is bound to {}",
                    answer.action_hash.as_deref().unwrap_or("-"),
                    a.action_hash
                );
                return refuse(&subject, Decision::Rejected, why);
            }
            AnswerResult::Accepted(a) => (a, false),
            // A retry of this approver's accepted answer (its first handling failed after the
            // store took it: a store error before the claim, an unpublished outcome): finish it.
            // The execution claim under the approval's id still allows one run; a finished one
            // answers with its recorded outcomes, which are published again.
            AnswerResult::Repeated(a) => {
                info!(approval = approval_id, approver = %answer.approver, "approval answer retried; finishing it");
                (a, true)
            }
        };
        describe(&a, &mut subject);
        if !retried {
            self.metrics.approval_answered();
        }
        let denied = a.state == ApprovalState::Denied;
        if !retried {
            let label = if denied { "denied" } else { "approved" };
            self.metrics.approvals.with_label_values(&[label]).inc();
        }
        let done = if denied {
            let report = Report::new(
                Decision::Manual,
                format!("approval {} denied by {}; not executed", a.id, answer.approver),
            );
            self.finalize_answer(&a, &subject, now, report).await
        } else {
            self.execute_approved(&a, &answer.approver, subject).await?
        };
        Ok((
            Answered {
                accepted: true,
                reason: if denied { "denied" } else { "approved" }.into(),
                outcomes: done.outcomes,
            },
            done.republished,
        ))
    }

    /// An audit outcome for an approval answer refused before it reached the store (a malformed
    /// message on the approvals topic).
    pub fn refused_answer(&self, approval_id: Option<&str>, approver: Option<&str>, reason: &str) -> Outcome {
        let subject = Subject {
            mode: Some(Mode::Approval),
            approval_id: approval_id.map(str::to_string),
            approver: approver.filter(|a| !a.is_empty()).map(str::to_string),
            ..Subject::default()
        };
        self.metrics.approvals.with_label_values(&["refused"]).inc();
        let report = Report::new(Decision::Rejected, format!("approval answer refused: {reason}"));
        self.outcome(&subject, self.clock.now(), report)
    }

    /// An audit outcome for an answer on the approvals topic whose signature (or action hash) is
    /// missing or wrong: refused before the store, counted as `unauthenticated`. The approver it
    /// claims is only quoted in the reason: nobody proved it.
    pub fn unauthenticated_answer(&self, approval_id: &str, claimed_approver: &str, reason: &str) -> Outcome {
        let subject = Subject {
            mode: Some(Mode::Approval),
            approval_id: Some(approval_id.to_string()).filter(|a| printable(a)),
            ..Subject::default()
        };
        self.metrics.approvals.with_label_values(&["unauthenticated"]).inc();
        let report = Report::new(
            Decision::Rejected,
            format!(
                "approval answer refused: {reason}; claimed approver {:?}; not executed",
                crate::incident::shorten(claimed_approver)
            ),
        );
        self.outcome(&subject, self.clock.now(), report)
    }

    /// Run an approved action: re-check what [`decide_approved`] checks (the stored incident,
    /// the runbook, the rendering, the action's binding, freshness), then the guardrails.
    async fn execute_approved(
        &self,
        a: &Approval,
        approver: &str,
        mut subject: Subject,
    ) -> Result<AnswerOutcomes, EngineError> {
        let now = self.clock.now();
        let rb = self.catalogue.get(&a.runbook);
        let mut facts = ApprovedFacts {
            approver: approver.to_string(),
            unreadable: None,
            runbook: a.runbook.clone(),
            runbook_exists: rb.is_some(),
            // An approval never overrides shadow mode.
            dry_run: match rb {
                Some(rb) if rb.dry_run => Some("runbook dry_run"),
                _ if self.settings.dry_run => Some("worker dry_run"),
                _ => None,
            },
            render_error: None,
            unbound: None,
            age: None,
            max_age: self.settings.guardrails.max_incident_age,
            guardrail: GuardrailFact::Unknown,
        };
        let incident = incident::parse(a.incident.as_bytes())
            .map_err(|(r, _)| facts.unreadable = Some(r.to_string()))
            .ok();
        let vars = incident.as_ref().map(Vars::from_incident);
        let rendered = match (&incident, rb, &vars) {
            (Some(i), Some(rb), Some(vars)) => Some(render(rb, i, vars)),
            _ => None,
        };
        if let Some(Err(e)) = &rendered {
            facts.render_error = Some(e.to_string());
        }
        if let Verdict::Final(f) = decide_approved(&facts) {
            return Ok(self.finalize_answer(a, &subject, now, f.into()).await);
        }
        let (Some(incident), Some(rb), Some(vars), Some(Ok(action))) = (incident, rb, vars, rendered) else {
            unreachable!("decide_approved() proceeds only with a readable incident and a rendered action")
        };
        // Pinned again as when the approval was asked for: an undo whose deployment was deployed
        // (or undone) since then restores something else now, and hashes differently.
        let pinned = match self.executor.pin(&action).await {
            Ok(pinned) if action_hash(&pinned) == a.action_hash => Some(pinned),
            Ok(pinned) => {
                facts.unbound = Some(format!(
                    "runbook {} now renders a different action than the one approved (approved: {}; now: {}); \
                     not executed (ask again)",
                    rb.id,
                    a.action,
                    pinned.view().display
                ));
                None
            }
            Err(e) => {
                facts.unbound = Some(format!(
                    "the live state the approval is bound to could not be read: {e}; not executed (ask again)"
                ));
                None
            }
        };
        subject.action = pinned.as_ref().map(Action::view);
        facts.age = incident
            .detected_at
            .map(|d| (now - d).to_std().unwrap_or(Duration::ZERO));
        let (Verdict::Proceed(..), Some(action)) = (decide_approved(&facts), pinned) else {
            let report = final_report(&facts);
            return Ok(self.finalize_answer(a, &subject, now, report).await);
        };
        // The execution is claimed under its own id: the incident itself is already recorded
        // (approval_required), and an approval is single use.
        let claim_id = approval_claim(a);
        let attempt = uuid::Uuid::new_v4().to_string();
        let scope = guard_scope(rb, &incident, &action.view());
        let limits = self.limits(rb);
        // On a dry-run worker or for a dry-run runbook the approved action is checked and
        // reserved like any dry run (never the circuit's probe), recorded as `dry_run` and never
        // handed to the executor.
        let admission = match facts.dry_run {
            Some(_) => Admission::DryRun {
                scope: scope.clone(),
                limits: limits.clone(),
            },
            None => Admission::Reserve {
                scope: scope.clone(),
                limits: limits.clone(),
            },
        };
        let report = match self.claim(&self.request(&claim_id, None, &attempt, admission)).await? {
            DecideAnswer::Allowed { probe, .. } => {
                facts.guardrail = GuardrailFact::Allowed;
                match decide_approved(&facts) {
                    Verdict::Proceed(Intent::DryRun, reason) => {
                        // Nothing ran: release the slots without any word to the circuit.
                        self.finish_retrying(&FinishRequest {
                            incident_id: claim_id.clone(),
                            attempt: attempt.clone(),
                            scope,
                            limits,
                            result: ExecResult::NotRun,
                        })
                        .await;
                        Report::new(Decision::DryRun, reason)
                    }
                    Verdict::Proceed(_, reason) => {
                        let reserved = Reserved {
                            claim_id: &claim_id,
                            incident: &incident,
                            rb,
                            action: &action,
                            vars: &vars,
                            attempt: &attempt,
                            probe,
                        };
                        match self.run_reserved(reserved, scope, limits).await {
                            Ok(mut report) => {
                                if report.decision == Decision::Executed {
                                    report.reason = format!("{reason}; {}", report.reason);
                                }
                                report
                            }
                            Err(ceiling) => {
                                facts.guardrail = GuardrailFact::Blocked(Guardrail::RateLimit, ceiling);
                                final_report(&facts)
                            }
                        }
                    }
                    Verdict::Final(f) => f.into(),
                }
            }
            DecideAnswer::Blocked { guardrail, detail } => {
                facts.guardrail = GuardrailFact::Blocked(guardrail, detail);
                final_report(&facts)
            }
            DecideAnswer::Duplicate { outcomes, .. } => {
                return Ok(AnswerOutcomes {
                    outcomes: serde_json::from_str(&outcomes).unwrap_or_default(),
                    republished: true,
                });
            }
            other => Report::new(
                Decision::Aborted,
                format!("approved by {approver}, but the execution claim was refused: {other:?}"),
            ),
        };
        let o = self.outcome(&subject, now, report);
        Ok(AnswerOutcomes::new(
            self.finalize(&claim_id, &attempt, vec![o]).await.outcomes,
        ))
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
    async fn finalize_answer(
        &self,
        a: &Approval,
        subject: &Subject,
        decided_at: DateTime<Utc>,
        report: Report,
    ) -> AnswerOutcomes {
        let attempt = uuid::Uuid::new_v4().to_string();
        let outcomes = vec![self.outcome(subject, decided_at, report)];
        let req = self.record_request(&approval_claim(a), None, &attempt, to_json(&outcomes));
        // Best effort: the answer itself is already final in the store.
        match self.store.decide(&req).await {
            Ok(DecideAnswer::Duplicate { outcomes: recorded, .. }) => {
                if let Ok(recorded) = serde_json::from_str::<Vec<Outcome>>(&recorded) {
                    if !recorded.is_empty() {
                        return AnswerOutcomes {
                            outcomes: recorded,
                            republished: true,
                        };
                    }
                }
            }
            Ok(DecideAnswer::InProgress { worker, .. }) => {
                let report = Report::new(
                    Decision::Duplicate,
                    format!(
                        "approval {} is being executed by another try of this answer (worker {worker}); its \
                         outcome is published when it finishes; this try did nothing",
                        a.id
                    ),
                );
                return AnswerOutcomes::new(vec![self.outcome(subject, decided_at, report)]);
            }
            Ok(DecideAnswer::Interrupted { worker }) => {
                let report = Report::new(
                    Decision::Aborted,
                    format!(
                        "approval {}: an earlier try of this answer by {worker} was interrupted while executing; \
                         its effect is unknown and an action is never run twice, so it is not retried",
                        a.id
                    ),
                );
                let o = self.outcome(subject, decided_at, report);
                return AnswerOutcomes::new(self.finalize(&approval_claim(a), &attempt, vec![o]).await.outcomes);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, approval = %a.id, "could not record the answer's outcome"),
        }
        AnswerOutcomes::new(outcomes)
    }
}

/// The decision of approved facts that hold a refusal.
fn final_report(facts: &ApprovedFacts) -> Report {
    match decide_approved(facts) {
        Verdict::Final(f) => f.into(),
        Verdict::Proceed(..) => unreachable!("a refusal is a final decision: {facts:?}"),
    }
}
