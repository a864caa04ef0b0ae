//! Every guardrail and gate at its edge and one past it, through the whole engine
//! (`Engine::handle`: parse, match, decide, store, simulated executor, outcome), not only in the
//! unit that implements it: exactly N act and the N+1st is blocked with the reason an on-call
//! engineer reads; a cooldown holds at its last millisecond and frees at the next; one half-open
//! probe, not two.
//!
//! Time-driven edges run on the in-memory store with a manual clock (to the millisecond). The
//! count-driven edges run on the in-memory store and, when `REDIS_URL` is set (always under
//! `scripts/test.sh`), on the real Redis store too: the same pipeline, the same answers.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, TimeZone, Utc};
use remediator::clock::{Clock, ManualClock};
use remediator::engine::{Engine, EventIds, Handled, Settings, Source};
use remediator::executor::simulated::{Faults, SimulatedExecutor};
use remediator::guardrails::memory::MemoryStore;
use remediator::guardrails::redis::RedisStore;
use remediator::guardrails::{Guardrail, Store};
use remediator::metrics::Metrics;
use remediator::outcome::{Decision, Outcome};
use remediator::runbook::Catalogue;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

/// One runbook: restart a pod (self-healing), verified by one post-check.
fn runbook(min_confidence: f64, max_per_hour: u32, cooldown_minutes: u32) -> String {
    format!(
        r#"
runbooks:
  restart:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: {min_confidence}
    max_per_hour: {max_per_hour}
    cooldown_minutes: {cooldown_minutes}
    action: {{kind: delete_pod, namespace: "{{namespace}}", pod: "{{pod_name}}"}}
    post_checks: [pod_becomes_ready]
    rollback: null
"#
    )
}

const T0: (i32, u32, u32, u32, u32, u32) = (2026, 11, 25, 3, 0, 0);

struct Rig {
    engine: Engine,
    executor: Arc<SimulatedExecutor>,
    clock: ManualClock,
    n: Cell<i64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Memory,
    Redis,
}

/// The backends a count-driven edge runs on: memory always, Redis when `REDIS_URL` is set.
fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Memory];
    if common::redis_url().is_some() {
        b.push(Backend::Redis);
    }
    b
}

async fn rig(backend: Backend, runbooks: &str, faults: Faults, settings: Settings) -> Rig {
    let (y, mo, d, h, mi, s) = T0;
    let clock = ManualClock::new(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap());
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let store: Arc<dyn Store> = match backend {
        Backend::Memory => Arc::new(MemoryStore::new(Arc::clone(&shared))),
        Backend::Redis => {
            let url = common::redis_url().expect("REDIS_URL");
            let prefix = format!("edges-{}", uuid::Uuid::new_v4());
            Arc::new(
                RedisStore::connect(&url, &prefix, Duration::from_secs(2))
                    .await
                    .expect("connect to Redis"),
            )
        }
    };
    let executor = Arc::new(SimulatedExecutor::with_faults(faults));
    let engine = Engine::new(
        Arc::new(Catalogue::from_yaml(runbooks, "edges").expect("runbooks load")),
        store,
        executor.clone(),
        shared,
        settings,
        Metrics::new(),
        EventIds::Random,
    );
    Rig {
        engine,
        executor,
        clock,
        n: Cell::new(0),
    }
}

/// A crash-looping pod of `service` (one pod per service, so every edge below is about the
/// runbook and service, whatever else the store keys on).
fn crash(id: &str, service: &str) -> String {
    incident(id, service, 0.95, None)
}

fn incident(id: &str, service: &str, confidence: f64, detected_at: Option<DateTime<Utc>>) -> String {
    let detected = detected_at
        .map(|t| format!(r#","detected_at":"{}""#, t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or_default();
    format!(
        r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":{confidence},"service":"{service}","context":{{"pod_name":"{service}-0","namespace":"production"}}{detected}}}"#
    )
}

impl Rig {
    fn source(&self) -> Source {
        let n = self.n.get();
        self.n.set(n + 1);
        Source {
            topic: "incidents".into(),
            partition: 0,
            offset: n,
        }
    }

    async fn handle(&self, json: &str, source: &Source) -> Handled {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.engine
                .handle(json.as_bytes(), Some(source), &format!("attempt-{}", source.offset)),
        )
        .await
        .expect("handled within 20 s")
        .expect("handled")
    }

    async fn send(&self, json: &str) -> Outcome {
        let src = self.source();
        let h = self.handle(json, &src).await;
        assert_eq!(h.outcomes.len(), 1, "one outcome per incident");
        let o = h.outcomes.into_iter().next().unwrap();
        common::schema::assert_valid_outcome(&serde_json::to_value(&o).unwrap());
        o
    }

    fn advance_ms(&self, ms: i64) {
        self.clock.advance(ChronoDuration::milliseconds(ms));
    }

    fn actions(&self) -> usize {
        self.executor.journal().len()
    }
}

fn assert_executed(o: &Outcome) {
    assert_eq!(o.decision, Decision::Executed, "{o:?}");
    assert_eq!(o.success, Some(true), "{o:?}");
}

fn assert_blocked(o: &Outcome, guardrail: Guardrail, reason: &str) {
    assert_eq!(o.decision, Decision::Blocked, "{o:?}");
    assert_eq!(o.guardrail, Some(guardrail), "{o:?}");
    assert_eq!(o.reason, reason, "{o:?}");
}

fn settings() -> Settings {
    Settings::default()
}

// --- rate limit per (runbook, service) ------------------------------------------------------------

#[tokio::test]
async fn rate_limit_allows_exactly_max_per_hour_then_blocks_the_next() {
    for backend in backends() {
        let r = rig(backend, &runbook(0.8, 3, 0), Faults::default(), settings()).await;
        for i in 0..3 {
            assert_executed(&r.send(&crash(&format!("R{i}"), "api")).await);
        }
        let o = r.send(&crash("R3", "api")).await;
        assert_blocked(
            &o,
            Guardrail::RateLimit,
            "rate limit 3/hour reached (next slot in 3600s)",
        );
        assert_eq!(r.actions(), 3, "{backend:?}: exactly max_per_hour executions");
        // The limit is per (runbook, service): another service is not affected.
        assert_executed(&r.send(&crash("R4", "web")).await);
        assert_eq!(r.actions(), 4, "{backend:?}");
    }
}

#[tokio::test]
async fn rate_limit_window_slides_at_exactly_one_hour() {
    let r = rig(Backend::Memory, &runbook(0.8, 2, 0), Faults::default(), settings()).await;
    assert_executed(&r.send(&crash("W0", "api")).await);
    r.advance_ms(10 * 60 * 1000);
    assert_executed(&r.send(&crash("W1", "api")).await);
    // The first slot frees one hour after it was taken: blocked at its last millisecond...
    r.advance_ms(50 * 60 * 1000 - 1);
    let o = r.send(&crash("W2", "api")).await;
    assert_blocked(&o, Guardrail::RateLimit, "rate limit 2/hour reached (next slot in 1s)");
    // ...and allowed at the next.
    r.advance_ms(1);
    assert_executed(&r.send(&crash("W3", "api")).await);
    // The second slot (taken 10 minutes later) still counts: full again.
    let o = r.send(&crash("W4", "api")).await;
    assert_blocked(
        &o,
        Guardrail::RateLimit,
        "rate limit 2/hour reached (next slot in 600s)",
    );
    assert_eq!(r.actions(), 3);
}

/// Only an action (or its dry run) holds guardrail capacity: a runbook in `approval` or `suggest`
/// mode checks the guardrails (a blocked one says so) but reserves nothing, so however many
/// incidents wait for a human, the rate limit and the blast radius are still free for the action
/// a human approves.
#[tokio::test]
async fn approval_and_suggest_outcomes_hold_no_guardrail_capacity() {
    for backend in backends() {
        for (mode, decision) in [("approval", Decision::ApprovalRequired), ("suggest", Decision::Manual)] {
            let yaml =
                runbook(0.8, 1, 0).replace("    rollback: null", &format!("    rollback: null\n    mode: {mode}"));
            let mut s = settings();
            s.guardrails.max_concurrent_actions = 1;
            s.guardrails.max_affected_services = 1;
            let r = rig(backend, &yaml, Faults::default(), s).await;
            for (i, service) in ["api", "api", "web"].iter().enumerate() {
                let o = r.send(&crash(&format!("P{i}"), service)).await;
                assert_eq!(o.decision, decision, "{backend:?} {mode} #{i}: {o:?}");
                assert_eq!(o.guardrail, None, "{backend:?} {mode} #{i}: {o:?}");
            }
            assert_eq!(r.actions(), 0, "{backend:?} {mode}");
        }
    }
}

// --- cooldown -------------------------------------------------------------------------------------

#[tokio::test]
async fn cooldown_holds_at_its_last_millisecond_and_frees_at_the_next() {
    let r = rig(Backend::Memory, &runbook(0.8, 100, 5), Faults::default(), settings()).await;
    assert_executed(&r.send(&crash("C0", "api")).await);
    r.advance_ms(5 * 60 * 1000 - 1);
    let o = r.send(&crash("C1", "api")).await;
    assert_blocked(&o, Guardrail::Cooldown, "cooldown active (1s remaining)");
    // Another service has its own cooldown.
    assert_executed(&r.send(&crash("C2", "web")).await);
    r.advance_ms(1);
    assert_executed(&r.send(&crash("C3", "api")).await);
    // The cooldown restarts from the newest execution.
    let o = r.send(&crash("C4", "api")).await;
    assert_blocked(&o, Guardrail::Cooldown, "cooldown active (300s remaining)");
    assert_eq!(r.actions(), 3);
}

// --- circuit breaker ------------------------------------------------------------------------------

fn failing(services: &[&str]) -> Faults {
    Faults {
        fail_post_checks_for: services.iter().map(|s| s.to_string()).collect(),
        ..Faults::default()
    }
}

#[tokio::test]
async fn circuit_opens_at_the_threshold_not_before_and_waits_the_recovery_timeout() {
    let r = rig(
        Backend::Memory,
        &runbook(0.8, 100, 0),
        failing(&["f0", "f1", "f2"]),
        settings(),
    )
    .await;
    // failure_threshold = 3: two failures leave it closed...
    for i in 0..2 {
        let o = r.send(&crash(&format!("F{i}"), &format!("f{i}"))).await;
        assert_eq!((o.decision, o.success), (Decision::Executed, Some(false)), "{o:?}");
        assert!(!o.reason.contains("circuit opened"), "{o:?}");
    }
    // ...the third opens it, and says so.
    let o = r.send(&crash("F2", "f2")).await;
    assert_eq!(o.success, Some(false));
    assert!(
        o.reason.ends_with("; circuit opened after 3 consecutive failures"),
        "{o:?}"
    );
    // Open for recovery_timeout (300 s): blocked at its last millisecond.
    r.advance_ms(300_000 - 1);
    let o = r.send(&crash("F3", "healthy")).await;
    assert_blocked(&o, Guardrail::CircuitOpen, "circuit open (1s until half-open)");
    assert_eq!(r.actions(), 3);
    // At recovery_timeout the next execution is the half-open probe; its success closes it.
    r.advance_ms(1);
    let o = r.send(&crash("F4", "healthy")).await;
    assert_executed(&o);
    assert!(
        o.reason.contains("(half-open probe succeeded: circuit closed)"),
        "{o:?}"
    );
    assert_executed(&r.send(&crash("F5", "other")).await);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_circuit_for_another_recovery_timeout() {
    let r = rig(
        Backend::Memory,
        &runbook(0.8, 100, 0),
        failing(&["f0", "f1", "f2", "f3"]),
        settings(),
    )
    .await;
    for i in 0..3 {
        r.send(&crash(&format!("P{i}"), &format!("f{i}"))).await;
    }
    r.advance_ms(300_000);
    let o = r.send(&crash("P3", "f3")).await;
    assert_eq!((o.decision, o.success), (Decision::Executed, Some(false)), "{o:?}");
    assert!(
        o.reason.ends_with("; circuit opened after 4 consecutive failures"),
        "{o:?}"
    );
    let o = r.send(&crash("P4", "healthy")).await;
    assert_blocked(&o, Guardrail::CircuitOpen, "circuit open (300s until half-open)");
    assert_eq!(r.actions(), 4);
}

#[tokio::test]
async fn half_open_admits_one_probe_not_two() {
    for backend in backends() {
        let mut s = settings();
        // Real Redis keeps real time: a short recovery keeps the test fast on both backends.
        s.guardrails.recovery_timeout = Duration::from_millis(1500);
        let faults = Faults {
            action_delay: Duration::from_millis(400),
            ..failing(&["f0", "f1", "f2"])
        };
        let r = rig(backend, &runbook(0.8, 100, 0), faults, s).await;
        for i in 0..3 {
            r.send(&crash(&format!("H{i}"), &format!("f{i}"))).await;
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
        r.advance_ms(1600);
        // Two incidents at once: the first takes the probe, the second finds it in flight.
        let (s1, s2) = (r.source(), r.source());
        let (a, b) = (crash("H3", "p1"), crash("H4", "p2"));
        let (h1, h2) = tokio::join!(r.handle(&a, &s1), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            r.handle(&b, &s2).await
        });
        let (o1, o2) = (&h1.outcomes[0], &h2.outcomes[0]);
        assert_executed(o1);
        assert!(o1.reason.contains("half-open probe succeeded"), "{backend:?}: {o1:?}");
        assert_blocked(o2, Guardrail::CircuitOpen, "circuit half-open, probe in flight");
        assert_eq!(r.actions(), 4, "{backend:?}: three failures and one probe");
    }
}

// --- blast radius ---------------------------------------------------------------------------------

#[tokio::test]
async fn max_affected_services_admits_exactly_n_services_in_the_window() {
    for backend in backends() {
        let mut s = settings();
        s.guardrails.max_affected_services = 2;
        let r = rig(backend, &runbook(0.8, 100, 0), Faults::default(), s).await;
        assert_executed(&r.send(&crash("B0", "a")).await);
        assert_executed(&r.send(&crash("B1", "b")).await);
        let o = r.send(&crash("B2", "c")).await;
        assert_blocked(
            &o,
            Guardrail::BlastRadius,
            "max affected services (2) in window reached",
        );
        // A service already touched in the window is always allowed again.
        assert_executed(&r.send(&crash("B3", "a")).await);
        assert_eq!(r.actions(), 3, "{backend:?}");
    }
}

#[tokio::test]
async fn affected_services_window_frees_at_its_end() {
    let mut s = settings();
    s.guardrails.max_affected_services = 1;
    let r = rig(Backend::Memory, &runbook(0.8, 100, 0), Faults::default(), s).await;
    assert_executed(&r.send(&crash("V0", "a")).await);
    r.advance_ms(15 * 60 * 1000 - 1);
    let o = r.send(&crash("V1", "b")).await;
    assert_blocked(
        &o,
        Guardrail::BlastRadius,
        "max affected services (1) in window reached",
    );
    r.advance_ms(1);
    assert_executed(&r.send(&crash("V2", "b")).await);
}

#[tokio::test]
async fn max_concurrent_actions_admits_exactly_n_in_flight() {
    for backend in backends() {
        let mut s = settings();
        s.guardrails.max_concurrent_actions = 2;
        let faults = Faults {
            action_delay: Duration::from_millis(500),
            ..Faults::default()
        };
        let r = rig(backend, &runbook(0.8, 100, 0), faults, s).await;
        let (s1, s2, s3) = (r.source(), r.source(), r.source());
        let (a, b, c) = (crash("M0", "a"), crash("M1", "b"), crash("M2", "c"));
        let later = |json: String, src: Source| {
            let r = &r;
            async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                r.handle(&json, &src).await
            }
        };
        let (h1, h2, h3) = tokio::join!(r.handle(&a, &s1), r.handle(&b, &s2), later(c, s3));
        assert_executed(&h1.outcomes[0]);
        assert_executed(&h2.outcomes[0]);
        assert_blocked(
            &h3.outcomes[0],
            Guardrail::BlastRadius,
            "max concurrent actions (2) in flight",
        );
        // Finished actions free their slots.
        assert_executed(&r.send(&crash("M3", "c")).await);
        assert_eq!(r.actions(), 3, "{backend:?}");
    }
}

// --- confidence gate ------------------------------------------------------------------------------

#[tokio::test]
async fn confidence_exactly_at_min_confidence_acts_and_just_below_does_not() {
    let r = rig(Backend::Memory, &runbook(0.8, 100, 0), Faults::default(), settings()).await;
    assert_executed(&r.send(&incident("K0", "a", 0.8, None)).await);
    let o = r.send(&incident("K1", "b", 0.7999, None)).await;
    assert_eq!(o.decision, Decision::Manual, "{o:?}");
    assert_eq!(o.reason, "confidence 0.7999 < 0.8 required by runbook restart");
    assert_eq!(r.actions(), 1);
}

// --- staleness ------------------------------------------------------------------------------------

#[tokio::test]
async fn an_incident_exactly_max_incident_age_old_acts_and_one_millisecond_older_is_expired() {
    let r = rig(Backend::Memory, &runbook(0.8, 100, 0), Faults::default(), settings()).await;
    let now = r.clock.now();
    let max_age = ChronoDuration::minutes(15);
    assert_executed(&r.send(&incident("A0", "a", 0.95, Some(now - max_age))).await);
    let o = r
        .send(&incident(
            "A1",
            "b",
            0.95,
            Some(now - max_age - ChronoDuration::milliseconds(1)),
        ))
        .await;
    assert_eq!(o.decision, Decision::Expired, "{o:?}");
    assert!(
        o.reason.starts_with("incident is 15m") && o.reason.ends_with("older than max_incident_age 15m"),
        "{o:?}"
    );
    // Clock skew: up to max_incident_age in the future is tolerated, beyond it is not.
    assert_executed(&r.send(&incident("A2", "c", 0.95, Some(now + max_age))).await);
    let o = r
        .send(&incident(
            "A3",
            "d",
            0.95,
            Some(now + max_age + ChronoDuration::milliseconds(1)),
        ))
        .await;
    assert_eq!(o.decision, Decision::Expired, "{o:?}");
    assert!(o.reason.contains("in the future"), "{o:?}");
    assert_eq!(r.actions(), 2);
}

// --- idempotency ----------------------------------------------------------------------------------

#[tokio::test]
async fn one_incident_id_acts_once_whatever_arrives_after_it() {
    for backend in backends() {
        let r = rig(backend, &runbook(0.8, 100, 0), Faults::default(), settings()).await;
        let json = crash("I0", "a");
        let src = r.source();
        let first = r.handle(&json, &src).await;
        assert_executed(&first.outcomes[0]);
        // The same message again (a redelivery): its recorded outcome, byte for byte.
        let again = r.handle(&json, &src).await;
        assert!(again.republished, "{backend:?}");
        assert_eq!(again.outcomes, first.outcomes, "{backend:?}");
        // Another message with the same id: a duplicate, not acted on.
        let o = r.send(&json).await;
        assert_eq!(o.decision, Decision::Duplicate, "{o:?}");
        assert!(
            o.reason.starts_with("incident id already handled (executed by "),
            "{backend:?}: {o:?}"
        );
        assert_eq!(r.actions(), 1, "{backend:?}: executed once");
    }
}

// --- the reasons an on-call engineer reads --------------------------------------------------------

/// Every decision that needs no action carries the reason text of the contract, word for word:
/// the audit topic is read by people at 3 AM and parsed by their tools.
#[tokio::test]
async fn every_decision_says_why_in_the_words_of_the_contract() {
    let yaml = r#"
runbooks:
  restart:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.8
    action: {kind: delete_pod, namespace: "{namespace}", pod: "{pod_name}"}
    post_checks: [pod_becomes_ready]
    rollback: null
  ask:
    risk: LOW
    mode: approval
    triggers: [OOMKilled]
    min_confidence: 0.8
    action: {kind: delete_pod, namespace: "{namespace}", pod: "{pod_name}"}
    rollback: null
  risky:
    risk: HIGH
    triggers: [bad_deploy]
    min_confidence: 0.8
    action: {kind: rollout_undo, namespace: "{namespace}", deployment: "{deployment}"}
    rollback: null
  hint:
    risk: LOW
    mode: suggest
    triggers: [disk_full]
    min_confidence: 0.8
    action: {kind: delete_pod, namespace: "{namespace}", pod: "{pod_name}"}
    rollback: null
  shadow:
    risk: LOW
    dry_run: true
    triggers: [high_latency]
    min_confidence: 0.8
    action: {kind: delete_pod, namespace: "{namespace}", pod: "{pod_name}"}
    rollback: null
"#;
    let r = rig(Backend::Memory, yaml, Faults::default(), settings()).await;
    let now = r.clock.now();
    let with = |id: &str, root_cause: &str, context: &str, extra: &str| {
        format!(
            r#"{{"id":"{id}","root_cause":"{root_cause}","confidence":0.95,"service":"api","context":{{{context}}}{extra}}}"#
        )
    };
    let pod = r#""pod_name":"api-0","namespace":"production""#;
    let cases = [
        (
            with("Q1", "OOMKilled", pod, ""),
            Decision::ApprovalRequired,
            "runbook ask requires human approval; approval ID pending until 2026-11-25T04:00:00Z".to_string(),
        ),
        (
            with("Q2", "bad_deploy", r#""deployment":"api","namespace":"production""#, ""),
            Decision::ApprovalRequired,
            "runbook risky is HIGH risk: human approval required; approval ID pending until 2026-11-25T04:00:00Z"
                .into(),
        ),
        (
            with("Q3", "disk_full", pod, ""),
            Decision::Manual,
            "runbook hint only suggests: run the suggested action by hand".into(),
        ),
        (
            with("Q4", "high_latency", pod, ""),
            Decision::DryRun,
            "dry run: guardrails checked and reserved, action rendered but not executed".into(),
        ),
        (
            with("Q5", "solar_flare", pod, ""),
            Decision::Manual,
            r#"no runbook matches root cause "solar_flare" or its symptoms"#.into(),
        ),
        (
            with("Q6", "CrashLoopBackOff", r#""namespace":"production""#, ""),
            Decision::Aborted,
            "action not rendered: context.pod_name: is missing from the incident context".into(),
        ),
        (
            with(
                "Q7",
                "CrashLoopBackOff",
                pod,
                &format!(
                    r#","detected_at":"{}""#,
                    (now + ChronoDuration::minutes(20)).to_rfc3339_opts(SecondsFormat::Millis, true)
                ),
            ),
            Decision::Expired,
            "incident detected_at is 20m in the future, more than max_incident_age 15m ahead: its source's clock is \
             wrong, so its freshness is unknown"
                .into(),
        ),
        (
            with(
                "Q8",
                "CrashLoopBackOff",
                pod,
                &format!(
                    r#","detected_at":"{}""#,
                    (now - ChronoDuration::seconds(3723)).to_rfc3339_opts(SecondsFormat::Millis, true)
                ),
            ),
            Decision::Expired,
            "incident is 1h2m3s old, older than max_incident_age 15m".into(),
        ),
    ];
    for (json, decision, reason) in cases {
        let o = r.send(&json).await;
        // The approval id is random: named ID here.
        let got = match o.reason.split_once("; approval ") {
            Some((head, tail)) if tail.len() > 36 => format!("{head}; approval ID{}", &tail[36..]),
            _ => o.reason.clone(),
        };
        assert_eq!((o.decision, got.as_str()), (decision, reason.as_str()), "{json}");
    }
    assert_eq!(r.actions(), 0);
}
