//! An incident from the input, decided by the decision order: the facts are gathered, the
//! store is asked (claim, then the guardrails for the intent), and the intent is carried out:
//! a suggestion, an approval request, a dry run or an execution.

use super::approvals::pending_note;
use super::execution::Reserved;
use super::{guard_scope, render, runbook_facts, to_json, Engine, EngineError, Handled, Report, Source, Subject};
use crate::decision::{self, Facts, GuardrailFact, Intent, Previous, RunbookFacts, Seen, Verdict};
use crate::guardrails::{
    Admission, BlockedRecord, DecideAnswer, DecideRequest, ExecResult, FinishRequest, Guardrail, Limits, Scope,
};
use crate::incident::Incident;
use crate::outcome::{Decision, Outcome};
use crate::rollout::{Stage, Transition};
use crate::runbook::template::{RenderError, Vars};
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

/// An incident decided up to its one question to the store ([`Engine::prepare`]); with the
/// store's answer, [`Engine::complete`] takes it to its outcome.
pub(super) struct Prepared<'a> {
    incident: &'a Incident,
    rb: Option<&'a Runbook>,
    vars: Vars,
    rendered: Option<Result<Action, RenderError>>,
    source: Option<&'a Source>,
    attempt: &'a str,
    subject: Subject,
    facts: Facts,
    decided_at: DateTime<Utc>,
    next: Next,
}

/// What the question was for.
// One per message being decided, moved, never stored in bulk: boxing the large variant would
// cost an allocation per decision for nothing.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A final decision without guardrails: the claim records these outcomes.
    Recorded(Handled),
    /// The guardrails of an intent.
    Guarded(Guard),
}

/// The guardrails asked for an intent, and what carrying it out needs with the answer.
pub(super) struct Guard {
    intent: Intent,
    reason: String,
    scope: Scope,
    limits: Limits,
    /// The outcome of a block, which the store records in the same call (`on_block`).
    blocked: Option<Outcome>,
}

impl Engine {
    /// Decide an incident that parsed: [`Engine::prepare`], one question to the store, then
    /// [`Engine::complete`] with its answer.
    pub(super) async fn process(
        &self,
        incident: &Incident,
        source: Option<&Source>,
        attempt: &str,
    ) -> Result<Handled, EngineError> {
        let (prepared, request) = self.prepare(incident, source, attempt).await;
        let answer = self.claim(&request).await?;
        self.complete(prepared, answer).await
    }

    /// The decision order up to the store: the facts, the verdict, and the question to ask (a
    /// claim that records a final decision, or the guardrails of the intent).
    pub(super) async fn prepare<'a>(
        &'a self,
        incident: &'a Incident,
        source: Option<&'a Source>,
        attempt: &'a str,
    ) -> (Prepared<'a>, DecideRequest) {
        let now = self.clock.now();
        let matched = self.catalogue.match_incident(incident).map(|(rb, _)| rb);
        let vars = Vars::from_incident(incident);
        let rendered = matched.map(|rb| render(rb, incident, &vars));
        // A rollout runbook is decided in the stage its shared record holds (for its canary:
        // whether this target is in it); the store checks the record's version at the claim.
        let rollout = match (matched, rendered.as_ref().and_then(|r| r.as_ref().ok())) {
            (Some(rb), Some(action)) => match &rb.rollout {
                Some(policy) => {
                    let rec = self.rollout_record(rb, policy).await;
                    let scope = guard_scope(rb, incident, &action.view());
                    let target = if scope.target.is_empty() {
                        &scope.service
                    } else {
                        &scope.target
                    };
                    Some((rec.version, Self::rollout_fact(rb, policy, &rec, target)))
                }
                None => None,
            },
            _ => None,
        };
        let runbook = match matched {
            Some(rb) => Some(RunbookFacts {
                demoted: self.demotion(rb).await,
                rollout: rollout.as_ref().map(|(_, (fact, _))| *fact),
                ..runbook_facts(rb)
            }),
            None => None,
        };
        let facts = Facts {
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
        let (rollout_version, rollout_view) = match rollout {
            Some((version, (_, view))) => (Some(version), Some(view)),
            None => (None, None),
        };
        let subject = Subject {
            action: action.map(Action::view),
            mode: matched.map(|rb| self.effective_mode(rb)),
            rollout: rollout_view,
            ..Subject::of(incident, matched)
        };
        let (next, subject, facts, request) = match decision::decide(&facts) {
            Verdict::Final(fin) => {
                let handled = Handled::new(vec![self.outcome(&subject, now, fin.into())]);
                let request = self.record_request(&incident.id, source, attempt, handled.record());
                (Next::Recorded(handled), subject, facts, request)
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
                let (guard, mut request) = self.guard(&run, intent, reason);
                request.rollout_version = rollout_version;
                (Next::Guarded(guard), run.subject, run.facts, request)
            }
        };
        let prepared = Prepared {
            incident,
            rb: matched,
            vars,
            rendered,
            source,
            attempt,
            subject,
            facts,
            decided_at: now,
            next,
        };
        (prepared, request)
    }

    /// An incident [`Engine::prepare`]d, taken to its outcome with the store's `answer` to its
    /// question.
    pub(super) async fn complete(&self, prepared: Prepared<'_>, answer: DecideAnswer) -> Result<Handled, EngineError> {
        let Prepared {
            incident,
            rb,
            vars,
            rendered,
            source,
            attempt,
            subject,
            mut facts,
            decided_at,
            next,
        } = prepared;
        if let (DecideAnswer::StageChanged, Some(rb)) = (&answer, rb) {
            // Decided in a stage the runbook's rollout has left: nothing was claimed. Decide
            // again in the stage the store holds now.
            self.reload_rollout(rb).await?;
            return Box::pin(self.process(incident, source, attempt)).await;
        }
        match next {
            Next::Recorded(handled) => match answer {
                DecideAnswer::Recorded => Ok(handled),
                answer => {
                    let bare = Subject::of(incident, rb);
                    self.settle(answer, &mut facts, &bare, decided_at, &incident.id, attempt)
                        .await
                }
            },
            Next::Guarded(guard) => {
                let (Some(rb), Some(Ok(action))) = (rb, rendered.as_ref()) else {
                    unreachable!("guardrails are asked only for a matched runbook and a rendered action")
                };
                let run = Run {
                    incident,
                    rb,
                    action,
                    vars: &vars,
                    source,
                    attempt,
                    subject,
                    decided_at,
                    facts,
                    operator: None,
                };
                self.proceed_with(run, guard, answer).await
            }
        }
    }

    /// Rules 6-10 for a runbook and its rendered action: the guardrails, then approval,
    /// suggestion, dry run or execution. `reason` is the outcome's reason when nothing intervenes.
    pub(super) async fn proceed(&self, run: Run<'_>, intent: Intent, reason: String) -> Result<Handled, EngineError> {
        let (guard, request) = self.guard(&run, intent, reason);
        let answer = self.claim(&request).await?;
        self.proceed_with(run, guard, answer).await
    }

    /// The question for the guardrails of `intent`: check them (approval, suggestion), or check
    /// and reserve them (execution, dry run), with the outcome of a block for the store to record.
    fn guard(&self, run: &Run<'_>, intent: Intent, reason: String) -> (Guard, DecideRequest) {
        // The subject carries the action's view already (built once per decision).
        let scope = match &run.subject.action {
            Some(view) => guard_scope(run.rb, run.incident, view),
            None => guard_scope(run.rb, run.incident, &run.action.view()),
        };
        let limits = self.limits(run.rb);
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
        // A block is recorded by the store in the same call that finds it (unless the store is
        // in process, where a second call costs nothing and the outcome is built only if needed).
        let template = self
            .store
            .wants_block_outcomes()
            .then(|| self.blocked_template(&run.subject, run.decided_at, &run.facts))
            .flatten();
        let mut request = self.request(&run.incident.id, run.source, run.attempt, admission);
        let blocked = template.map(|(outcome, record)| {
            request.on_block = Some(record);
            outcome
        });
        let guard = Guard {
            intent,
            reason,
            scope,
            limits,
            blocked,
        };
        (guard, request)
    }

    /// [`Engine::proceed`] once the store answered its question.
    async fn proceed_with(&self, run: Run<'_>, guard: Guard, answer: DecideAnswer) -> Result<Handled, EngineError> {
        let Run {
            incident,
            rb,
            action,
            vars,
            attempt,
            mut subject,
            decided_at,
            mut facts,
            operator,
            ..
        } = run;
        let Guard {
            intent,
            reason,
            scope,
            limits,
            blocked,
        } = guard;
        let probe = match answer {
            DecideAnswer::Allowed { probe, conservative } => {
                if conservative {
                    warn!(runbook = %rb.id, "guardrail store lost its state recently: running conservatively");
                }
                probe
            }
            answer => {
                if let (DecideAnswer::Blocked { guardrail, detail }, Some(skeleton)) = (&answer, blocked) {
                    // Recorded already: the outcome the store completed, built here the same way.
                    facts.guardrail = GuardrailFact::Blocked(*guardrail, detail.clone());
                    let report = final_report(&facts);
                    return Ok(Handled::new(vec![Outcome {
                        reason: report.reason,
                        guardrail: report.guardrail,
                        ..skeleton
                    }]));
                }
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
                let mut report = Report::new(intent.decision(), reason);
                // A shadow run the guardrails allowed is the evidence shadow collects.
                if facts
                    .runbook
                    .as_ref()
                    .and_then(|r| r.rollout)
                    .is_some_and(|r| r.stage == Stage::Shadow)
                {
                    report.rollout = self
                        .rollout_result(
                            rb,
                            Transition::Success,
                            &incident.id,
                            subject.rollout.as_ref(),
                            &mut report.reason,
                        )
                        .await;
                }
                report
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
                    return Ok(Handled::with(recorded, None, true));
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

impl Engine {
    /// The outcome a guardrail's block would give `subject`, and the store's template of it
    /// ([`DecideRequest::on_block`]): everything but the block's detail and guardrail, which only
    /// the store knows, written now by the decision order. `None` (the caller records a block
    /// itself) if the outcome cannot be split at the mark, e.g. a value in it holds the mark.
    ///
    /// [`DecideRequest::on_block`]: crate::guardrails::DecideRequest::on_block
    pub(super) fn blocked_template(
        &self,
        subject: &Subject,
        decided_at: DateTime<Utc>,
        facts: &Facts,
    ) -> Option<(Outcome, BlockedRecord)> {
        const MARK: &str = "@@remediator:block-detail@@";
        let mut marked = facts.clone();
        marked.guardrail = GuardrailFact::Blocked(Guardrail::RateLimit, MARK.to_owned());
        let skeleton = self.outcome(subject, decided_at, final_report(&marked));
        let record = BlockedRecord::split(&to_json(std::slice::from_ref(&skeleton)), MARK, Guardrail::RateLimit)?;
        Some((skeleton, record))
    }
}

/// The decision of facts that hold a store's refusal (a duplicate, an interruption, a block).
fn final_report(facts: &Facts) -> Report {
    match decision::decide(facts) {
        Verdict::Final(f) => f.into(),
        Verdict::Proceed(..) => unreachable!("a refusal of the store is a final decision: {facts:?}"),
    }
}
