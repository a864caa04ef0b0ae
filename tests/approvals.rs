//! Humans in the loop on the engine: approvals (single use, expiring, hash-bound, re-checked)
//! and the trust ladder (automatic demotion from auto to approval). The same paths against real
//! Redis and Kafka are in `tests/approvals_live.rs`.

mod common;

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use remediator::clock::{Clock, ManualClock};
use remediator::engine::{Engine, EventIds, Settings};
use remediator::executor::simulated::{Faults, SimulatedExecutor};
use remediator::guardrails::memory::MemoryStore;
use remediator::guardrails::redis::RedisStore;
use remediator::guardrails::{Answer, Store};
use remediator::metrics::Metrics;
use remediator::outcome::{Decision, Outcome};
use remediator::runbook::Catalogue;
use std::sync::Arc;

struct Rig {
    engine: Engine,
    executor: Arc<SimulatedExecutor>,
    store: Arc<dyn Store>,
    clock: ManualClock,
}

fn rig(runbooks: &str, faults: Faults) -> Rig {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap());
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::clone(&shared)));
    rig_with(runbooks, faults, store, clock)
}

/// The same rig on the real Redis (its own key namespace); `None` when Redis is not configured.
/// Redis keeps its own time, so cases that move the clock stay memory-only.
async fn redis_rig(runbooks: &str, faults: Faults) -> Option<Rig> {
    let url = common::redis_url()?;
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let store = RedisStore::connect(&url, &prefix, std::time::Duration::from_millis(500))
        .await
        .expect("connect");
    Some(rig_with(
        runbooks,
        faults,
        Arc::new(store),
        ManualClock::new(Utc::now()),
    ))
}

fn rig_with(runbooks: &str, faults: Faults, store: Arc<dyn Store>, clock: ManualClock) -> Rig {
    rig_with_settings(runbooks, faults, store, clock, Settings::default())
}

fn rig_with_settings(
    runbooks: &str,
    faults: Faults,
    store: Arc<dyn Store>,
    clock: ManualClock,
    settings: Settings,
) -> Rig {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let executor = Arc::new(SimulatedExecutor::with_faults(faults));
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
        store,
        clock,
    }
}

async fn send(r: &Rig, json: &str) -> Outcome {
    let h = r
        .engine
        .handle(json.as_bytes(), None, &uuid::Uuid::new_v4().to_string())
        .await
        .expect("handled");
    let o = h.outcomes.into_iter().next().expect("one outcome");
    common::schema::assert_valid_outcome(&serde_json::to_value(&o).unwrap());
    o
}

async fn answer(r: &Rig, id: &str, approve: bool, who: &str, hash: Option<&str>) -> (bool, Vec<Outcome>) {
    let a = Answer {
        approve,
        approver: who.into(),
        action_hash: hash.map(str::to_string),
    };
    let res = r.engine.answer(id, &a).await.expect("answered");
    for o in &res.outcomes {
        common::schema::assert_valid_outcome(&serde_json::to_value(o).unwrap());
    }
    (res.accepted, res.outcomes)
}

const SEED: &str = include_str!("data/seed-runbooks.yaml");

fn memory_store(clock: &ManualClock) -> Arc<dyn Store> {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    Arc::new(MemoryStore::new(shared))
}

async fn redis_store() -> Option<Arc<dyn Store>> {
    let url = common::redis_url()?;
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let store = RedisStore::connect(&url, &prefix, std::time::Duration::from_millis(500))
        .await
        .expect("connect");
    Some(Arc::new(store))
}

fn undo(id: &str, svc: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"{svc}","context":{{"deployment":"{svc}","namespace":"production"}}}}"#
    )
}

#[tokio::test]
async fn approved_once_executes_once_and_replays_are_refused() {
    approved_once(rig(SEED, Faults::default())).await;
}

#[tokio::test]
async fn approved_once_executes_once_and_replays_are_refused_on_redis() {
    if let Some(r) = redis_rig(SEED, Faults::default()).await {
        approved_once(r).await;
    }
}

async fn approved_once(r: Rig) {
    let o = send(&r, &undo("A1", "checkout")).await;
    assert_eq!(o.decision, Decision::ApprovalRequired);
    let id = o.approval_id.clone().expect("approval id");
    assert!(r.executor.journal().is_empty(), "nothing runs before approval");
    let pending = r.store.pending_approvals().await.unwrap();
    assert_eq!(pending.len(), 1);
    let hash = pending[0].action_hash.clone();

    let (ok, out) = answer(&r, &id, true, "alice", Some(&hash)).await;
    assert!(ok);
    assert_eq!((out[0].decision, out[0].success), (Decision::Executed, Some(true)));
    assert_eq!(out[0].approver.as_deref(), Some("alice"));
    assert_eq!(out[0].approval_id.as_deref(), Some(id.as_str()));
    assert_eq!(out[0].incident_id.as_deref(), Some("A1"));
    assert!(out[0].reason.starts_with("approved by alice"), "{}", out[0].reason);
    assert_eq!(r.executor.journal().len(), 1);

    let (ok, out) = answer(&r, &id, true, "mallory", None).await;
    assert!(!ok);
    assert_eq!(out[0].decision, Decision::Rejected);
    assert!(
        out[0].reason.contains("already approved by alice (single use)"),
        "{}",
        out[0].reason
    );
    assert_eq!(r.executor.journal().len(), 1, "a replayed approval never runs again");
}

/// Answering is retry-safe: a failure after the store took the answer (before the execution was
/// claimed, or after it ran but before its outcome was published) leaves the same approver's
/// retry to finish the job: it executes once, or returns the recorded outcomes to publish again,
/// never "already answered" to its own retry. Another approver is still refused.
#[tokio::test]
async fn a_retried_answer_executes_once_and_republishes() {
    retried_answer(rig(SEED, Faults::default())).await;
}

#[tokio::test]
async fn a_retried_answer_executes_once_and_republishes_on_redis() {
    if let Some(r) = redis_rig(SEED, Faults::default()).await {
        retried_answer(r).await;
    }
}

async fn retried_answer(r: Rig) {
    let id = send(&r, &undo("R1", "checkout")).await.approval_id.unwrap();
    let hash = r.store.pending_approvals().await.unwrap()[0].action_hash.clone();
    // The first try marked the answer and then failed (store error before the claim, or the
    // worker died): the store holds the answer, nothing ran.
    let first = Answer {
        approve: true,
        approver: "alice".into(),
        action_hash: Some(hash.clone()),
    };
    assert!(matches!(
        r.store.answer_approval(&id, &first).await.unwrap(),
        remediator::guardrails::AnswerResult::Accepted(_)
    ));
    assert!(r.executor.journal().is_empty());
    // Its retry executes, once.
    let (ok, out) = answer(&r, &id, true, "alice", Some(&hash)).await;
    assert!(ok, "{out:?}");
    assert_eq!((out[0].decision, out[0].success), (Decision::Executed, Some(true)));
    assert_eq!(out[0].approver.as_deref(), Some("alice"));
    assert_eq!(r.executor.journal().len(), 1);
    // The outcome was not published (broker down): the next retry gets the recorded outcome
    // again, and nothing runs twice.
    let (ok, again) = answer(&r, &id, true, "alice", Some(&hash)).await;
    assert!(ok, "{again:?}");
    let json = |v: &[Outcome]| v.iter().map(Outcome::to_json).collect::<Vec<_>>();
    assert_eq!(
        json(&again),
        json(&out),
        "the recorded outcomes, as they were published"
    );
    assert_eq!(r.executor.journal().len(), 1, "never executed twice");
    // Anyone else, or another decision, is still refused.
    let (ok, out) = answer(&r, &id, true, "mallory", None).await;
    assert!(!ok);
    assert!(out[0].reason.contains("already approved by alice"), "{}", out[0].reason);
    let (ok, _) = answer(&r, &id, false, "alice", None).await;
    assert!(!ok);

    // A denial retried returns the recorded denial.
    let id = send(&r, &undo("R2", "cart")).await.approval_id.unwrap();
    let (ok, denied) = answer(&r, &id, false, "bob", None).await;
    assert!(ok);
    let (ok, again) = answer(&r, &id, false, "bob", None).await;
    assert!(ok);
    assert_eq!(json(&again), json(&denied));
    assert_eq!(r.executor.journal().len(), 1);
}

/// An alert storm asks once: while an approval for a runbook and target is pending, later
/// incidents for the same target join it (their outcome names it) instead of piling up
/// approvals; another target asks on its own, and after an answer the next incident asks again.
#[tokio::test]
async fn incidents_for_a_pending_target_join_its_approval() {
    storm(rig(SEED, Faults::default())).await;
}

#[tokio::test]
async fn incidents_for_a_pending_target_join_its_approval_on_redis() {
    if let Some(r) = redis_rig(SEED, Faults::default()).await {
        storm(r).await;
    }
}

async fn storm(r: Rig) {
    let first = send(&r, &undo("S0", "checkout")).await;
    let id = first.approval_id.clone().expect("approval");
    for i in 1..20 {
        let o = send(&r, &undo(&format!("S{i}"), "checkout")).await;
        assert_eq!(o.decision, Decision::ApprovalRequired);
        assert_eq!(o.approval_id.as_deref(), Some(id.as_str()), "joins {id}");
        assert!(o.reason.contains(&format!("joins approval {id}")), "{}", o.reason);
    }
    let other = send(&r, &undo("S-cart", "cart")).await.approval_id.unwrap();
    assert_ne!(other, id);
    assert_eq!(r.store.pending_approvals().await.unwrap().len(), 2, "one per target");
    assert_eq!(r.engine.refresh_approval_gauges().await.unwrap(), 2);
    assert_eq!(r.engine.metrics().approvals_pending.get(), 2);
    let (ok, out) = answer(&r, &id, false, "bob", None).await;
    assert!(ok);
    assert_eq!(out[0].incident_id.as_deref(), Some("S0"));
    assert!(r.executor.journal().is_empty());
    let next = send(&r, &undo("S20", "checkout")).await.approval_id.unwrap();
    assert_ne!(next, id, "answered: the next incident asks again");
}

/// An approval's execution is claimed in a key space no incident id reaches: incidents named
/// like the old claim id (`{incident}#approval-{id}`) or anything else cannot pre-empt it.
#[tokio::test]
async fn no_incident_id_can_preempt_an_approvals_execution() {
    preempt(rig(SEED, Faults::default())).await;
}

#[tokio::test]
async fn no_incident_id_can_preempt_an_approvals_execution_on_redis() {
    if let Some(r) = redis_rig(SEED, Faults::default()).await {
        preempt(r).await;
    }
}

async fn preempt(r: Rig) {
    let id = send(&r, &undo("P1", "checkout")).await.approval_id.unwrap();
    // Someone who read the approval id off the audit topic sends incidents named like a claim.
    for name in [format!("P1#approval-{id}"), format!("approval:{id}")] {
        let squat = format!(r#"{{"id":"{name}","root_cause":"unknown_thing","confidence":0.95,"service":"checkout"}}"#);
        send(&r, &squat).await;
    }
    let (ok, out) = answer(&r, &id, true, "alice", None).await;
    assert!(ok);
    assert_eq!(out[0].decision, Decision::Executed, "{}", out[0].reason);
    assert_eq!(out[0].incident_id.as_deref(), Some("P1"));
    assert_eq!(r.executor.journal().len(), 1);
}

#[tokio::test]
async fn denied_expired_tampered_and_unknown_answers() {
    let r = rig(SEED, Faults::default());
    let id = send(&r, &undo("B1", "checkout")).await.approval_id.unwrap();
    let (ok, out) = answer(&r, &id, false, "bob", None).await;
    assert!(ok);
    assert_eq!(out[0].decision, Decision::Manual);
    assert!(out[0].reason.contains("denied by bob"));

    let id = send(&r, &undo("B2", "cart")).await.approval_id.unwrap();
    let (ok, out) = answer(&r, &id, true, "eve", Some("not-the-hash")).await;
    assert!(!ok);
    assert!(out[0].reason.contains("action hash"), "{}", out[0].reason);

    r.clock.advance(ChronoDuration::hours(2));
    let (ok, out) = answer(&r, &id, true, "alice", None).await;
    assert!(!ok);
    assert_eq!(out[0].decision, Decision::Expired);

    let (ok, out) = answer(&r, "no-such-approval", true, "alice", None).await;
    assert!(!ok);
    assert!(out[0].reason.contains("does not exist"));
    let (ok, _) = answer(&r, "x", true, "", None).await;
    assert!(!ok, "an anonymous answer is refused");
    assert!(r.executor.journal().is_empty());
}

#[tokio::test]
async fn approval_after_the_guardrails_changed_is_blocked() {
    guardrails_changed(rig(SEED, Faults::default())).await;
}

#[tokio::test]
async fn approval_after_the_guardrails_changed_is_blocked_on_redis() {
    if let Some(r) = redis_rig(SEED, Faults::default()).await {
        guardrails_changed(r).await;
    }
}

/// rollback-deployment: 1 per hour per service. Two approvals for the same service (two of its
/// deployments, so two targets and two approvals); the first uses the slot.
async fn guardrails_changed(r: Rig) {
    let first = send(&r, &undo("C1", "checkout")).await.approval_id.unwrap();
    let canary = r#"{"id":"C2","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"checkout","context":{"deployment":"checkout-canary","namespace":"production"}}"#;
    let second = send(&r, canary).await.approval_id.unwrap();
    assert_ne!(first, second);
    assert_eq!(
        answer(&r, &first, true, "alice", None).await.1[0].decision,
        Decision::Executed
    );
    let (ok, out) = answer(&r, &second, true, "alice", None).await;
    assert!(ok, "the answer is accepted...");
    assert_eq!(
        out[0].decision,
        Decision::Blocked,
        "...but the guardrails are checked again"
    );
    assert!(out[0].reason.contains("guardrails changed since"), "{}", out[0].reason);
    assert_eq!(r.executor.journal().len(), 1);
}

/// An approval of `rollout undo` is bound to the revisions it undoes and
/// restores (pinned into the action, so into its hash and its display). A deploy between the
/// request and the answer changes what the undo would restore: the approved answer is refused,
/// nothing runs; asked again with nothing in between, it runs at the new revisions.
#[tokio::test]
async fn an_approved_undo_is_bound_to_its_revisions() {
    undo_pinned(rig(SEED, Faults::default())).await;
}

#[tokio::test]
async fn an_approved_undo_is_bound_to_its_revisions_on_redis() {
    if let Some(r) = redis_rig(SEED, Faults::default()).await {
        undo_pinned(r).await;
    }
}

async fn undo_pinned(r: Rig) {
    let bounded = async {
        // The simulated deployment starts at revision 2: an undo restores revision 1.
        assert_eq!(r.executor.revision("production", "checkout"), 2);
        let asked = send(&r, &undo("U1", "checkout")).await;
        assert_eq!(asked.decision, Decision::ApprovalRequired, "{}", asked.reason);
        let pending = r.store.pending_approvals().await.unwrap();
        assert_eq!(pending.len(), 1);
        let (id, hash) = (pending[0].id.clone(), pending[0].action_hash.clone());

        // A deploy before the answer: revision 3, an undo would now restore revision 2.
        r.executor.set_revision("production", "checkout", 3);
        let (ok, out) = answer(&r, &id, true, "alice", Some(&hash)).await;
        assert!(ok, "the answer itself is accepted");
        assert_eq!(out[0].decision, Decision::Aborted, "{}", out[0].reason);
        assert!(
            out[0]
                .reason
                .contains("now renders a different action than the one approved")
                && out[0].reason.contains("--to-revision=1")
                && out[0].reason.contains("--to-revision=2")
                && out[0].reason.contains("not executed (ask again)"),
            "{}",
            out[0].reason
        );
        assert!(r.executor.journal().is_empty(), "nothing executed");
        assert_eq!(r.executor.revision("production", "checkout"), 3);
        // What was asked for showed (and hashed) the revisions.
        let view = asked.action.clone().expect("the approval shows its action");
        assert_eq!(
            view.display,
            "kubectl rollout undo deployment checkout --to-revision=1 -n production"
        );
        assert_eq!(view.params["undone_from_revision"], 2);
        assert_eq!(view.params["restored_revision"], 1);
        assert_eq!(pending[0].action, view.display, "the human sees the revision");

        // Asked again, approved with nothing in between: it runs, restoring revision 2.
        let o = send(&r, &undo("U2", "checkout")).await;
        let again = o.approval_id.expect("a new approval");
        assert_ne!(again, id);
        let (ok, out) = answer(&r, &again, true, "alice", None).await;
        assert!(ok);
        assert_eq!(
            (out[0].decision, out[0].success),
            (Decision::Executed, Some(true)),
            "{}",
            out[0].reason
        );
        assert_eq!(out[0].action.as_ref().unwrap().params["restored_revision"], 2);
        let journal = r.executor.journal();
        assert_eq!(journal.len(), 1);
        assert_eq!(
            journal[0].display,
            "kubectl rollout undo deployment checkout --to-revision=2 -n production"
        );
        assert_eq!(
            r.executor.revision("production", "checkout"),
            4,
            "the undo made a revision"
        );
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), bounded)
        .await
        .expect("finished within 30 s");
}

#[tokio::test]
async fn stale_incidents_are_not_executed_even_when_approved() {
    let r = rig(SEED, Faults::default());
    let json = format!(
        r#"{{"id":"D1","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"web","detected_at":"{}","context":{{"deployment":"web","namespace":"production"}}}}"#,
        r.clock.now().to_rfc3339()
    );
    let id = send(&r, &json).await.approval_id.unwrap();
    r.clock.advance(ChronoDuration::minutes(20));
    let (ok, out) = answer(&r, &id, true, "alice", None).await;
    assert!(ok);
    assert_eq!(out[0].decision, Decision::Expired);
    assert!(r.executor.journal().is_empty());
}

const LADDER: &str = r#"
runbooks:
  restart-pod:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.8
    max_per_hour: 100
    cooldown_minutes: 0
    action: kubectl delete pod {pod_name} -n {namespace}
    post_checks: [pod_becomes_ready]
    trust: {floor: 0.8, min_runs: 3, window: 5}
"#;

fn crash(id: &str, svc: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"{svc}","context":{{"pod_name":"{svc}-1","namespace":"production"}}}}"#
    )
}

fn ladder_faults() -> Faults {
    Faults {
        fail_post_checks_for: ["bad"].map(String::from).into(),
        ..Faults::default()
    }
}

#[tokio::test]
async fn a_runbook_below_its_floor_is_demoted_and_says_so() {
    demotion(rig(LADDER, ladder_faults())).await;
}

#[tokio::test]
async fn a_runbook_below_its_floor_is_demoted_and_says_so_on_redis() {
    if let Some(r) = redis_rig(LADDER, ladder_faults()).await {
        demotion(r).await;
    }
}

async fn demotion(r: Rig) {
    let ok = send(&r, &crash("T1", "good")).await;
    assert_eq!(ok.trust.as_ref().map(|t| (t.executions, t.demoted)), Some((1, false)));
    send(&r, &crash("T2", "bad")).await;
    // 1 of 3 verified: below 80% once min_runs is reached.
    let third = send(&r, &crash("T3", "bad")).await;
    let trust = third.trust.clone().unwrap();
    assert_eq!((trust.executions, trust.demoted), (3, true));
    assert!((trust.success_rate - 1.0 / 3.0).abs() < 1e-9);
    assert!(
        third.reason.contains("demoted from auto to approval"),
        "{}",
        third.reason
    );
    let next = send(&r, &crash("T4", "good")).await;
    assert_eq!(next.decision, Decision::ApprovalRequired);
    assert!(
        next.reason.contains("was demoted from auto to approval"),
        "{}",
        next.reason
    );
    // Every replica reports the shared record, not only the one that executed.
    r.engine.refresh_trust_gauges().await.expect("trust gauges");
    let m = r.engine.metrics();
    assert_eq!(m.trust_demoted.with_label_values(&["restart-pod"]).get(), 1);
    assert_eq!(m.trust_executions.with_label_values(&["restart-pod"]).get(), 3);
    assert!((m.trust_rate.with_label_values(&["restart-pod"]).get() - 1.0 / 3.0).abs() < 1e-9);
    // Promotion is a human decision.
    assert!(r.store.promote("restart-pod").await.unwrap());
    r.engine.refresh_trust_gauges().await.expect("trust gauges");
    assert_eq!(
        m.trust_demoted.with_label_values(&["restart-pod"]).get(),
        0,
        "a promotion shows without a new execution"
    );
}

/// `remediator_approvals_pending` / `remediator_approval_oldest_pending_seconds`: counted on
/// create and accepted answer, and set from the store (expiry included) by the refresh.
#[tokio::test]
async fn pending_approval_gauges_follow_the_store() {
    let r = rig(SEED, Faults::default());
    let m = r.engine.metrics().clone();
    let first = send(&r, &undo("G1", "checkout")).await.approval_id.unwrap();
    r.clock.advance(ChronoDuration::minutes(10));
    let second = send(&r, &undo("G2", "cart")).await.approval_id.unwrap();
    assert_eq!(m.approvals_pending.get(), 2, "counted when created, before any refresh");
    assert_eq!(r.engine.refresh_approval_gauges().await.unwrap(), 2);
    assert_eq!(m.approval_oldest_pending.get(), 600.0);
    r.clock.advance(ChronoDuration::minutes(5));
    r.engine.refresh_approval_gauges().await.unwrap();
    assert_eq!(m.approval_oldest_pending.get(), 900.0);

    let (ok, _) = answer(&r, &first, false, "bob", None).await;
    assert!(ok);
    assert_eq!(m.approvals_pending.get(), 1, "an accepted answer counts at once");
    assert_eq!(r.engine.refresh_approval_gauges().await.unwrap(), 1);
    assert_eq!(m.approval_oldest_pending.get(), 300.0, "now the second is the oldest");
    let (ok, _) = answer(&r, "no-such-approval", true, "alice", None).await;
    assert!(!ok);
    assert_eq!(m.approvals_pending.get(), 1, "a refused answer changes nothing");

    // Past its TTL (1 h) an approval no longer waits for anyone.
    r.clock.advance(ChronoDuration::hours(2));
    assert_eq!(r.engine.refresh_approval_gauges().await.unwrap(), 0);
    assert_eq!((m.approvals_pending.get(), m.approval_oldest_pending.get()), (0, 0.0));
    let (ok, _) = answer(&r, &second, true, "alice", None).await;
    assert!(!ok, "expired");
    assert_eq!(m.approvals_pending.get(), 0);
}

#[tokio::test]
async fn pending_approval_gauges_follow_the_store_on_redis() {
    let Some(r) = redis_rig(SEED, Faults::default()).await else {
        return;
    };
    let m = r.engine.metrics().clone();
    let first = send(&r, &undo("G1", "checkout")).await.approval_id.unwrap();
    send(&r, &undo("G2", "cart")).await;
    // A second replica, sharing the store, sees both without having created either.
    let other = rig_with(SEED, Faults::default(), r.store.clone(), ManualClock::new(Utc::now()));
    assert_eq!(other.engine.metrics().approvals_pending.get(), 0);
    assert_eq!(other.engine.refresh_approval_gauges().await.unwrap(), 2);
    let age = other.engine.metrics().approval_oldest_pending.get();
    assert!((0.0..60.0).contains(&age), "age {age} s by the Redis clock");
    let (ok, _) = answer(&r, &first, true, "alice", None).await;
    assert!(ok);
    assert_eq!(m.approvals_pending.get(), 1);
    assert_eq!(other.engine.refresh_approval_gauges().await.unwrap(), 1);
    assert_eq!(other.engine.metrics().approvals_pending.get(), 1);
}

/// An approval never overrides shadow mode: approving an action on a dry-run worker, or for a
/// dry-run runbook, records a `dry_run` outcome and never reaches the executor.
#[tokio::test]
async fn approving_in_dry_run_never_executes() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap());
    let worker = Settings {
        dry_run: true,
        ..Settings::default()
    };
    let r = rig_with_settings(SEED, Faults::default(), memory_store(&clock), clock.clone(), worker);
    approved_dry_run(r, "worker dry_run").await;
    let r = rig_with(&dry_runbook(), Faults::default(), memory_store(&clock), clock);
    approved_dry_run(r, "runbook dry_run").await;
}

#[tokio::test]
async fn approving_in_dry_run_never_executes_on_redis() {
    let Some(store) = redis_store().await else { return };
    let worker = Settings {
        dry_run: true,
        ..Settings::default()
    };
    let r = rig_with_settings(SEED, Faults::default(), store, ManualClock::new(Utc::now()), worker);
    approved_dry_run(r, "worker dry_run").await;
    let store = redis_store().await.expect("redis");
    let r = rig_with(&dry_runbook(), Faults::default(), store, ManualClock::new(Utc::now()));
    approved_dry_run(r, "runbook dry_run").await;
}

fn dry_runbook() -> String {
    SEED.replace("    risk: HIGH\n", "    risk: HIGH\n    dry_run: true\n")
}

async fn approved_dry_run(r: Rig, why: &str) {
    let o = send(&r, &undo("DR1", "checkout")).await;
    assert_eq!(o.decision, Decision::ApprovalRequired, "{}", o.reason);
    let id = o.approval_id.expect("approval id");
    let (ok, out) = answer(&r, &id, true, "alice", None).await;
    assert!(ok, "{out:?}");
    assert_eq!(out[0].decision, Decision::DryRun, "{}", out[0].reason);
    assert!(out[0].reason.contains(why), "{}", out[0].reason);
    assert!(out[0].reason.starts_with("approved by alice"), "{}", out[0].reason);
    assert!(r.executor.journal().is_empty(), "an approval never executes in dry run");
    // A retry of the same answer replays the recorded dry run; still nothing runs.
    let (ok, again) = answer(&r, &id, true, "alice", None).await;
    assert!(ok, "{again:?}");
    assert_eq!(again[0].decision, Decision::DryRun, "{}", again[0].reason);
    assert!(r.executor.journal().is_empty());
}

const SCALE: &str = r#"
runbooks:
  scale-up:
    risk: LOW
    mode: approval
    triggers: [high_cpu]
    min_confidence: 0.7
    max_per_hour: 100
    cooldown_minutes: 0
    action: kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}
"#;

fn scale(id: &str, replicas: u32) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"high_cpu","confidence":0.95,"service":"web","context":{{"deployment":"web","namespace":"production","new_replicas":{replicas}}}}}"#
    )
}

/// An incident joins a pending approval only for the very action it would run: the same
/// target with another action (another replica count) asks on its own, so approving never runs
/// an action other than the one each joined incident showed.
#[tokio::test]
async fn only_the_same_action_joins_a_pending_approval() {
    same_action_joins(rig(SCALE, Faults::default())).await;
}

#[tokio::test]
async fn only_the_same_action_joins_a_pending_approval_on_redis() {
    if let Some(r) = redis_rig(SCALE, Faults::default()).await {
        same_action_joins(r).await;
    }
}

async fn same_action_joins(r: Rig) {
    let first = send(&r, &scale("J1", 5)).await;
    assert_eq!(first.decision, Decision::ApprovalRequired, "{}", first.reason);
    let id = first.approval_id.clone().unwrap();
    let same = send(&r, &scale("J2", 5)).await;
    assert_eq!(same.approval_id.as_deref(), Some(id.as_str()), "the same action joins");
    assert_eq!(same.action, first.action);
    let other = send(&r, &scale("J3", 8)).await;
    assert_eq!(other.decision, Decision::ApprovalRequired);
    let other_id = other.approval_id.clone().unwrap();
    assert_ne!(other_id, id, "another action on the same target asks on its own");
    assert!(!other.reason.contains("joins"), "{}", other.reason);
    assert_eq!(r.store.pending_approvals().await.unwrap().len(), 2);
    // Approving J3's approval runs J3's action.
    let (ok, out) = answer(&r, &other_id, true, "alice", None).await;
    assert!(ok, "{out:?}");
    assert_eq!(out[0].action, other.action, "{out:?}");
}

/// A retry of an answer whose first try is still executing never publishes a false "expired;
/// not executed": here the incident aged out while the first try ran, so the retry stops at the
/// freshness check, finds the execution claim held, and says so (`duplicate`), while the first
/// try executes once.
#[tokio::test]
async fn a_retry_during_the_execution_never_says_not_executed() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap());
    retry_during_execution(memory_store(&clock), clock).await;
}

/// The same on Redis: its leases keep Redis time (600 s, live throughout); only the engine's
/// freshness check sees the moved clock.
#[tokio::test]
async fn a_retry_during_the_execution_never_says_not_executed_on_redis() {
    if let Some(store) = redis_store().await {
        retry_during_execution(store, ManualClock::new(Utc::now())).await;
    }
}

async fn retry_during_execution(store: Arc<dyn Store>, clock: ManualClock) {
    let mut settings = Settings::default();
    settings.guardrails.max_incident_age = std::time::Duration::from_secs(60);
    settings.guardrails.lease = std::time::Duration::from_secs(600);
    let faults = Faults {
        action_delay: std::time::Duration::from_millis(1500),
        ..Faults::default()
    };
    let r = rig_with_settings(SEED, faults, store, clock, settings);
    let json = format!(
        r#"{{"id":"P1","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"web","detected_at":"{}","context":{{"deployment":"web","namespace":"production"}}}}"#,
        r.clock.now().to_rfc3339()
    );
    let id = send(&r, &json).await.approval_id.unwrap();
    let retry = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        r.clock.advance(ChronoDuration::minutes(2));
        answer(&r, &id, true, "alice", None).await
    };
    let ((ok1, first), (ok2, second)) = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        tokio::join!(answer(&r, &id, true, "alice", None), retry)
    })
    .await
    .expect("bounded");
    assert!(ok1 && ok2);
    assert_eq!(first[0].decision, Decision::Executed, "{}", first[0].reason);
    assert_eq!(second[0].decision, Decision::Duplicate, "{}", second[0].reason);
    assert!(second[0].reason.contains("being executed"), "{}", second[0].reason);
    assert_eq!(r.executor.journal().len(), 1);
}
