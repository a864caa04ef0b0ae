//! Behaviour suite of [`LedgerStore`] (approvals, trust ladder), run against every store.
//!
//! [`ledger_suite_tests!`](crate::ledger_suite_tests) turns every case into a `#[tokio::test]`.

use remediator::guardrails::{Answer, AnswerResult, Approval, ApprovalState, LedgerStore, PendingSummary};
use remediator::rollout::{Position, PromoteRefusal, RolloutPolicy, Stage, Transition};
use std::sync::Arc;
use std::time::Duration;

/// A store under test.
pub type Ledger = Arc<dyn LedgerStore>;

/// Generate one `#[tokio::test]` per case. `$make` is an `async fn() -> Option<Ledger>`.
#[macro_export]
macro_rules! ledger_suite_tests {
    ($make:path) => {
        $crate::ledger_suite_tests!(@cases $make;
            approval_is_answered_once,
            approval_denied_then_refused,
            approval_expires,
            approval_bound_to_action_hash,
            unknown_approval_is_not_found,
            concurrent_answers_accept_exactly_one,
            the_same_answer_again_is_a_retry_not_a_second_answer,
            a_repeat_after_expiry_is_not_a_retry,
            one_pending_approval_per_group,
            pending_summary_counts_and_finds_the_oldest,
            every_pending_approval_is_listed,
            trust_keeps_a_rolling_window,
            demotion_is_sticky_until_promoted,
            rollout_moves_on_evidence_and_steps_back_on_failure,
            rollout_promotion_needs_the_evidence,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(store) = $make().await {
                    common::ledger_suite::$case(store).await;
                }
            }
        )*
    };
}

/// A pending approval of a HIGH-risk rollback bound to action hash `h1`.
pub fn approval(id: &str) -> Approval {
    Approval {
        id: id.to_string(),
        incident_id: format!("inc-{id}"),
        runbook: "rollback-deployment".into(),
        action_hash: "h1".into(),
        action: "kubectl rollout undo deployment checkout -n production".into(),
        incident: "{}".into(),
        created_at_ms: 0,
        expires_at_ms: 0,
        state: ApprovalState::Pending,
        approver: None,
        group: String::new(),
    }
}

fn unique() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn answer(approve: bool, who: &str, hash: Option<&str>) -> Answer {
    Answer {
        approve,
        approver: who.into(),
        action_hash: hash.map(str::to_string),
    }
}

pub async fn approval_is_answered_once(s: Ledger) {
    let id = unique();
    let a = s.create_approval(&approval(&id), 60_000).await.unwrap();
    assert!(a.expires_at_ms - a.created_at_ms == 60_000);
    assert!(s.pending_approvals().await.unwrap().iter().any(|p| p.id == id));
    let AnswerResult::Accepted(done) = s
        .answer_approval(&id, &answer(true, "alice", Some("h1")))
        .await
        .unwrap()
    else {
        panic!("first answer accepted")
    };
    assert_eq!(
        (done.state, done.approver.as_deref()),
        (ApprovalState::Approved, Some("alice"))
    );
    assert!(
        !s.pending_approvals().await.unwrap().iter().any(|p| p.id == id),
        "no longer pending"
    );
    match s.answer_approval(&id, &answer(true, "mallory", None)).await.unwrap() {
        AnswerResult::AlreadyAnswered(a) => assert_eq!(a.approver.as_deref(), Some("alice")),
        other => panic!("a replay is refused, got {other:?}"),
    }
}

pub async fn approval_denied_then_refused(s: Ledger) {
    let id = unique();
    s.create_approval(&approval(&id), 60_000).await.unwrap();
    let AnswerResult::Accepted(a) = s.answer_approval(&id, &answer(false, "bob", None)).await.unwrap() else {
        panic!()
    };
    assert_eq!(a.state, ApprovalState::Denied);
    assert!(matches!(
        s.answer_approval(&id, &answer(true, "bob", None)).await.unwrap(),
        AnswerResult::AlreadyAnswered(_)
    ));
}

pub async fn approval_expires(s: Ledger) {
    let id = unique();
    s.create_approval(&approval(&id), 200).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!s.pending_approvals().await.unwrap().iter().any(|p| p.id == id));
    assert!(matches!(
        s.answer_approval(&id, &answer(true, "alice", None)).await.unwrap(),
        AnswerResult::Expired(_)
    ));
}

pub async fn approval_bound_to_action_hash(s: Ledger) {
    let id = unique();
    s.create_approval(&approval(&id), 60_000).await.unwrap();
    assert!(matches!(
        s.answer_approval(&id, &answer(true, "alice", Some("other")))
            .await
            .unwrap(),
        AnswerResult::Tampered(_)
    ));
    // A tampered answer does not use the approval up.
    assert!(matches!(
        s.answer_approval(&id, &answer(true, "alice", Some("h1")))
            .await
            .unwrap(),
        AnswerResult::Accepted(_)
    ));
}

pub async fn unknown_approval_is_not_found(s: Ledger) {
    assert_eq!(
        s.answer_approval(&unique(), &answer(true, "alice", None))
            .await
            .unwrap(),
        AnswerResult::NotFound
    );
}

pub async fn concurrent_answers_accept_exactly_one(s: Ledger) {
    let id = unique();
    s.create_approval(&approval(&id), 60_000).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (s, id) = (Arc::clone(&s), id.clone());
            tokio::spawn(async move {
                s.answer_approval(&id, &answer(i % 2 == 0, &format!("u{i}"), None))
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        if matches!(t.await.unwrap().unwrap(), AnswerResult::Accepted(_)) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
}

/// A retry of an accepted answer (same approver, same decision, no other hash) is `Repeated`,
/// so its caller can finish what failed after the store took it; anything else stays refused.
pub async fn the_same_answer_again_is_a_retry_not_a_second_answer(s: Ledger) {
    let id = unique();
    s.create_approval(&approval(&id), 60_000).await.unwrap();
    assert!(matches!(
        s.answer_approval(&id, &answer(true, "alice", Some("h1")))
            .await
            .unwrap(),
        AnswerResult::Accepted(_)
    ));
    for retry in [answer(true, "alice", Some("h1")), answer(true, "alice", None)] {
        match s.answer_approval(&id, &retry).await.unwrap() {
            AnswerResult::Repeated(a) => {
                assert_eq!(
                    (a.state, a.approver.as_deref()),
                    (ApprovalState::Approved, Some("alice"))
                )
            }
            other => panic!("a retry by the same approver is Repeated, got {other:?}"),
        }
    }
    for other in [
        answer(true, "bob", Some("h1")),
        answer(false, "alice", None),
        answer(true, "alice", Some("h2")),
    ] {
        assert!(
            matches!(
                s.answer_approval(&id, &other).await.unwrap(),
                AnswerResult::AlreadyAnswered(_)
            ),
            "{other:?}"
        );
    }
    assert!(!s.pending_approvals().await.unwrap().iter().any(|p| p.id == id));
}

/// A repeat of an accepted answer is a retry (`Repeated`) only while the approval has not
/// expired: past its expiry it is refused like any other second answer.
pub async fn a_repeat_after_expiry_is_not_a_retry(s: Ledger) {
    let id = unique();
    s.create_approval(&approval(&id), 300).await.unwrap();
    assert!(matches!(
        s.answer_approval(&id, &answer(true, "alice", None)).await.unwrap(),
        AnswerResult::Accepted(_)
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    match s.answer_approval(&id, &answer(true, "alice", None)).await.unwrap() {
        AnswerResult::AlreadyAnswered(a) => assert_eq!(a.approver.as_deref(), Some("alice")),
        other => panic!("a repeat past the expiry is no retry, got {other:?}"),
    }
}

fn grouped(id: &str, group: &str) -> Approval {
    Approval {
        group: group.to_string(),
        ..approval(id)
    }
}

/// While a group's approval is pending, a request of the same group joins it (same id, same
/// expiry, nothing new pending); once answered (or expired) the next request asks again. Other
/// groups and ungrouped approvals are independent.
pub async fn one_pending_approval_per_group(s: Ledger) {
    let g = format!("rollback-deployment\nproduction\ndeployment/{}", unique());
    let (first, second) = (unique(), unique());
    let a = s.create_approval(&grouped(&first, &g), 60_000).await.unwrap();
    assert_eq!(a.id, first);
    let b = s.create_approval(&grouped(&second, &g), 60_000).await.unwrap();
    assert_eq!(
        (b.id.as_str(), b.created_at_ms, b.expires_at_ms),
        (first.as_str(), a.created_at_ms, a.expires_at_ms),
        "joined the pending approval"
    );
    let ids = |v: Vec<Approval>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let pending = ids(s.pending_approvals().await.unwrap());
    assert!(pending.contains(&first) && !pending.contains(&second), "{pending:?}");
    assert_eq!(
        s.answer_approval(&second, &answer(true, "alice", None)).await.unwrap(),
        AnswerResult::NotFound,
        "the joining request created nothing"
    );
    // Another target, and no group: their own approvals.
    let other = unique();
    assert_eq!(
        s.create_approval(&grouped(&other, &format!("{g}-other")), 60_000)
            .await
            .unwrap()
            .id,
        other
    );
    let loose = unique();
    assert_eq!(s.create_approval(&approval(&loose), 60_000).await.unwrap().id, loose);
    // Answered: the next request of the group asks again.
    assert!(matches!(
        s.answer_approval(&first, &answer(false, "bob", None)).await.unwrap(),
        AnswerResult::Accepted(_)
    ));
    let third = unique();
    assert_eq!(s.create_approval(&grouped(&third, &g), 60_000).await.unwrap().id, third);
    // Expired: likewise.
    let g2 = format!("{g}-short");
    let short = unique();
    s.create_approval(&grouped(&short, &g2), 200).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = unique();
    assert_eq!(
        s.create_approval(&grouped(&after, &g2), 60_000).await.unwrap().id,
        after
    );
}

/// The gauges' read: how many wait, and the oldest creation time, following answers and expiry
/// (every case gets a store of its own, so this one sees only its approvals).
pub async fn pending_summary_counts_and_finds_the_oldest(s: Ledger) {
    assert_eq!(s.pending_summary().await.unwrap(), PendingSummary::default());
    let (a, b) = (unique(), unique());
    let first = s.create_approval(&approval(&a), 60_000).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let short = s.create_approval(&approval(&b), 300).await.unwrap();
    assert!(short.created_at_ms > first.created_at_ms);
    assert_eq!(
        s.pending_summary().await.unwrap(),
        PendingSummary {
            count: 2,
            oldest_created_ms: Some(first.created_at_ms)
        }
    );
    // Answered: no longer counted, and no longer the oldest.
    s.answer_approval(&a, &answer(true, "alice", None)).await.unwrap();
    assert_eq!(
        s.pending_summary().await.unwrap(),
        PendingSummary {
            count: 1,
            oldest_created_ms: Some(short.created_at_ms)
        }
    );
    // Expired: gone too.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.pending_summary().await.unwrap(), PendingSummary::default());
}

pub async fn trust_keeps_a_rolling_window(s: Ledger) {
    let rb = unique();
    assert_eq!(s.trust(&rb, 4).await.unwrap().total, 0);
    assert_eq!(s.trust(&rb, 4).await.unwrap().rate(), 1.0, "no evidence is not failure");
    for ok in [false, false, true, true, true, true] {
        s.record_trust(&rb, ok, 4).await.unwrap();
    }
    let t = s.trust(&rb, 4).await.unwrap();
    assert_eq!((t.successes, t.total), (4, 4), "the two old failures left the window");
    let t = s.record_trust(&rb, false, 4).await.unwrap();
    assert_eq!((t.successes, t.total), (3, 4));
    let t = s.trust(&rb, 2).await.unwrap();
    assert_eq!((t.successes, t.total), (1, 2), "a smaller window reads the newest only");
}

/// The listing has every pending approval, however many.
pub async fn every_pending_approval_is_listed(s: Ledger) {
    let ids: Vec<String> = (0..5).map(|_| unique()).collect();
    for id in &ids {
        s.create_approval(&approval(id), 60_000).await.unwrap();
    }
    let pending: Vec<String> = s.pending_approvals().await.unwrap().into_iter().map(|a| a.id).collect();
    for id in &ids {
        assert!(pending.contains(id), "{id} missing from {pending:?}");
    }
}

pub async fn demotion_is_sticky_until_promoted(s: Ledger) {
    let rb = unique();
    assert_eq!(s.demotion(&rb).await.unwrap(), None);
    assert!(s.demote(&rb, "success 50% < 80%").await.unwrap());
    assert!(!s.demote(&rb, "again").await.unwrap(), "already demoted");
    assert_eq!(s.demotion(&rb).await.unwrap().as_deref(), Some("success 50% < 80%"));
    s.record_trust(&rb, false, 10).await.unwrap();
    assert!(s.promote(&rb).await.unwrap());
    assert_eq!(s.demotion(&rb).await.unwrap(), None);
    assert_eq!(
        s.trust(&rb, 10).await.unwrap().total,
        0,
        "promotion starts a fresh record"
    );
    assert!(!s.promote(&rb).await.unwrap());
}

/// A rollout policy: `start`, 2 successes per stage, canary shares `shares`, evidence alone up
/// to `until`.
pub fn rollout_policy(start: Stage, shares: &[u8], until: Stage) -> RolloutPolicy {
    RolloutPolicy {
        start,
        promote_after: 2,
        window: Duration::from_secs(3600),
        canary_shares: shares.to_vec(),
        automatic_until: until,
    }
}

fn at(stage: Stage, step: u32) -> Position {
    Position { stage, step }
}

/// Where the record stands after one transition: (position, version, evidence, changed from).
async fn step(
    s: &Ledger,
    rb: &str,
    p: &RolloutPolicy,
    t: Transition,
    id: &str,
) -> (Position, u64, u32, Option<Position>) {
    let r = s.rollout_apply(rb, p, t, id).await.unwrap().expect("not refused");
    (r.position, r.version, r.evidence, r.changed_from)
}

/// Shadow to approval to each canary share on evidence, no further than `automatic_until`; a
/// human promotes past it; a failure steps back one stage and clears the evidence; the same
/// incident counts once; reads change nothing.
pub async fn rollout_moves_on_evidence_and_steps_back_on_failure(s: Ledger) {
    use Stage::*;
    use Transition::*;
    let rb = unique();
    let p = rollout_policy(Shadow, &[10, 50], Canary);
    let r = s.rollout(&rb, &p).await.unwrap();
    assert_eq!(
        (r.position, r.version, r.evidence, r.changed_from),
        (at(Shadow, 0), 0, 0, None)
    );
    assert_eq!(step(&s, &rb, &p, Success, "i1").await, (at(Shadow, 0), 0, 1, None));
    // Later (a redelivery, another replica's retry): still the one success.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        step(&s, &rb, &p, Success, "i1").await,
        (at(Shadow, 0), 0, 1, None),
        "the same incident counts once"
    );
    assert_eq!(s.rollout(&rb, &p).await.unwrap().evidence, 1, "a read changes nothing");
    assert_eq!(
        step(&s, &rb, &p, Success, "i2").await,
        (at(Approval, 0), 1, 0, Some(at(Shadow, 0))),
        "exactly promote_after successes move it, and the evidence restarts"
    );
    step(&s, &rb, &p, Success, "i3").await;
    assert_eq!(
        step(&s, &rb, &p, Success, "i4").await,
        (at(Canary, 0), 2, 0, Some(at(Approval, 0)))
    );
    step(&s, &rb, &p, Success, "i5").await;
    assert_eq!(
        step(&s, &rb, &p, Success, "i6").await,
        (at(Canary, 1), 3, 0, Some(at(Canary, 0)))
    );
    step(&s, &rb, &p, Success, "i7").await;
    assert_eq!(
        step(&s, &rb, &p, Success, "i8").await,
        (at(Canary, 1), 3, 2, None),
        "auto is beyond automatic_until: evidence alone does not reach it"
    );
    assert_eq!(
        step(&s, &rb, &p, Success, "i8b").await,
        (at(Canary, 1), 3, 2, None),
        "the newest promote_after successes are kept, no more"
    );
    assert_eq!(
        step(&s, &rb, &p, Promote, "").await,
        (at(Auto, 0), 4, 0, Some(at(Canary, 1)))
    );
    assert_eq!(
        step(&s, &rb, &p, Success, "i9").await,
        (at(Auto, 0), 4, 0, None),
        "nothing counts at auto"
    );
    assert_eq!(
        s.rollout_apply(&rb, &p, Promote, "").await.unwrap(),
        Err(PromoteRefusal::AtTheEnd)
    );
    assert_eq!(
        step(&s, &rb, &p, Failure, "").await,
        (at(Canary, 0), 5, 0, Some(at(Auto, 0)))
    );
    step(&s, &rb, &p, Success, "i10").await;
    assert_eq!(
        step(&s, &rb, &p, Failure, "").await,
        (at(Approval, 0), 6, 0, Some(at(Canary, 0)))
    );
    step(&s, &rb, &p, Success, "i11").await;
    assert_eq!(
        step(&s, &rb, &p, Failure, "").await,
        (at(Approval, 0), 6, 0, None),
        "approval stays approval, its evidence cleared, the version unchanged"
    );
    let r = s.rollout(&rb, &p).await.unwrap();
    assert_eq!((r.position, r.version, r.evidence), (at(Approval, 0), 6, 0));
    // Another runbook's record is its own.
    let other = unique();
    assert_eq!(s.rollout(&other, &p).await.unwrap().position, at(Shadow, 0));
}

/// A human's promotion is refused (nothing changes) until the evidence is there; without canary
/// shares approval is followed by auto.
pub async fn rollout_promotion_needs_the_evidence(s: Ledger) {
    let rb = unique();
    let p = rollout_policy(Stage::Approval, &[], Stage::Approval);
    assert_eq!(
        s.rollout_apply(&rb, &p, Transition::Promote, "").await.unwrap(),
        Err(PromoteRefusal::Evidence(0, 2))
    );
    step(&s, &rb, &p, Transition::Success, "a").await;
    assert_eq!(
        s.rollout_apply(&rb, &p, Transition::Promote, "").await.unwrap(),
        Err(PromoteRefusal::Evidence(1, 2))
    );
    assert_eq!(
        step(&s, &rb, &p, Transition::Success, "b").await,
        (at(Stage::Approval, 0), 0, 2, None),
        "auto is beyond automatic_until"
    );
    assert_eq!(
        step(&s, &rb, &p, Transition::Promote, "").await,
        (at(Stage::Auto, 0), 1, 0, Some(at(Stage::Approval, 0)))
    );
    assert_eq!(
        step(&s, &rb, &p, Transition::Failure, "").await,
        (at(Stage::Approval, 0), 2, 0, Some(at(Stage::Auto, 0))),
        "without shares auto steps back to approval"
    );
}
