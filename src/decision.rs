//! The decision order (docs/design.md#decision-order) as one pure function.
//!
//! [`decide`] takes every fact a decision depends on and returns the first rule that applies.
//! No I/O, no clock: table tests cover the whole order. The pipeline calls it once, before it
//! asks the store, with `invalid: None`, `duplicate: false` and `GuardrailFact::Unknown`: rule 1
//! (`rejected`) is decided where the event fails to parse, and rules 2 (`duplicate`) and 6
//! (`blocked`) from the store's answer to the claim and reservation, in `src/pipeline.rs`.
//!
//! One refinement of the order: a runbook template that cannot be rendered safely from the
//! incident (missing or invalid `context` values, a namespace outside the runbook's scope)
//! aborts right after the confidence check, before any guardrail is reserved: an action that
//! cannot run must not spend a rate-limit slot or a blast-radius lease.

use crate::guardrails::Guardrail;
use crate::outcome::{Decision, Mode};
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
}

/// Every fact a decision depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Why the event is invalid, if it is.
    pub invalid: Option<String>,
    /// The incident id was handled before.
    pub duplicate: bool,
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

/// What the worker will do with the incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A final decision that needs no execution.
    Final {
        /// The decision.
        decision: Decision,
        /// Why.
        reason: String,
        /// For `blocked`.
        guardrail: Option<Guardrail>,
    },
    /// Guardrails must be consulted (`GuardrailFact::Unknown`) or have allowed it: the
    /// pipeline proceeds with this intent.
    Proceed(Intent),
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

fn final_(decision: Decision, reason: String) -> Verdict {
    Verdict::Final {
        decision,
        reason,
        guardrail: None,
    }
}

/// Apply the decision order (docs/design.md#decision-order), first rule that applies wins.
pub fn decide(f: &Facts) -> Verdict {
    if let Some(why) = &f.invalid {
        return final_(Decision::Rejected, why.clone());
    }
    if f.duplicate {
        return final_(
            Decision::Duplicate,
            "incident id already handled; not acting again".into(),
        );
    }
    if let Some(age) = f.age.filter(|a| *a > f.max_age) {
        return final_(
            Decision::Expired,
            format!(
                "incident is {} old, older than max_incident_age {}",
                human(age),
                human(f.max_age)
            ),
        );
    }
    if f.ahead > f.max_age {
        return final_(
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
        return final_(
            Decision::Manual,
            format!("no runbook matches root cause {:?} or its symptoms", f.root_cause),
        );
    };
    if f.confidence < rb.min_confidence {
        return final_(
            Decision::Manual,
            format!(
                "confidence {} < {} required by runbook {}",
                f.confidence, rb.min_confidence, rb.id
            ),
        );
    }
    if let Some(why) = &f.render_error {
        return final_(Decision::Aborted, format!("action not rendered: {why}"));
    }
    if let GuardrailFact::Blocked(g, detail) = &f.guardrail {
        return Verdict::Final {
            decision: Decision::Blocked,
            reason: detail.clone(),
            guardrail: Some(*g),
        };
    }
    Verdict::Proceed(match rb.mode {
        Mode::Approval => Intent::Approval,
        Mode::Auto if rb.demoted.is_some() => Intent::Approval,
        Mode::Suggest => Intent::Suggest,
        _ if rb.dry_run || f.global_dry_run => Intent::DryRun,
        _ => Intent::Execute,
    })
}

/// The reason text for an intent that proceeded.
pub fn intent_reason(intent: Intent, rb: &RunbookFacts) -> String {
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
mod tests {
    use super::*;

    fn rb(mode: Mode, dry_run: bool) -> RunbookFacts {
        RunbookFacts {
            id: "restart-pod".into(),
            min_confidence: 0.8,
            mode,
            dry_run,
            risk: "LOW",
            demoted: None,
        }
    }

    fn base() -> Facts {
        Facts {
            invalid: None,
            duplicate: false,
            age: Some(Duration::from_secs(10)),
            ahead: Duration::ZERO,
            max_age: Duration::from_secs(900),
            root_cause: "CrashLoopBackOff".into(),
            runbook: Some(rb(Mode::Auto, false)),
            confidence: 0.95,
            render_error: None,
            guardrail: GuardrailFact::Allowed,
            global_dry_run: false,
        }
    }

    fn decision(v: &Verdict) -> Decision {
        match v {
            Verdict::Final { decision, .. } => *decision,
            Verdict::Proceed(i) => i.decision(),
        }
    }

    /// Each row sets the facts that make one rule apply *and* the facts of every later rule, so
    /// the row proves the rule wins over everything after it.
    #[test]
    fn first_rule_that_applies_wins() {
        let blocked = GuardrailFact::Blocked(Guardrail::Cooldown, "cooldown active (212s remaining)".into());
        type Row = (&'static str, fn(&mut Facts), Decision);
        let rows: Vec<Row> = vec![
            (
                "1 invalid beats all",
                |f| {
                    f.invalid = Some("confidence: must be a number".into());
                    f.duplicate = true;
                    f.age = Some(Duration::from_secs(10_000));
                    f.runbook = None;
                },
                Decision::Rejected,
            ),
            (
                "2 duplicate beats expired",
                |f| {
                    f.duplicate = true;
                    f.age = Some(Duration::from_secs(10_000));
                    f.runbook = None;
                },
                Decision::Duplicate,
            ),
            (
                "3 expired beats no runbook",
                |f| {
                    f.age = Some(Duration::from_secs(901));
                    f.runbook = None;
                },
                Decision::Expired,
            ),
            (
                "4 no runbook beats low confidence",
                |f| {
                    f.runbook = None;
                    f.confidence = 0.1;
                },
                Decision::Manual,
            ),
            (
                "5 low confidence beats guardrails",
                |f| {
                    f.confidence = 0.79;
                    f.guardrail = GuardrailFact::Blocked(Guardrail::RateLimit, "x".into());
                },
                Decision::Manual,
            ),
            (
                "5b render error beats guardrails",
                |f| {
                    f.render_error = Some("context.pod_name: is missing".into());
                    f.guardrail = GuardrailFact::Blocked(Guardrail::RateLimit, "x".into());
                },
                Decision::Aborted,
            ),
            (
                "6 blocked beats approval",
                |f| {
                    f.runbook = Some(rb(Mode::Approval, true));
                    f.guardrail = GuardrailFact::Blocked(Guardrail::CircuitOpen, "circuit open".into());
                },
                Decision::Blocked,
            ),
            (
                "7 approval beats suggest and dry run",
                |f| {
                    f.runbook = Some(rb(Mode::Approval, true));
                    f.global_dry_run = true;
                },
                Decision::ApprovalRequired,
            ),
            (
                "8 suggest beats dry run",
                |f| {
                    f.runbook = Some(rb(Mode::Suggest, true));
                    f.global_dry_run = true;
                },
                Decision::Manual,
            ),
            (
                "7b a demoted auto runbook asks for approval, even in dry run",
                |f| {
                    f.runbook = Some(RunbookFacts {
                        demoted: Some("40% < 80%".into()),
                        ..rb(Mode::Auto, true)
                    });
                    f.global_dry_run = true;
                },
                Decision::ApprovalRequired,
            ),
            (
                "9 runbook dry run",
                |f| f.runbook = Some(rb(Mode::Auto, true)),
                Decision::DryRun,
            ),
            ("9 global dry run", |f| f.global_dry_run = true, Decision::DryRun),
            ("10 execute", |_| {}, Decision::Executed),
            ("no detected_at is fresh", |f| f.age = None, Decision::Executed),
            (
                "age exactly at the limit is fresh",
                |f| f.age = Some(Duration::from_secs(900)),
                Decision::Executed,
            ),
            (
                "detected_at ahead by up to max_incident_age is clock skew, fresh",
                |f| {
                    f.age = Some(Duration::ZERO);
                    f.ahead = Duration::from_secs(900);
                },
                Decision::Executed,
            ),
            (
                "3 detected_at further ahead than max_incident_age is never fresh",
                |f| {
                    f.age = Some(Duration::ZERO);
                    f.ahead = Duration::from_secs(901);
                },
                Decision::Expired,
            ),
            (
                "confidence exactly at the threshold acts",
                |f| f.confidence = 0.8,
                Decision::Executed,
            ),
        ];
        for (name, set, want) in rows {
            let mut f = base();
            set(&mut f);
            assert_eq!(decision(&decide(&f)), want, "{name}");
        }
        let mut f = base();
        f.guardrail = blocked;
        assert_eq!(
            decide(&f),
            Verdict::Final {
                decision: Decision::Blocked,
                reason: "cooldown active (212s remaining)".into(),
                guardrail: Some(Guardrail::Cooldown)
            }
        );
    }

    #[test]
    fn reasons_name_the_numbers() {
        let mut f = base();
        f.confidence = 0.75;
        let Verdict::Final { reason, .. } = decide(&f) else {
            panic!()
        };
        assert_eq!(reason, "confidence 0.75 < 0.8 required by runbook restart-pod");
        let mut f = base();
        f.age = Some(Duration::from_secs(3723));
        let Verdict::Final { reason, .. } = decide(&f) else {
            panic!()
        };
        assert_eq!(reason, "incident is 1h2m3s old, older than max_incident_age 15m");
    }

    /// Durations in reasons: hours, minutes and seconds, each only when non-zero, `0s` for zero.
    #[test]
    fn durations_read_as_people_write_them() {
        for (secs, text) in [
            (0, "0s"),
            (45, "45s"),
            (60, "1m"),
            (900, "15m"),
            (3600, "1h"),
            (3605, "1h5s"),
            (3723, "1h2m3s"),
            (90_000, "25h"),
        ] {
            assert_eq!(human(Duration::from_secs(secs)), text, "{secs}");
        }
        assert_eq!(human(Duration::from_millis(1_999)), "1s", "whole seconds, rounded down");
    }

    /// What each intent reserves, decides and reports: only an action (or its dry run) holds
    /// guardrail capacity.
    #[test]
    fn each_intent_reserves_decides_and_reports_its_own() {
        for (intent, reserves, decision, mode) in [
            (Intent::Approval, false, Decision::ApprovalRequired, Mode::Approval),
            (Intent::Suggest, false, Decision::Manual, Mode::Suggest),
            (Intent::DryRun, true, Decision::DryRun, Mode::DryRun),
            (Intent::Execute, true, Decision::Executed, Mode::Auto),
        ] {
            assert_eq!(
                (intent.reserves(), intent.decision(), intent.mode()),
                (reserves, decision, mode),
                "{intent:?}"
            );
        }
        let demoted = RunbookFacts {
            demoted: Some("40% < 80% verified".into()),
            ..rb(Mode::Auto, false)
        };
        assert_eq!(
            intent_reason(Intent::Approval, &demoted),
            "runbook restart-pod was demoted from auto to approval (40% < 80% verified): human approval required"
        );
        assert_eq!(
            intent_reason(Intent::Execute, &rb(Mode::Auto, false)),
            "runbook restart-pod executed"
        );
    }

    #[test]
    fn unknown_guardrails_still_tell_the_intent() {
        let mut f = base();
        f.guardrail = GuardrailFact::Unknown;
        assert_eq!(decide(&f), Verdict::Proceed(Intent::Execute));
        f.runbook = Some(rb(Mode::Suggest, false));
        assert_eq!(decide(&f), Verdict::Proceed(Intent::Suggest));
    }
}
