//! An incident from the input, decided by the decision order: the facts are gathered, the
//! store is asked (claim, then the guardrails for the intent), and the intent is carried out:
//! a suggestion, an approval request, a dry run or an execution.

use super::approvals::pending_note;
use super::execution::Reserved;
use super::{guard_scope, render, runbook_facts, Engine, EngineError, Handled, Report, Source, Subject};
use crate::decision::{self, Facts, GuardrailFact, Intent, Previous, RunbookFacts, Seen, Verdict};
use crate::guardrails::{Admission, DecideAnswer, ExecResult, FinishRequest, Guardrail};
use crate::incident::Incident;
use crate::outcome::{Decision, Outcome};
use crate::runbook::template::Vars;
use crate::runbook::{Action, Runbook};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::{info, warn};

/// An incident whose runbook matched and whose action rendered, on its way to the guardrails.
pub(super) struct Run<'a> {
    pub incident: &'a Incident,
    pub rb: &'a Runbook,
    pub action: &'a Action,
    pub vars: &'a Vars,
    pub source: Option<&'a Source>,
    pub attempt: &'a str,
    /// What its outcome is about (the action, the mode, any approver).
    pub subject: Subject,
    pub decided_at: DateTime<Utc>,
    /// What its decision rests on; the store's answers are added to it.
    pub facts: Facts,
    /// Who runs it by hand (`remediator execute`), named in an execution's reason.
    pub operator: Option<&'a str>,
}

impl Engine {
    /// Decide an incident that parsed: the decision order up to the guardrails, then
    /// [`Engine::proceed`] with the intent.
    pub(super) async fn process(
        &self,
        incident: &Incident,
        source: Option<&Source>,
        attempt: &str,
    ) -> Result<Handled, EngineError> {
        let now = self.clock.now();
        let matched = self.catalogue.match_incident(incident).map(|(rb, _)| rb);
        let vars = Vars::from_incident(incident);
        let rendered = matched.map(|rb| render(rb, incident, &vars));
        let runbook = match matched {
            Some(rb) => Some(RunbookFacts {
                demoted: self.demotion(rb).await,
                ..runbook_facts(rb)
            }),
            None => None,
        };
        let mut facts = Facts {
            invalid: None,
            seen: Seen::New,
            age: incident
                .detected_at
                .map(|d| (now - d).to_std().unwrap_or(Duration::ZERO)),
            ahead: incident
                .detected_at
                .and_then(|d| (d - now).to_std().ok())
                .unwrap_or(Duration::ZERO),
            max_age: self.settings.guardrails.max_incident_age,
            root_cause: incident.root_cause.clone(),
            runbook,
            confidence: incident.confidence,
            render_error: rendered
                .as_ref()
                .and_then(|r| r.as_ref().err())
                .map(ToString::to_string),
            guardrail: GuardrailFact::Unknown,
            global_dry_run: self.settings.dry_run,
        };
        let action = rendered.as_ref().and_then(|r| r.as_ref().ok());
        let subject = Subject {
            action: action.map(Action::view),
            mode: matched.map(|rb| self.effective_mode(rb)),
            ..Subject::of(incident, matched)
        };
        match decision::decide(&facts) {
            Verdict::Final(fin) => {
                let outcomes = vec![self.outcome(&subject, now, fin.into())];
                match self
                    .claim(&self.record_request(&incident.id, source, attempt, &outcomes))
                    .await?
                {
                    DecideAnswer::Recorded => Ok(Handled::new(outcomes)),
                    answer => {
                        let bare = Subject::of(incident, matched);
                        self.settle(answer, &mut facts, &bare, now, &incident.id, attempt).await
                    }
                }
            }
            Verdict::Proceed(intent, reason) => {
                let (Some(rb), Some(action)) = (matched, action) else {
                    unreachable!("decide() proceeds only with a matched runbook and a rendered action")
                };
                let run = Run {
                    incident,
                    rb,
                    action,
                    vars: &vars,
                    source,
                    attempt,
                    subject,
                    decided_at: now,
                    facts,
                    operator: None,
                };
                self.proceed(run, intent, reason).await
            }
        }
    }

    /// Rules 6-10 for a runbook and its rendered action: the guardrails, then approval,
    /// suggestion, dry run or execution. `reason` is the outcome's reason when nothing intervenes.
    pub(super) async fn proceed(&self, run: Run<'_>, intent: Intent, reason: String) -> Result<Handled, EngineError> {
        let Run {
            incident,
            rb,
            action,
            vars,
            source,
            attempt,
            mut subject,
            decided_at,
            mut facts,
            operator,
        } = run;
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
        let probe = match self
            .claim(&self.request(&incident.id, source, attempt, admission))
            .await?
        {
            DecideAnswer::Allowed { probe, conservative } => {
                if conservative {
                    warn!(runbook = %rb.id, "guardrail store lost its state recently: running conservatively");
                }
                probe
            }
            answer => {
                let bare = Subject {
                    action: None,
                    mode: None,
                    ..subject.clone()
                };
                let about = if matches!(answer, DecideAnswer::Blocked { .. }) {
                    &subject
                } else {
                    &bare
                };
                return self
                    .settle(answer, &mut facts, about, decided_at, &incident.id, attempt)
                    .await;
            }
        };
        subject.mode = Some(intent.mode());
        let report = match intent {
            Intent::Suggest => Report::new(intent.decision(), reason),
            Intent::Approval => {
                // What a human approves is the action as the cluster makes it now (an undo's
                // revisions): pinned before it is shown and hashed.
                match self.executor.pin(action).await {
                    Ok(pinned) => {
                        subject.action = Some(pinned.view());
                        let (approval, joined) = self.request_approval(incident, rb, &pinned).await;
                        subject.approval_id = Some(approval.id.clone());
                        Report::new(
                            intent.decision(),
                            format!("{reason}; {}", pending_note(&approval, joined)),
                        )
                    }
                    Err(e) => Report::new(
                        Decision::Aborted,
                        format!(
                            "could not read the live state the approval must be bound to: {e}; no approval asked, \
                             nothing changed"
                        ),
                    ),
                }
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
                Report::new(intent.decision(), reason)
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
                match self.run_reserved(reserved, scope, limits).await {
                    Ok(mut report) => {
                        if let (Some(operator), Decision::Executed) = (operator, report.decision) {
                            report.reason = format!("manual run by {operator}: {}", report.reason);
                        }
                        report
                    }
                    Err(ceiling) => {
                        facts.guardrail = GuardrailFact::Blocked(Guardrail::RateLimit, ceiling);
                        final_report(&facts)
                    }
                }
            }
        };
        let o = self.outcome(&subject, decided_at, report);
        Ok(self.finalize(&incident.id, attempt, vec![o]).await)
    }

    /// The store's answers that end handling without carrying out the intent: a duplicate, an
    /// interrupted earlier attempt, a guardrail's block. The decision order decides them, with
    /// the store's answer added to `facts`; the outcome is about `subject`.
    pub(super) async fn settle(
        &self,
        answer: DecideAnswer,
        facts: &mut Facts,
        subject: &Subject,
        decided_at: DateTime<Utc>,
        claim_id: &str,
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
                facts.seen = Seen::Handled(recorded.last().map(|prev| Previous {
                    decision: prev.decision,
                    worker: prev.worker.clone(),
                    decided_at: prev.decided_at.to_rfc3339(),
                }));
                // Not recorded: the incident's own record stands.
                Ok(Handled::new(vec![self.outcome(
                    subject,
                    decided_at,
                    final_report(facts),
                )]))
            }
            DecideAnswer::Interrupted { worker } => {
                facts.seen = Seen::Interrupted(worker);
                let o = self.outcome(subject, decided_at, final_report(facts));
                Ok(self.finalize(claim_id, attempt, vec![o]).await)
            }
            DecideAnswer::Blocked { guardrail, detail } => {
                facts.guardrail = GuardrailFact::Blocked(guardrail, detail);
                let o = self.outcome(subject, decided_at, final_report(facts));
                Ok(self.finalize(claim_id, attempt, vec![o]).await)
            }
            other => Err(EngineError::StoreUnavailable(format!(
                "unexpected store answer {other:?}"
            ))),
        }
    }
}

/// The decision of facts that hold a store's refusal (a duplicate, an interruption, a block).
fn final_report(facts: &Facts) -> Report {
    match decision::decide(facts) {
        Verdict::Final(f) => f.into(),
        Verdict::Proceed(..) => unreachable!("a refusal of the store is a final decision: {facts:?}"),
    }
}
