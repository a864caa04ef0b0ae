//! The decision order (docs/design.md#decision-order) as pure functions: every rule, and every
//! reason text an outcome carries for it.
//!
//! [`decide`] takes every fact a decision about an incident depends on and returns the first rule
//! that applies. No I/O, no clock: table tests cover the whole order, with the reason texts the
//! audit topic carries. The engine gathers the facts in stages and asks again when it learns
//! more: first what the event and the catalogue say ([`Seen::New`], [`GuardrailFact::Unknown`]);
//! then, once the store has answered the claim and the reservation, with [`Facts::seen`] and
//! [`Facts::guardrail`] set from that answer (rules 2 and 6). An event that does not parse is
//! rule 1 ([`Facts::rejected`]).
//!
//! `decide_approved` is the same for an answered approval: the checks it repeats before the
//! approved action may run, with the approver named in every reason.
//!
//! One refinement of the order: a runbook template that cannot be rendered safely from the
//! incident (missing or invalid `context` values, a namespace outside the runbook's scope)
//! aborts right after the confidence check, before any guardrail is reserved: an action that
//! cannot run must not spend a rate-limit slot or a blast-radius lease.

use crate::guardrails::Guardrail;
use crate::outcome::{Decision, Mode};
use crate::rollout::Stage;
use std::time::Duration;

/// What the store said about the guardrails, when it has been asked.
#[derive(Debug, Clone, PartialEq)]
pub enum GuardrailFact {
    /// Not asked yet.
    Unknown,
    /// Every guardrail allows it.
    Allowed,
    /// This guardrail said no, with its detail.
    Blocked(Guardrail, String),
}

/// What the store knows of the incident id (rule 2).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Seen {
    /// Not handled before (or not asked yet).
    #[default]
    New,
    /// Handled before; its last recorded outcome, when one is readable.
    Handled(Option<Previous>),
    /// An earlier attempt, by this worker, was interrupted while executing.
    Interrupted(String),
}

/// The last recorded outcome of an incident handled before, as its reason quotes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Previous {
    /// Its decision.
    pub decision: Decision,
    /// The replica that took it.
    pub worker: String,
    /// When, RFC 3339.
    pub decided_at: String,
}

/// The matched runbook's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunbookFacts {
    /// Runbook id.
    pub id: String,
    /// Its minimum confidence.
    pub min_confidence: f64,
    /// Its effective mode (auto, approval, suggest).
    pub mode: Mode,
    /// Its own dry-run flag.
    pub dry_run: bool,
    /// Its risk, for the reason text.
    pub risk: &'static str,
    /// Why the trust ladder demoted it from auto to approval, if it did.
    pub demoted: Option<String>,
    /// Its rollout stage, if it has a rollout policy (docs/rollout.md).
    pub rollout: Option<RolloutFact>,
}

/// Where a runbook with a rollout policy stands for this incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutFact {
    /// The stage its shared record holds.
    pub stage: Stage,
    /// In `canary`: the share of targets acting automatically.
    pub share: Option<u8>,
    /// In `canary`: this incident's target is in that share.
    pub in_canary: bool,
}

/// Every fact a decision depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Why the event is invalid, if it is.
    pub invalid: Option<String>,
    /// What the store knows of the incident id.
    pub seen: Seen,
    /// How old the incident is (None: no `detected_at`; zero when it lies in the future).
    pub age: Option<Duration>,
    /// How far `detected_at` lies in the future (zero when it does not): clock skew tolerated up
    /// to `max_age`, beyond that the time is wrong and the incident is never fresh.
    pub ahead: Duration,
    /// The freshness limit.
    pub max_age: Duration,
    /// The root cause as reported (for the reason text).
    pub root_cause: String,
    /// The matched runbook.
    pub runbook: Option<RunbookFacts>,
    /// RCA confidence.
    pub confidence: f64,
    /// Why the action cannot be rendered, if it cannot.
    pub render_error: Option<String>,
    /// The store's guardrail answer.
    pub guardrail: GuardrailFact,
    /// Worker-wide dry run.
    pub global_dry_run: bool,
}

impl Facts {
    /// The facts of an event that failed validation: rule 1 is all that applies.
    pub fn rejected(why: String) -> Self {
        Facts {
            invalid: Some(why),
            seen: Seen::New,
            age: None,
            ahead: Duration::ZERO,
            max_age: Duration::ZERO,
            root_cause: String::new(),
            runbook: None,
            confidence: 0.0,
            render_error: None,
            guardrail: GuardrailFact::Unknown,
            global_dry_run: false,
        }
    }
}

/// A final decision and why: what an outcome that needs no execution says.
#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    /// The decision.
    pub decision: Decision,
    /// Why, as the outcome's `reason`.
    pub reason: String,
    /// For `blocked`: which guardrail.
    pub guardrail: Option<Guardrail>,
}

impl Final {
    fn new(decision: Decision, reason: String) -> Self {
        Final {
            decision,
            reason,
            guardrail: None,
        }
    }

    fn blocked(guardrail: Guardrail, reason: String) -> Self {
        Final {
            decision: Decision::Blocked,
            reason,
            guardrail: Some(guardrail),
        }
    }
}

/// What the worker will do with the incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A final decision that needs no execution.
    Final(Final),
    /// Guardrails must be consulted (`GuardrailFact::Unknown`) or have allowed it: the
    /// engine proceeds with this intent, and this reason when nothing else intervenes.
    Proceed(Intent, String),
}

/// What happens once the guardrails allow it (rules 7-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Ask a human (rule 7).
    Approval,
    /// Suggest only (rule 8): a `manual` outcome with the suggested action.
    Suggest,
    /// Shadow mode (rule 9): reserve guardrails, simulate success.
    DryRun,
    /// Execute (rule 10).
    Execute,
}

impl Intent {
    /// Whether guardrails are reserved (held until finish) or only checked.
    pub fn reserves(self) -> bool {
        matches!(self, Intent::DryRun | Intent::Execute)
    }

    /// The outcome decision this intent ends in when nothing else intervenes.
    pub fn decision(self) -> Decision {
        match self {
            Intent::Approval => Decision::ApprovalRequired,
            Intent::Suggest => Decision::Manual,
            Intent::DryRun => Decision::DryRun,
            Intent::Execute => Decision::Executed,
        }
    }

    /// The outcome's `mode` field.
    pub fn mode(self) -> Mode {
        match self {
            Intent::Approval => Mode::Approval,
            Intent::Suggest => Mode::Suggest,
            Intent::DryRun => Mode::DryRun,
            Intent::Execute => Mode::Auto,
        }
    }
}

/// Apply the decision order (docs/design.md#decision-order), first rule that applies wins.
pub fn decide(f: &Facts) -> Verdict {
    let done = |decision, reason| Verdict::Final(Final::new(decision, reason));
    if let Some(why) = &f.invalid {
        return done(Decision::Rejected, format!("invalid incident: {why}"));
    }
    match &f.seen {
        Seen::New => {}
        Seen::Handled(Some(prev)) => {
            return done(
                Decision::Duplicate,
                format!(
                    "incident id already handled ({} by {} at {}); not acting again",
                    prev.decision.as_str(),
                    prev.worker,
                    prev.decided_at
                ),
            )
        }
        Seen::Handled(None) => {
            return done(
                Decision::Duplicate,
                "incident id already handled; not acting again".into(),
            )
        }
        Seen::Interrupted(worker) => {
            return done(
                Decision::Aborted,
                format!(
                    "a previous attempt by {worker} was interrupted while executing; its effect is unknown and an \
                     action is never run twice, so it is not retried"
                ),
            )
        }
    }
    if let Some(age) = f.age.filter(|a| *a > f.max_age) {
        return done(
            Decision::Expired,
            format!(
                "incident is {} old, older than max_incident_age {}",
                human(age),
                human(f.max_age)
            ),
        );
    }
    if f.ahead > f.max_age {
        return done(
            Decision::Expired,
            format!(
                "incident detected_at is {} in the future, more than max_incident_age {} ahead: its \
                 source's clock is wrong, so its freshness is unknown",
                human(f.ahead),
                human(f.max_age)
            ),
        );
    }
    let Some(rb) = &f.runbook else {
        return done(
            Decision::Manual,
            format!("no runbook matches root cause {:?} or its symptoms", f.root_cause),
        );
    };
    if f.confidence < rb.min_confidence {
        return done(
            Decision::Manual,
            format!(
                "confidence {} < {} required by runbook {}",
                f.confidence, rb.min_confidence, rb.id
            ),
        );
    }
    if let Some(why) = &f.render_error {
        return done(Decision::Aborted, format!("action not rendered: {why}"));
    }
    if let GuardrailFact::Blocked(g, detail) = &f.guardrail {
        return Verdict::Final(Final::blocked(*g, detail.clone()));
    }
    let intent = match rb.mode {
        // A rollout decides by stage: shadow is a dry run, approval and the targets outside a
        // canary ask a human, the canary's targets and auto run (in dry run where one is set).
        Mode::Auto if rb.rollout.is_some_and(|r| r.stage == Stage::Shadow) => Intent::DryRun,
        Mode::Auto
            if rb
                .rollout
                .is_some_and(|r| r.stage == Stage::Approval || (r.stage == Stage::Canary && !r.in_canary)) =>
        {
            Intent::Approval
        }
        Mode::Approval => Intent::Approval,
        Mode::Auto if rb.demoted.is_some() => Intent::Approval,
        Mode::Suggest => Intent::Suggest,
        _ if rb.dry_run || f.global_dry_run => Intent::DryRun,
        _ => Intent::Execute,
    };
    Verdict::Proceed(intent, intent_reason(intent, rb))
}

/// The reason text for an intent that proceeded.
pub fn intent_reason(intent: Intent, rb: &RunbookFacts) -> String {
    if let Some(text) = rb.rollout.and_then(|r| rollout_reason(intent, &rb.id, r)) {
        return text;
    }
    match intent {
        Intent::Approval if rb.mode == Mode::Auto => format!(
            "runbook {} was demoted from auto to approval ({}): human approval required",
            rb.id,
            rb.demoted.as_deref().unwrap_or("low verified success rate")
        ),
        Intent::Approval if rb.risk == "HIGH" => format!("runbook {} is HIGH risk: human approval required", rb.id),
        Intent::Approval => format!("runbook {} requires human approval", rb.id),
        Intent::Suggest => format!("runbook {} only suggests: run the suggested action by hand", rb.id),
        Intent::DryRun => "dry run: guardrails checked and reserved, action rendered but not executed".into(),
        Intent::Execute => format!("runbook {} executed", rb.id),
    }
}

/// The reason text of an intent a rollout stage chose (`None`: the plain one).
fn rollout_reason(intent: Intent, id: &str, r: RolloutFact) -> Option<String> {
    let stage = match r.share {
        Some(share) => format!("{} {share}%", r.stage),
        None => r.stage.to_string(),
    };
    Some(match (intent, r.stage) {
        (Intent::DryRun, Stage::Shadow) => format!(
            "runbook {id} is in rollout stage shadow: guardrails checked and reserved, action rendered, \
             not executed (it would have run)"
        ),
        (Intent::Approval, Stage::Canary) => format!(
            "runbook {id} is in rollout stage {stage} and this target is outside the canary: \
             human approval required"
        ),
        (Intent::Approval, _) => format!("runbook {id} is in rollout stage {stage}: human approval required"),
        (Intent::Execute, Stage::Canary) => {
            format!("runbook {id} executed (rollout stage {stage}: this target is in the canary)")
        }
        _ => return None,
    })
}

/// Every fact the execution of an answered (approved) approval depends on. What was safe when
/// the approval was asked for may not be safe any more: each is checked again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApprovedFacts {
    /// Who approved.
    pub approver: String,
    /// Why the incident stored with the approval cannot be read, if it cannot.
    pub unreadable: Option<String>,
    /// The approval's runbook id.
    pub runbook: String,
    /// The runbook is still in the catalogue.
    pub runbook_exists: bool,
    /// Its dry run: `Some("runbook dry_run")` or `Some("worker dry_run")` when the approved action
    /// must only be checked and reserved (an approval never overrides shadow mode).
    pub dry_run: Option<&'static str>,
    /// Why the action does not render any more, if it does not.
    pub render_error: Option<String>,
    /// Why the action is not the one approved (it renders or pins differently now, or the live
    /// state it is bound to cannot be read), if it is not.
    pub unbound: Option<String>,
    /// How old the incident is (None: no `detected_at`).
    pub age: Option<Duration>,
    /// The freshness limit.
    pub max_age: Duration,
    /// The store's guardrail answer for the execution.
    pub guardrail: GuardrailFact,
}

/// What an approved action may do now, first check that fails wins.
pub(crate) fn decide_approved(f: &ApprovedFacts) -> Verdict {
    let approver = &f.approver;
    let aborted = |why: String| {
        Verdict::Final(Final::new(
            Decision::Aborted,
            format!("approved by {approver}, but {why}"),
        ))
    };
    if let Some(why) = &f.unreadable {
        return aborted(format!("the stored incident is unreadable: {why}"));
    }
    if !f.runbook_exists {
        return aborted(format!("runbook {} no longer exists", f.runbook));
    }
    if let Some(why) = &f.render_error {
        return aborted(format!("the action no longer renders: {why}"));
    }
    if let Some(why) = &f.unbound {
        return aborted(why.clone());
    }
    if let Some(age) = f.age.filter(|a| *a > f.max_age) {
        return Verdict::Final(Final::new(
            Decision::Expired,
            format!(
                "approved by {approver}, but the incident is {} old, older than max_incident_age {}: never act \
                 on stale data",
                human(age),
                human(f.max_age)
            ),
        ));
    }
    if let GuardrailFact::Blocked(g, detail) = &f.guardrail {
        return Verdict::Final(Final::blocked(
            *g,
            format!("approved by {approver}, but the guardrails changed since: {detail}"),
        ));
    }
    match f.dry_run {
        Some(which) => Verdict::Proceed(
            Intent::DryRun,
            format!(
                "approved by {approver}; dry run ({which}): guardrails checked and reserved, action rendered but not \
                 executed"
            ),
        ),
        None => Verdict::Proceed(Intent::Execute, format!("approved by {approver}")),
    }
}

/// `1h2m3s`-style duration for reasons.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests;
