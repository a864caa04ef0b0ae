//! The engine end to end on the in-memory store and the simulated executor: decisions,
//! verification, rollback, circuit breaker, idempotency. Every outcome is schema-checked.

mod common;

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use remediator::clock::{Clock, ManualClock};
use remediator::engine::{Engine, EngineError, EventIds, Message, Settings, Source};
use remediator::executor::simulated::{Faults, SimulatedExecutor};
use remediator::guardrails::memory::MemoryStore;
use remediator::guardrails::{
    Answer, AnswerResult, Approval, CircuitSnapshot, CircuitState, DecideAnswer, DecideRequest, FinishAnswer,
    FinishRequest, GuardrailStore, LedgerStore, PendingSummary, RenewRequest, Renewal, Store, StoreError, TrustStats,
};
use remediator::metrics::Metrics;
use remediator::outcome::{Decision, Outcome};
use remediator::runbook::Catalogue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Rig {
    engine: Engine,
    executor: Arc<SimulatedExecutor>,
    clock: ManualClock,
    store: Arc<Faulty>,
    n: std::cell::Cell<u32>,
}

fn rig(runbooks: &str, faults: Faults, settings: Settings) -> Rig {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap());
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let executor = Arc::new(SimulatedExecutor::with_faults(faults));
    let store = Arc::new(Faulty {
        inner: Box::new(MemoryStore::new(Arc::clone(&shared))),
        lose_decide_answer: AtomicBool::new(false),
        fail_records: AtomicBool::new(false),
        fail_renewals: AtomicBool::new(false),
    });
    let engine = Engine::new(
        Arc::new(Catalogue::from_yaml(runbooks, "test").expect("runbooks load")),
        store.clone(),
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
        store,
        n: std::cell::Cell::new(0),
    }
}

/// A store with faults a test switches on: a decide answer lost on its way back (the script
/// ran, the worker saw a timeout), a store that refuses to record (the worker then retries for
/// ever, as a replica that dies before recording would never record), renewals that fail.
struct Faulty {
    inner: Box<dyn Store>,
    lose_decide_answer: AtomicBool,
    fail_records: AtomicBool,
    fail_renewals: AtomicBool,
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("injected fault".into())
}

#[async_trait::async_trait]
impl GuardrailStore for Faulty {
    async fn decide(&self, req: &DecideRequest) -> Result<DecideAnswer, StoreError> {
        let answer = self.inner.decide(req).await;
        if self.lose_decide_answer.swap(false, Ordering::SeqCst) {
            return Err(unavailable());
        }
        answer
    }
    async fn renew(&self, req: &RenewRequest) -> Result<Renewal, StoreError> {
        if self.fail_renewals.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.renew(req).await
    }
    async fn finish(&self, req: &FinishRequest) -> Result<FinishAnswer, StoreError> {
        self.inner.finish(req).await
    }
    async fn record(&self, incident_id: &str, attempt: &str, outcomes: &str, ttl_ms: u64) -> Result<(), StoreError> {
        if self.fail_records.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.record(incident_id, attempt, outcomes, ttl_ms).await
    }
    async fn circuit(&self, runbook: &str) -> Result<CircuitSnapshot, StoreError> {
        self.inner.circuit(runbook).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait::async_trait]
impl LedgerStore for Faulty {
    async fn create_approval(&self, approval: &Approval, ttl_ms: u64) -> Result<Approval, StoreError> {
        self.inner.create_approval(approval, ttl_ms).await
    }
    async fn answer_approval(&self, id: &str, answer: &Answer) -> Result<AnswerResult, StoreError> {
        self.inner.answer_approval(id, answer).await
    }
    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        self.inner.pending_approvals().await
    }
    async fn pending_summary(&self) -> Result<PendingSummary, StoreError> {
        self.inner.pending_summary().await
    }
    async fn record_trust(&self, runbook: &str, success: bool, window: u32) -> Result<TrustStats, StoreError> {
        self.inner.record_trust(runbook, success, window).await
    }
    async fn trust(&self, runbook: &str, window: u32) -> Result<TrustStats, StoreError> {
        self.inner.trust(runbook, window).await
    }
    async fn demote(&self, runbook: &str, reason: &str) -> Result<bool, StoreError> {
        self.inner.demote(runbook, reason).await
    }
    async fn demotion(&self, runbook: &str) -> Result<Option<String>, StoreError> {
        self.inner.demotion(runbook).await
    }
    async fn promote(&self, runbook: &str) -> Result<bool, StoreError> {
        self.inner.promote(runbook).await
    }
    async fn rollout(
        &self,
        runbook: &str,
        policy: &remediator::rollout::RolloutPolicy,
    ) -> Result<remediator::rollout::RolloutRecord, StoreError> {
        self.inner.rollout(runbook, policy).await
    }
    async fn rollout_apply(
        &self,
        runbook: &str,
        policy: &remediator::rollout::RolloutPolicy,
        transition: remediator::rollout::Transition,
        evidence_id: &str,
    ) -> Result<Result<remediator::rollout::RolloutRecord, remediator::rollout::PromoteRefusal>, StoreError> {
        self.inner.rollout_apply(runbook, policy, transition, evidence_id).await
    }
}

impl Rig {
    async fn send(&self, json: &str) -> Outcome {
        let n = self.n.get();
        self.n.set(n + 1);
        let src = Source {
            topic: "incidents".into(),
            partition: 0,
            offset: n as i64,
        };
        let h = self
            .engine
            .handle(json.as_bytes(), Some(&src), &format!("attempt-{n}"))
            .await
            .expect("handled");
        assert_eq!(h.outcomes.len(), 1, "one outcome per incident");
        let o = h.outcomes.into_iter().next().unwrap();
        common::schema::assert_valid_outcome(&serde_json::to_value(&o).unwrap());
        o
    }
}

const SEED: &str = include_str!("data/seed-runbooks.yaml");

fn crash(id: &str, service: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"{service}","context":{{"pod_name":"{service}-1","namespace":"production"}}}}"#
    )
}

fn scale(id: &str, service: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"high_cpu","confidence":0.9,"service":"{service}","context":{{"deployment":"{service}","namespace":"production","new_replicas":5,"old_replicas":3}}}}"#
    )
}

#[tokio::test]
async fn seed_incidents_give_executed_executed_approval_manual() {
    let r = rig(SEED, Faults::default(), Settings::default());
    let lines: Vec<&str> = include_str!("data/seed-incidents.jsonl").lines().take(4).collect();
    let mut decisions = Vec::new();
    for l in lines {
        decisions.push(r.send(l).await);
    }
    let d: Vec<Decision> = decisions.iter().map(|o| o.decision).collect();
    assert_eq!(
        d,
        [
            Decision::Executed,
            Decision::Executed,
            Decision::ApprovalRequired,
            Decision::Manual
        ]
    );
    assert_eq!(decisions[0].success, Some(true));
    assert_eq!(decisions[0].checks.len(), 3, "two pre-checks and one post-check");
    assert_eq!(
        decisions[2].action.as_ref().unwrap().kind,
        "rollout_undo",
        "approval carries the suggested action"
    );
    let journal = r.executor.journal();
    assert_eq!(journal.len(), 2);
    assert_eq!(journal[0].display, "kubectl delete pod api-server-abc123 -n production");
    assert_eq!(
        journal[1].display,
        "kubectl scale deployment worker --replicas=5 -n production"
    );
}

#[tokio::test]
async fn failed_verification_rolls_back_and_three_failures_open_the_circuit() {
    let faults = Faults {
        fail_post_checks_for: ["a", "b", "c", "d"].map(String::from).into(),
        ..Faults::default()
    };
    let r = rig(SEED, faults, Settings::default());
    let o = r.send(&scale("S1", "a")).await;
    assert_eq!(
        (o.decision, o.success, o.rolled_back),
        (Decision::Executed, Some(false), true)
    );
    assert!(o.reason.contains("post-check metrics_improved failed"), "{}", o.reason);
    let verified = o
        .checks
        .iter()
        .any(|c| c.phase == remediator::outcome::Phase::Rollback && c.name == "deployment_rolled_out" && c.passed);
    assert!(verified, "the rollback is verified too: {:?}", o.checks);
    let j = r.executor.journal();
    assert_eq!(j.len(), 2);
    assert_eq!(
        j[1].display, "kubectl scale deployment a --replicas=3 -n production",
        "rollback restores the old count"
    );
    r.send(&scale("S2", "b")).await;
    let third = r.send(&scale("S3", "c")).await;
    assert!(
        third.reason.ends_with("circuit opened after 3 consecutive failures"),
        "{}",
        third.reason
    );
    let blocked = r.send(&scale("S4", "d")).await;
    assert_eq!(blocked.decision, Decision::Blocked);
    assert_eq!(blocked.guardrail, Some(remediator::guardrails::Guardrail::CircuitOpen));
    assert_eq!(r.executor.journal().len(), 6, "nothing ran while the circuit was open");

    // After the recovery timeout exactly one probe runs; its success closes the circuit.
    r.clock.advance(ChronoDuration::seconds(301));
    r.executor.set_faults(Faults::default());
    let probe = r.send(&scale("S5", "e")).await;
    assert_eq!(probe.success, Some(true));
    assert!(probe.reason.contains("half-open probe succeeded"), "{}", probe.reason);
    assert_eq!(r.send(&scale("S6", "f")).await.decision, Decision::Executed);
}

#[tokio::test]
async fn failed_rollback_opens_the_circuit_at_once() {
    let svc = || ["x"].map(String::from).into();
    let faults = Faults {
        fail_post_checks_for: svc(),
        fail_rollbacks_for: svc(),
        ..Faults::default()
    };
    let r = rig(SEED, faults, Settings::default());
    let o = r.send(&scale("R1", "x")).await;
    assert_eq!((o.success, o.rolled_back), (Some(false), false));
    assert!(o.reason.contains("rollback failed"), "{}", o.reason);
    assert!(o.reason.contains("circuit opened"), "{}", o.reason);
    assert_eq!(r.send(&scale("R2", "y")).await.decision, Decision::Blocked);
}

#[tokio::test]
async fn failed_pre_check_aborts_without_acting() {
    let faults = Faults {
        fail_pre_checks_for: ["solo"].map(String::from).into(),
        ..Faults::default()
    };
    let r = rig(SEED, faults, Settings::default());
    let o = r.send(&crash("P1", "solo")).await;
    assert_eq!(o.decision, Decision::Aborted);
    assert!(
        o.reason.starts_with("pre-check replicas_greater_than_one failed"),
        "{}",
        o.reason
    );
    assert!(r.executor.journal().is_empty());
}

#[tokio::test]
async fn cooldown_and_rate_limit_hold_per_runbook_and_service() {
    let r = rig(SEED, Faults::default(), Settings::default());
    assert_eq!(r.send(&crash("C1", "api")).await.decision, Decision::Executed);
    let o = r.send(&crash("C2", "api")).await;
    assert_eq!(
        (o.decision, o.reason.as_str()),
        (Decision::Blocked, "cooldown active (300s remaining)")
    );
    assert_eq!(
        r.send(&crash("C3", "other")).await.decision,
        Decision::Executed,
        "other service, own cooldown"
    );
    // restart-pod: 5 per hour, cooldown 5 min.
    for i in 0..4 {
        r.clock.advance(ChronoDuration::minutes(5));
        assert_eq!(
            r.send(&crash(&format!("C{}", 10 + i), "api")).await.decision,
            Decision::Executed
        );
    }
    r.clock.advance(ChronoDuration::minutes(5));
    let o = r.send(&crash("C20", "api")).await;
    assert_eq!(
        o.guardrail,
        Some(remediator::guardrails::Guardrail::RateLimit),
        "{}",
        o.reason
    );
}

#[tokio::test]
async fn redelivery_republishes_and_a_second_message_is_a_duplicate() {
    let r = rig(SEED, Faults::default(), Settings::default());
    let src = Source {
        topic: "incidents".into(),
        partition: 2,
        offset: 41,
    };
    let first = r
        .engine
        .handle(crash("D1", "api").as_bytes(), Some(&src), "a1")
        .await
        .unwrap();
    let again = r
        .engine
        .handle(crash("D1", "api").as_bytes(), Some(&src), "a2")
        .await
        .unwrap();
    assert!(again.republished);
    assert_eq!(again.outcomes, first.outcomes, "the recorded outcome, same event id");
    let other = Source { offset: 99, ..src };
    let dup = r
        .engine
        .handle(crash("D1", "api").as_bytes(), Some(&other), "a3")
        .await
        .unwrap();
    assert_eq!(dup.outcomes[0].decision, Decision::Duplicate);
    assert!(
        dup.outcomes[0].reason.contains("executed by remediator"),
        "{}",
        dup.outcomes[0].reason
    );
    assert_eq!(r.executor.journal().len(), 1, "executed exactly once");
}

/// A guardrail's block is recorded by the store in the call that finds it: with every `record`
/// call failing, a blocked incident is still decided at once (it needs none), and its
/// redelivery re-publishes exactly the outcome published the first time (same event id), the
/// guardrail and the store's detail filled in.
#[tokio::test]
async fn a_block_is_recorded_in_the_call_that_finds_it() {
    let r = rig(SEED, Faults::default(), Settings::default());
    assert_eq!(r.send(&crash("K1", "api")).await.decision, Decision::Executed);
    r.store.fail_records.store(true, Ordering::SeqCst);
    let src = Source {
        topic: "incidents".into(),
        partition: 0,
        offset: 7,
    };
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        r.engine.handle(crash("K2", "api").as_bytes(), Some(&src), "k2-a"),
    )
    .await
    .expect("a block needs no record call")
    .expect("decided");
    let o = &first.outcomes[0];
    assert_eq!(o.decision, Decision::Blocked);
    assert_eq!(o.guardrail, Some(remediator::guardrails::Guardrail::Cooldown));
    assert!(o.reason.starts_with("cooldown active ("), "{}", o.reason);
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        r.engine.handle(crash("K2", "api").as_bytes(), Some(&src), "k2-b"),
    )
    .await
    .expect("answered from the record")
    .expect("decided");
    assert!(again.republished, "{:?}", again.outcomes);
    assert_eq!(again.outcomes, first.outcomes, "the recorded outcome, same event id");
}

/// `text` with every UUID (an approval's id, random in each rig) replaced by `<id>`.
fn without_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let candidate = rest.get(..36).filter(|c| uuid::Uuid::parse_str(c).is_ok());
        match candidate {
            Some(_) => {
                out.push_str("<id>");
                rest = &rest[36..];
            }
            None => {
                let c = rest.chars().next().unwrap_or_default();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// The worker decides a partition's waiting messages in batches (`Engine::handle_batch`, one
/// store call for several): every outcome is the one deciding them one message at a time gives,
/// through executions (a batch ends at each, which runs before the next message is decided),
/// rollbacks opening the circuit, cooldowns, duplicates, approvals, manual decisions and
/// rejected events, and the same actions run in the same order.
#[tokio::test]
async fn a_batch_decides_like_one_message_at_a_time() {
    let faults = || Faults {
        fail_post_checks_for: ["b1", "b2", "b3"].map(String::from).into(),
        ..Faults::default()
    };
    let seed: Vec<&str> = include_str!("data/seed-incidents.jsonl").lines().take(4).collect();
    let mut messages: Vec<String> = Vec::new();
    for i in 0..3 {
        messages.extend(seed.iter().map(|l| l.replace("\"INC00", &format!("\"R{i}-INC00"))));
        messages.push(crash(&format!("C{i}"), "api"));
        messages.push(scale(&format!("F{i}"), &format!("b{}", i + 1)));
        messages.push(r#"{"id":"bad","confidence":7}"#.to_string());
        messages.push(crash("C0", "api"));
        messages.push(scale(&format!("G{i}"), "ok"));
    }
    let sources: Vec<Source> = (0..messages.len())
        .map(|i| Source {
            topic: "incidents".into(),
            partition: 0,
            offset: i as i64,
        })
        .collect();
    let attempts: Vec<String> = (0..messages.len()).map(|i| format!("attempt-{i}")).collect();

    let alone = rig(SEED, faults(), Settings::default());
    let mut one_by_one = Vec::new();
    for ((m, src), attempt) in messages.iter().zip(&sources).zip(&attempts) {
        one_by_one.push(
            alone
                .engine
                .handle(m.as_bytes(), Some(src), attempt)
                .await
                .expect("handled"),
        );
    }

    let batched = rig(SEED, faults(), Settings::default());
    let batch: Vec<Message<'_>> = messages
        .iter()
        .zip(&sources)
        .zip(&attempts)
        .map(|((m, src), attempt)| Message {
            payload: m.as_bytes(),
            source: Some(src),
            attempt,
        })
        .collect();
    let mut together = Vec::new();
    let mut calls = 0;
    while together.len() < batch.len() {
        let handled = batched
            .engine
            .handle_batch(&batch[together.len()..])
            .await
            .expect("handled");
        assert!(!handled.is_empty(), "a batch handles at least its first message");
        calls += 1;
        // A batch ends at an execution: nothing after it in the same call.
        for h in &handled[..handled.len() - 1] {
            assert!(
                h.outcomes.iter().all(|o| o.decision != Decision::Executed),
                "a batch went on after an execution: {:?}",
                h.outcomes
            );
        }
        together.extend(handled);
    }
    let what = |h: &remediator::engine::Handled| {
        let o: Vec<_> = h
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.decision,
                    without_ids(&o.reason),
                    o.guardrail,
                    o.success,
                    o.rolled_back,
                    o.action.clone(),
                )
            })
            .collect();
        (o, h.dead_letter.clone(), h.republished)
    };
    for (i, (a, b)) in one_by_one.iter().zip(&together).enumerate() {
        assert_eq!(what(b), what(a), "message {i}: {}", messages[i]);
    }
    assert_eq!(
        batched.executor.journal(),
        alone.executor.journal(),
        "the same actions, in order"
    );
    let executed = one_by_one
        .iter()
        .filter(|h| h.outcomes.iter().any(|o| o.decision == Decision::Executed))
        .count();
    assert!(executed >= 5, "the mix executes something ({executed})");
    assert!(
        calls <= executed + 1,
        "{calls} calls for {} messages: batches end only at executions",
        messages.len()
    );
    let kinds: std::collections::BTreeSet<&str> = one_by_one
        .iter()
        .flat_map(|h| h.outcomes.iter().map(|o| o.decision.as_str()))
        .collect();
    for d in [
        Decision::Executed,
        Decision::Blocked,
        Decision::Duplicate,
        Decision::ApprovalRequired,
        Decision::Manual,
        Decision::Rejected,
    ] {
        assert!(kinds.contains(d.as_str()), "the mix never reached {d:?}: {kinds:?}");
    }
}

#[tokio::test]
async fn dry_run_reserves_guardrails_but_never_acts() {
    let r = rig(
        SEED,
        Faults::default(),
        Settings {
            dry_run: true,
            ..Settings::default()
        },
    );
    let o = r.send(&crash("Y1", "api")).await;
    assert_eq!(o.decision, Decision::DryRun);
    assert_eq!(
        o.action.as_ref().unwrap().display,
        "kubectl delete pod api-1 -n production"
    );
    assert_eq!(
        r.send(&crash("Y2", "api")).await.decision,
        Decision::Blocked,
        "shadow mode shows the cooldown too"
    );
    assert!(r.executor.journal().is_empty());
}

#[tokio::test]
async fn rejected_events_go_to_the_dead_letter_topic_with_the_field_named() {
    let r = rig(SEED, Faults::default(), Settings::default());
    let h = r
        .engine
        .handle(
            br#"{"id":"B1","root_cause":"x","confidence":2,"service":"s"}"#,
            None,
            "b",
        )
        .await
        .unwrap();
    let dl = h.dead_letter.expect("dead-lettered");
    assert_eq!(dl.field, "confidence");
    assert_eq!(h.outcomes[0].decision, Decision::Rejected);
    assert_eq!(h.outcomes[0].incident_id.as_deref(), Some("B1"));
    common::schema::assert_valid_outcome(&serde_json::to_value(&h.outcomes[0]).unwrap());
}

#[tokio::test]
async fn stale_incidents_expire() {
    let r = rig(SEED, Faults::default(), Settings::default());
    let stale = r.clock.now() - ChronoDuration::minutes(16);
    let json = format!(
        r#"{{"id":"E1","root_cause":"OOMKilled","confidence":0.99,"service":"api","detected_at":"{}","context":{{"pod_name":"p","namespace":"n"}}}}"#,
        stale.to_rfc3339()
    );
    let o = r.send(&json).await;
    assert_eq!(o.decision, Decision::Expired);
    assert_eq!(o.reason, "incident is 16m old, older than max_incident_age 15m");
}

/// "Never executed twice" across crashes: a replica dies mid-action; two hours later (past lease
/// + the one-hour claim grace; the incident has no `detected_at`, so it never ages out) the
/// redelivery is Interrupted, and the replica handling it dies too before recording; the next
/// redelivery is Interrupted again and records `aborted`. The action ran once.
#[tokio::test]
async fn crash_takeover_crash_again_never_runs_twice() {
    let slow = Faults {
        action_delay: Duration::from_secs(30),
        ..Faults::default()
    };
    let r = rig(SEED, slow, Settings::default());
    let src = Source {
        topic: "incidents".into(),
        partition: 0,
        offset: 7,
    };
    let msg = crash("K1", "api");
    let handle = |attempt: &'static str| r.engine.handle(msg.as_bytes(), Some(&src), attempt);
    // Dropping the future mid-action is the crash: no finish, no record.
    assert!(tokio::time::timeout(Duration::from_millis(300), handle("a1"))
        .await
        .is_err());
    assert_eq!(r.executor.journal().len(), 1, "the action started");
    r.executor.set_faults(Faults::default());

    r.clock.advance(ChronoDuration::hours(2));
    r.store.fail_records.store(true, Ordering::SeqCst);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), handle("a2"))
            .await
            .is_err(),
        "the second replica dies before recording"
    );
    assert_eq!(r.executor.journal().len(), 1, "a late redelivery never runs it again");

    r.store.fail_records.store(false, Ordering::SeqCst);
    r.clock.advance(ChronoDuration::minutes(2));
    let third = tokio::time::timeout(Duration::from_secs(5), handle("a3"))
        .await
        .expect("bounded")
        .expect("handled");
    assert_eq!(third.outcomes[0].decision, Decision::Aborted, "{:?}", third.outcomes);
    assert!(
        third.outcomes[0].reason.contains("interrupted"),
        "{}",
        third.outcomes[0].reason
    );
    assert_eq!(r.executor.journal().len(), 1, "executed exactly once");
}

/// A dry run (`execute --dry-run`, or a dry-run replica) cannot close an open circuit: it never
/// takes the half-open probe, and after it the circuit is still OPEN with its failures, so the
/// next real incident is the probe.
#[tokio::test]
async fn a_dry_run_never_closes_an_open_circuit() {
    let faults = Faults {
        fail_post_checks_for: ["a", "b", "c"].map(String::from).into(),
        ..Faults::default()
    };
    let r = rig(SEED, faults, Settings::default());
    for s in ["a", "b", "c"] {
        assert_eq!(r.send(&crash(&format!("O-{s}"), s)).await.success, Some(false));
    }
    let open = CircuitSnapshot {
        state: CircuitState::Open,
        failures: 3,
    };
    assert_eq!(r.engine.store().circuit("restart-pod").await.unwrap(), open);
    r.clock.advance(ChronoDuration::seconds(301));
    r.executor.set_faults(Faults::default());
    let context = [("pod_name", "d-1"), ("namespace", "production")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let dry = tokio::time::timeout(
        Duration::from_secs(5),
        r.engine.execute_manual("restart-pod", "d", context, true, "alice"),
    )
    .await
    .expect("bounded")
    .expect("dry run");
    assert_eq!(dry.outcomes[0].decision, Decision::DryRun, "{:?}", dry.outcomes);
    assert_eq!(
        r.engine.store().circuit("restart-pod").await.unwrap(),
        open,
        "the dry run neither closed nor counted for the circuit"
    );
    let probe = r.send(&crash("O-e", "e")).await;
    assert!(probe.reason.contains("half-open probe succeeded"), "{}", probe.reason);
    assert_eq!(
        r.executor.journal().len(),
        4,
        "three failures and the probe; the dry run acted on nothing"
    );
}

/// A retry of the same attempt after a lost Reserve answer, once the incident aged out in the
/// backlog, asks to Record: it is recorded as expired (never handed the cached `allowed`, which
/// the engine cannot use and retried for ever), and nothing runs.
#[tokio::test]
async fn a_retry_in_another_mode_is_decided_afresh() {
    let r = rig(SEED, Faults::default(), Settings::default());
    let msg = format!(
        r#"{{"id":"M1","root_cause":"OOMKilled","confidence":0.99,"service":"api","detected_at":"{}","context":{{"pod_name":"p","namespace":"n"}}}}"#,
        r.clock.now().to_rfc3339()
    );
    let src = Source {
        topic: "incidents".into(),
        partition: 0,
        offset: 3,
    };
    r.store.lose_decide_answer.store(true, Ordering::SeqCst);
    let first = r.engine.handle(msg.as_bytes(), Some(&src), "m-1").await;
    assert!(matches!(first, Err(EngineError::StoreUnavailable(_))), "{first:?}");
    r.clock.advance(ChronoDuration::minutes(16));
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        r.engine.handle(msg.as_bytes(), Some(&src), "m-1"),
    )
    .await
    .expect("bounded")
    .expect("handled, not wedged");
    assert_eq!(again.outcomes[0].decision, Decision::Expired, "{:?}", again.outcomes);
    assert!(r.executor.journal().is_empty());
}

fn scale_to(id: &str, service: &str, new_replicas: &str, old_replicas: u32) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"high_cpu","confidence":0.9,"service":"{service}","context":{{"deployment":"{service}","namespace":"production","new_replicas":{new_replicas},"old_replicas":{old_replicas},"max_replicas":10000}}}}"#
    )
}

#[tokio::test]
async fn a_low_risk_scale_up_never_reaches_zero_nor_passes_its_cap_nor_goes_down() {
    // The reference catalogue's scale-up: `--replicas={new_replicas}`, capped at 10 by its bare
    // current_replicas_below_max pre-check. The incident's own `max_replicas` changes nothing.
    let r = rig(SEED, Faults::default(), Settings::default());
    for (id, n, why) in [
        (
            "Z0",
            "0",
            "context.new_replicas: 0 replicas is refused: only a scale_to_zero action (HIGH risk)",
        ),
        (
            "Z1",
            "11",
            "context.new_replicas: 11 replicas is above the runbook's max_replicas 10",
        ),
        (
            "Z2",
            "10000",
            "context.new_replicas: 10000 replicas is above the runbook's max_replicas 10",
        ),
    ] {
        let o = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            r.send(&scale_to(id, &id.to_lowercase(), n, 3)),
        )
        .await
        .expect("bounded");
        assert_eq!(o.decision, Decision::Aborted, "{id}: {}", o.reason);
        assert!(o.reason.contains(why), "{id}: {}", o.reason);
    }
    assert!(
        r.executor.journal().is_empty(),
        "refused at render time: no executor call"
    );

    // Within the bounds at render time, but below the live count (3): refused by the executor
    // against the count it reads, nothing changed, no rollback, not a failure of the runbook.
    let o = r.send(&scale_to("Z3", "z3", "2", 3)).await;
    assert_eq!((o.decision, o.success, o.rolled_back), (Decision::Aborted, None, false));
    assert!(
        o.reason
            .contains("action scale_deployment refused: deployment production/z3: a scale-up to 2 replicas is refused: the deployment already runs 3; nothing changed"),
        "{}",
        o.reason
    );
    assert_eq!(r.executor.journal().len(), 1, "one call, refused; no rollback");

    // The cap itself is allowed, and the rollback restores the count read before the change.
    let o = r.send(&scale_to("Z4", "z4", "10", 3)).await;
    assert_eq!(
        (o.decision, o.success),
        (Decision::Executed, Some(true)),
        "{}",
        o.reason
    );
    assert_eq!(o.action.as_ref().unwrap().params["max_replicas"], 10);
    assert_eq!(o.action.as_ref().unwrap().params["direction"], "up");
    r.executor.set_faults(Faults {
        fail_post_checks_for: ["z5".to_string()].into(),
        ..Faults::default()
    });
    let o = r.send(&scale_to("Z5", "z5", "4", 2)).await;
    assert_eq!((o.decision, o.rolled_back), (Decision::Executed, true), "{}", o.reason);
    let j = r.executor.journal();
    assert_eq!(
        j.last().unwrap().display,
        "kubectl scale deployment z5 --replicas=2 -n production"
    );
}

#[tokio::test]
async fn a_high_risk_runbook_acting_automatically_without_rollback_says_so() {
    let runbooks = r#"
runbooks:
  undo:
    risk: HIGH
    mode: auto
    triggers: [error_rate_spike_after_deploy]
    min_confidence: 0.9
    action: {kind: rollout_undo}
    allow_irreversible_auto: the deploy pipeline re-deploys on a failed rollback
"#;
    let r = rig(runbooks, Faults::default(), Settings::default());
    let o = r
        .send(r#"{"id":"H1","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"checkout","context":{"deployment":"checkout","namespace":"production"}}"#)
        .await;
    assert_eq!(o.decision, Decision::Executed, "{}", o.reason);
    assert!(
        o.reason.ends_with(
            "[runbook override allow_irreversible_auto: the deploy pipeline re-deploys on a failed rollback]"
        ),
        "{}",
        o.reason
    );
}

/// An engine on a real Redis (behind [`Faulty`]) with a 600 ms lease and one action in flight at
/// most, for the lease tests; `None` without `REDIS_URL`.
async fn lease_rig(
    lose_decide_answer: bool,
    fail_renewals: bool,
    action_delay: Duration,
) -> Option<(Engine, Arc<Faulty>, Arc<SimulatedExecutor>)> {
    let url = common::redis_url()?;
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let redis = remediator::guardrails::redis::RedisStore::connect(&url, &prefix, Duration::from_secs(2))
        .await
        .expect("connect");
    let store = Arc::new(Faulty {
        inner: Box::new(redis),
        lose_decide_answer: AtomicBool::new(lose_decide_answer),
        fail_records: AtomicBool::new(false),
        fail_renewals: AtomicBool::new(fail_renewals),
    });
    let executor = Arc::new(SimulatedExecutor::with_faults(Faults {
        action_delay,
        ..Faults::default()
    }));
    let mut settings = Settings::default();
    settings.guardrails.lease = Duration::from_millis(600);
    settings.guardrails.max_concurrent_actions = 1;
    let engine = Engine::new(
        Arc::new(Catalogue::from_yaml(SEED, "test").expect("runbooks load")),
        store.clone(),
        executor.clone(),
        Arc::new(remediator::clock::SystemClock),
        settings,
        Metrics::new(),
        EventIds::Random,
    );
    Some((engine, store, executor))
}

/// Against a real Redis: an action's lease renewals fail for longer than its lease, another
/// incident takes the freed slot (max_concurrent_actions 1), and when the renewals come back the
/// store answers `lapsed` (not `renewed`): the first execution's outcome says its slot lapsed and
/// `remediator_lease_lapses_total{result="lost"}` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lapsed_lease_is_reported_not_renewed() {
    let Some((engine, store, executor)) = lease_rig(false, true, Duration::from_millis(2_500)).await else {
        return;
    };
    let started = |n: usize| {
        let executor = executor.clone();
        async move {
            while executor.journal().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let (a, b) = (crash("L1", "la"), crash("L2", "lb"));
    let first = engine.handle(a.as_bytes(), None, "la-1");
    let second = async {
        started(1).await;
        // A's renewals fail past its 600 ms lease: its slot lapses and B takes it.
        tokio::time::sleep(Duration::from_millis(900)).await;
        engine.handle(b.as_bytes(), None, "lb-1").await
    };
    let recover = async {
        started(2).await;
        store.fail_renewals.store(false, Ordering::SeqCst);
    };
    let (first, second, ()) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(first, second, recover) })
            .await
            .expect("bounded");
    let (first, second) = (first.expect("A handled"), second.expect("B handled"));
    assert_eq!(second.outcomes[0].decision, Decision::Executed, "{:?}", second.outcomes);
    let o = &first.outcomes[0];
    assert_eq!(o.decision, Decision::Executed, "{o:?}");
    assert!(o.reason.contains("blast-radius slot lapsed"), "{}", o.reason);
    assert_eq!(
        engine.metrics().lease_lapses.with_label_values(&["lost"]).get(),
        1,
        "the loss is counted"
    );
}

/// The rate limit and cooldown hold for the object the action touches, whatever free-text
/// `service` the incidents carry: `api`, `API` and `api-2` against the same Deployment act once.
#[tokio::test]
async fn varying_the_service_does_not_walk_past_the_limits_of_one_target() {
    const RESTART: &str = r#"
runbooks:
  restart-deployment:
    risk: LOW
    triggers:
      - high_latency
    min_confidence: 0.5
    max_per_hour: 1
    cooldown_minutes: 30
    action: kubectl rollout restart deployment {deployment} -n {namespace}
    post_checks:
      - deployment_rolled_out
    rollback: null
"#;
    let r = rig(RESTART, Faults::default(), Settings::default());
    let incident = |id: &str, service: &str| {
        format!(
            r#"{{"id":"{id}","root_cause":"high_latency","confidence":0.9,"service":"{service}","context":{{"deployment":"web","namespace":"production"}}}}"#
        )
    };
    assert_eq!(r.send(&incident("T1", "api")).await.decision, Decision::Executed);
    for (id, service) in [("T2", "API"), ("T3", "api-2")] {
        let o = r.send(&incident(id, service)).await;
        assert_eq!(o.decision, Decision::Blocked, "{service}: {}", o.reason);
    }
    assert_eq!(r.executor.journal().len(), 1, "one restart of production/web");
}

/// A Reserve whose answer was lost, retried by the same attempt only after its lease expired
/// (the store unreachable longer than `guardrails.lease`) while another execution took the one
/// slot, is decided afresh and blocked: the cached `allowed` is not replayed, so the limit holds.
/// Against real Redis (decide.lua).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_allowed_is_not_replayed_after_its_lease_expired() {
    let Some((engine, _, executor)) = lease_rig(true, false, Duration::from_millis(1_500)).await else {
        return;
    };
    let (a, b) = (crash("X1", "xa"), crash("X2", "xb"));
    let lost = tokio::time::timeout(Duration::from_secs(10), engine.handle(a.as_bytes(), None, "xa-1"))
        .await
        .expect("bounded");
    assert!(matches!(lost, Err(EngineError::StoreUnavailable(_))), "{lost:?}");
    // Longer than the lease: A's slot is free for anyone.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let second = engine.handle(b.as_bytes(), None, "xb-1");
    let retry = async {
        while executor.journal().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.handle(a.as_bytes(), None, "xa-1").await
    };
    let (second, retry) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(second, retry) })
        .await
        .expect("bounded");
    let (second, retry) = (second.expect("B handled"), retry.expect("A handled"));
    assert_eq!(second.outcomes[0].decision, Decision::Executed, "{:?}", second.outcomes);
    assert_ne!(retry.outcomes[0].decision, Decision::Executed, "{:?}", retry.outcomes);
    assert_eq!(executor.journal().len(), 1, "only B acted: {:?}", executor.journal());
}

const ROLLOUT: &str = r#"
runbooks:
  restart-rollout:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.5
    max_per_hour: 100
    cooldown_minutes: 0
    action: kubectl delete pod {pod_name} -n {namespace}
    post_checks: [pod_becomes_ready]
    rollout:
      start: shadow
      promote_after: 2
      automatic_until: approval
"#;

/// Verified successes of `ids` recorded in the rollout of `restart-rollout` by another replica.
async fn evidence(r: &Rig, policy: &remediator::rollout::RolloutPolicy, ids: &[&str]) {
    for id in ids {
        let counted = r
            .store
            .rollout_apply("restart-rollout", policy, remediator::rollout::Transition::Success, id)
            .await;
        counted.unwrap().expect("counted");
    }
}

/// `o` executed, verified, in rollout stage `stage`.
fn assert_verified_in(o: &Outcome, stage: &str) {
    assert_eq!(
        (o.decision, o.success),
        (Decision::Executed, Some(true)),
        "{}",
        o.reason
    );
    assert_eq!(
        o.rollout.as_ref().map(|v| v.stage.as_str()),
        Some(stage),
        "{}",
        o.reason
    );
}

/// A second engine on the same store: another replica.
fn replica(r: &Rig, runbooks: &str) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(r.clock.clone());
    Engine::new(
        Arc::new(Catalogue::from_yaml(runbooks, "test").expect("runbooks load")),
        r.store.clone(),
        r.executor.clone(),
        clock,
        Settings::default(),
        Metrics::new(),
        EventIds::Random,
    )
}

/// Shadow runs are dry runs that count as evidence; the one that completes `promote_after`
/// moves the runbook to approval and says so. A replica that still holds the old stage in its
/// cache does not decide in it: the store refuses the claim and the replica decides again in the
/// new stage, without a trace of the refused attempt.
#[tokio::test]
async fn a_replica_never_decides_in_a_rollout_stage_another_replica_left() {
    let r = rig(ROLLOUT, Faults::default(), Settings::default());
    let b = replica(&r, ROLLOUT);
    let o = r.send(&crash("ro-1", "s1")).await;
    assert_eq!(o.decision, Decision::DryRun, "{}", o.reason);
    let view = o.rollout.clone().expect("a rollout runbook's outcome says its stage");
    assert_eq!(
        (view.stage.as_str(), view.evidence, view.needed),
        ("shadow", Some(1), 2)
    );
    assert!(view.change.is_none());
    assert!(o.reason.contains("rollout stage shadow"), "{}", o.reason);
    // Replica b reads (and caches) shadow with its own shadow run: the evidence completes.
    let h = b
        .handle(crash("ro-2", "s2").as_bytes(), None, "b-1")
        .await
        .expect("handled");
    let o = &h.outcomes[0];
    assert_eq!(o.decision, Decision::DryRun);
    let change = o.rollout.as_ref().and_then(|v| v.change.clone()).expect("the change");
    assert_eq!((change.from.as_str(), change.to.as_str()), ("shadow", "approval"));
    assert!(o.reason.contains("moved from shadow to approval"), "{}", o.reason);
    // Replica r cached shadow at its first decision; its next one is taken in approval.
    let o = r.send(&crash("ro-3", "s3")).await;
    assert_eq!(o.decision, Decision::ApprovalRequired, "{}", o.reason);
    assert_eq!(o.rollout.as_ref().map(|v| v.stage.as_str()), Some("approval"));
    assert!(
        o.reason.contains("rollout stage approval: human approval required"),
        "{}",
        o.reason
    );
    assert_eq!(r.executor.journal().len(), 0, "nothing ran");
}

/// A failed verification steps an automatic rollout runbook back (auto → approval without canary
/// shares) on the outcome that failed; the next incident asks a human.
#[tokio::test]
async fn a_failed_verification_steps_the_rollout_back() {
    let runbooks = ROLLOUT
        .replace("start: shadow", "start: approval")
        .replace("automatic_until: approval", "automatic_until: auto");
    let faults = Faults {
        fail_post_checks_for: ["bad"].map(String::from).into(),
        ..Faults::default()
    };
    let r = rig(&runbooks, faults, Settings::default());
    let catalogue = Catalogue::from_yaml(&runbooks, "t").unwrap();
    let policy = catalogue.get("restart-rollout").unwrap().rollout.clone().unwrap();
    // Another replica's approved executions made it automatic.
    evidence(&r, &policy, &["x", "y"]).await;
    assert_verified_in(&r.send(&crash("ra-1", "good")).await, "auto");
    let o = r.send(&crash("ra-2", "bad")).await;
    assert_eq!(
        (o.decision, o.success),
        (Decision::Executed, Some(false)),
        "{}",
        o.reason
    );
    let change = o.rollout.as_ref().and_then(|v| v.change.clone()).expect("stepped back");
    assert_eq!((change.from.as_str(), change.to.as_str()), ("auto", "approval"));
    assert!(
        o.reason.contains("a failed verification steps the rollout back"),
        "{}",
        o.reason
    );
    let o = r.send(&crash("ra-3", "good2")).await;
    assert_eq!(o.decision, Decision::ApprovalRequired, "{}", o.reason);
    assert_eq!(r.executor.journal().len(), 2);
}

/// A human's promotion is an outcome of its own (`rollout_changed`, about the runbook, no
/// incident), valid against the schema, and the next decision is taken in the new stage.
#[tokio::test]
async fn a_human_promotion_is_an_audited_outcome_and_takes_effect_at_once() {
    let runbooks = ROLLOUT.replace("start: shadow", "start: approval");
    let r = rig(&runbooks, Faults::default(), Settings::default());
    let rb = Catalogue::from_yaml(&runbooks, "t")
        .unwrap()
        .get("restart-rollout")
        .unwrap()
        .clone();
    let refused = r.engine.promote_rollout(&rb, "alice").await.expect("store");
    assert_eq!(
        refused.map(|o| o.decision),
        Err(remediator::rollout::PromoteRefusal::Evidence(0, 2))
    );
    let o = r.send(&crash("rp-0", "s0")).await;
    assert_eq!(o.decision, Decision::ApprovalRequired, "{}", o.reason);
    evidence(&r, rb.rollout.as_ref().unwrap(), &["x", "y"]).await;
    let o = r
        .engine
        .promote_rollout(&rb, "alice")
        .await
        .expect("store")
        .expect("promoted");
    common::schema::assert_valid_outcome(&serde_json::to_value(&o).unwrap());
    assert_eq!(
        (o.decision, o.incident_id.as_deref(), o.runbook_id.as_deref()),
        (Decision::RolloutChanged, None, Some("restart-rollout"))
    );
    assert_eq!(o.approver.as_deref(), Some("alice"));
    assert_eq!(
        o.reason,
        "rollout of runbook restart-rollout moved from approval to auto: promoted by alice after 2 verified successes"
    );
    assert_verified_in(&r.send(&crash("rp-1", "s1")).await, "auto");
}
