//! Table tests of the decision order: every rule, its edge and the reason text it gives.
//! Kept apart so `mod.rs` reads as the decision order alone.

use super::*;

fn rb(mode: Mode, dry_run: bool) -> RunbookFacts {
    RunbookFacts {
        id: "restart-pod".into(),
        min_confidence: 0.8,
        mode,
        dry_run,
        risk: "LOW",
        demoted: None,
        rollout: None,
    }
}

fn base() -> Facts {
    Facts {
        invalid: None,
        seen: Seen::New,
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
        Verdict::Final(f) => f.decision,
        Verdict::Proceed(i, _) => i.decision(),
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
                f.seen = Seen::Handled(None);
                f.age = Some(Duration::from_secs(10_000));
                f.runbook = None;
            },
            Decision::Rejected,
        ),
        (
            "2 duplicate beats expired",
            |f| {
                f.seen = Seen::Handled(None);
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
        Verdict::Final(Final {
            decision: Decision::Blocked,
            reason: "cooldown active (212s remaining)".into(),
            guardrail: Some(Guardrail::Cooldown)
        })
    );
}

#[test]
fn reasons_name_the_numbers() {
    let mut f = base();
    f.confidence = 0.75;
    let Verdict::Final(Final { reason, .. }) = decide(&f) else {
        panic!()
    };
    assert_eq!(reason, "confidence 0.75 < 0.8 required by runbook restart-pod");
    let mut f = base();
    f.age = Some(Duration::from_secs(3723));
    let Verdict::Final(Final { reason, .. }) = decide(&f) else {
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
    assert!(matches!(decide(&f), Verdict::Proceed(Intent::Execute, _)));
    f.runbook = Some(rb(Mode::Suggest, false));
    assert!(matches!(decide(&f), Verdict::Proceed(Intent::Suggest, _)));
}

fn final_of(v: Verdict) -> Final {
    match v {
        Verdict::Final(f) => f,
        other => panic!("not final: {other:?}"),
    }
}

/// Rules 1, 2 and 6 say what the audit topic says: the engine writes these reasons.
#[test]
fn rejected_duplicate_interrupted_and_blocked_say_why() {
    let f = Facts::rejected("confidence: must be a number".into());
    assert_eq!(
        final_of(decide(&f)),
        Final::new(
            Decision::Rejected,
            "invalid incident: confidence: must be a number".into()
        )
    );
    let mut f = base();
    f.seen = Seen::Handled(Some(Previous {
        decision: Decision::Executed,
        worker: "remediator-0".into(),
        decided_at: "2026-01-01T00:00:00+00:00".into(),
    }));
    assert_eq!(
        final_of(decide(&f)).reason,
        "incident id already handled (executed by remediator-0 at 2026-01-01T00:00:00+00:00); not acting again"
    );
    f.seen = Seen::Interrupted("remediator-1".into());
    assert_eq!(
        final_of(decide(&f)),
        Final::new(
            Decision::Aborted,
            "a previous attempt by remediator-1 was interrupted while executing; its effect is unknown and an \
                 action is never run twice, so it is not retried"
                .into()
        )
    );
    let mut f = base();
    f.guardrail = GuardrailFact::Blocked(Guardrail::RateLimit, "rate limit 2/hour reached".into());
    assert_eq!(
        final_of(decide(&f)),
        Final::blocked(Guardrail::RateLimit, "rate limit 2/hour reached".into())
    );
}

fn approved() -> ApprovedFacts {
    ApprovedFacts {
        approver: "alice".into(),
        unreadable: None,
        runbook: "restart-pod".into(),
        runbook_exists: true,
        dry_run: None,
        render_error: None,
        unbound: None,
        age: Some(Duration::from_secs(10)),
        max_age: Duration::from_secs(900),
        guardrail: GuardrailFact::Allowed,
    }
}

/// Each row makes one check fail together with every later one: the first wins, and its
/// reason names the approver.
#[test]
fn an_approved_action_is_checked_again_first_failure_wins() {
    type Row = (fn(&mut ApprovedFacts), Decision, &'static str);
    let rows: Vec<Row> = vec![
        (
            |f| {
                f.unreadable = Some("id: is missing".into());
                f.runbook_exists = false;
                f.age = Some(Duration::from_secs(901));
            },
            Decision::Aborted,
            "approved by alice, but the stored incident is unreadable: id: is missing",
        ),
        (
            |f| {
                f.runbook_exists = false;
                f.render_error = Some("x".into());
            },
            Decision::Aborted,
            "approved by alice, but runbook restart-pod no longer exists",
        ),
        (
            |f| {
                f.render_error = Some("context.pod_name: is missing".into());
                f.unbound = Some("x".into());
            },
            Decision::Aborted,
            "approved by alice, but the action no longer renders: context.pod_name: is missing",
        ),
        (
            |f| {
                f.unbound = Some("it renders differently now".into());
                f.age = Some(Duration::from_secs(901));
            },
            Decision::Aborted,
            "approved by alice, but it renders differently now",
        ),
        (
            |f| {
                f.age = Some(Duration::from_secs(901));
                f.guardrail = GuardrailFact::Blocked(Guardrail::Cooldown, "x".into());
            },
            Decision::Expired,
            "approved by alice, but the incident is 15m1s old, older than max_incident_age 15m: never act on \
                 stale data",
        ),
        (
            |f| {
                f.guardrail = GuardrailFact::Blocked(Guardrail::Cooldown, "cooldown active".into());
                f.dry_run = Some("worker dry_run");
            },
            Decision::Blocked,
            "approved by alice, but the guardrails changed since: cooldown active",
        ),
    ];
    for (set, decision, reason) in rows {
        let mut f = approved();
        set(&mut f);
        let got = final_of(decide_approved(&f));
        assert_eq!((got.decision, got.reason.as_str()), (decision, reason));
    }
    let mut f = approved();
    f.age = Some(Duration::from_secs(900));
    assert_eq!(
        decide_approved(&f),
        Verdict::Proceed(Intent::Execute, "approved by alice".into()),
        "exactly at the limit is fresh"
    );
    f.dry_run = Some("runbook dry_run");
    assert_eq!(
        decide_approved(&f),
        Verdict::Proceed(
            Intent::DryRun,
            "approved by alice; dry run (runbook dry_run): guardrails checked and reserved, action rendered but \
                 not executed"
                .into()
        )
    );
}

/// A rollout runbook is decided by its stage: shadow is a dry run, approval and the targets
/// outside a canary ask a human, the canary's targets and auto run (a dry run where one is set);
/// each reason names the stage.
#[test]
fn a_rollout_stage_chooses_the_intent_and_says_so() {
    let with = |stage, share, in_canary, dry| {
        let mut f = base();
        f.global_dry_run = dry;
        f.runbook = Some(RunbookFacts {
            rollout: Some(RolloutFact {
                stage,
                share,
                in_canary,
            }),
            ..rb(Mode::Auto, false)
        });
        match decide(&f) {
            Verdict::Proceed(i, reason) => (i, reason),
            Verdict::Final(f) => panic!("final {f:?}"),
        }
    };
    let cases = [
        (
            (Stage::Shadow, None, false, false),
            Intent::DryRun,
            "runbook restart-pod is in rollout stage shadow: guardrails checked and reserved, action rendered, \
             not executed (it would have run)",
        ),
        (
            (Stage::Approval, None, false, false),
            Intent::Approval,
            "runbook restart-pod is in rollout stage approval: human approval required",
        ),
        (
            (Stage::Canary, Some(25), false, false),
            Intent::Approval,
            "runbook restart-pod is in rollout stage canary 25% and this target is outside the canary: \
             human approval required",
        ),
        (
            (Stage::Canary, Some(25), true, false),
            Intent::Execute,
            "runbook restart-pod executed (rollout stage canary 25%: this target is in the canary)",
        ),
        (
            (Stage::Auto, None, false, false),
            Intent::Execute,
            "runbook restart-pod executed",
        ),
        (
            (Stage::Canary, Some(25), true, true),
            Intent::DryRun,
            "dry run: guardrails checked and reserved, action rendered but not executed",
        ),
        (
            (Stage::Auto, None, false, true),
            Intent::DryRun,
            "dry run: guardrails checked and reserved, action rendered but not executed",
        ),
    ];
    for ((stage, share, member, dry), intent, reason) in cases {
        assert_eq!(
            with(stage, share, member, dry),
            (intent, reason.to_string()),
            "{stage:?} {share:?} in_canary={member} dry_run={dry}"
        );
    }
}
