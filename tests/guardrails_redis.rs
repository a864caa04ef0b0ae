//! The guardrail behaviour suite against [`RedisStore`] on a real Redis (`REDIS_URL`, started
//! by `scripts/services.sh`), plus what only Redis can do: be unreachable, be slow, lose its
//! scripts, lose its data, hold stores of several replicas.

mod common;

use common::guardrail_suite::{check, finish, open_limits, renewal, reserve, scope, Store, LONG_LEASE};
use remediator::guardrails::redis::RedisStore;
use remediator::guardrails::{CircuitState, DecideAnswer, ExecResult, Guardrail, GuardrailStore, Limits, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Generous for a loaded test machine; production uses ≈200 ms.
const TIMEOUT: Duration = Duration::from_secs(2);

const ALLOWED: DecideAnswer = DecideAnswer::Allowed {
    probe: false,
    conservative: false,
};

fn fresh_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url, prefix, TIMEOUT).await.expect("connect")
}

/// A store in a namespace of its own.
async fn redis_store() -> Option<Store> {
    let url = common::redis_url()?;
    Some(Arc::new(connect(&url, &fresh_prefix()).await))
}

guardrail_suite_tests!(redis_store);

/// One call for a batch decides like one call per request (common/guardrail_suite.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_decides_like_one_at_a_time() {
    if let (Some(batched), Some(single)) = (redis_store().await, redis_store().await) {
        common::guardrail_suite::batch_decides_like_one_at_a_time(batched, single).await;
    }
}

/// A ledger (approvals, trust) in a namespace of its own.
async fn redis_ledger() -> Option<common::ledger_suite::Ledger> {
    let url = common::redis_url()?;
    Some(Arc::new(connect(&url, &fresh_prefix()).await))
}

ledger_suite_tests!(redis_ledger);

/// A plain connection for poking at Redis behind the store's back.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

async fn raw_cmd<T: redis::FromRedisValue>(conn: &mut redis::aio::MultiplexedConnection, cmd: &mut redis::Cmd) -> T {
    cmd.query_async(conn).await.expect("raw command")
}

/// Every key of `prefix`'s namespace.
async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    raw_cmd(conn, redis::cmd("KEYS").arg(format!("*{prefix}*"))).await
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "{what}: expected Unavailable, got {r:?}"
    );
}

/// Nothing listens: the store still constructs (lazy connection) and every call fails closed,
/// fast. Needs no Redis.
#[tokio::test]
async fn unreachable_store_fails_closed_within_timeout() {
    let store = RedisStore::connect("redis://127.0.0.1:1", &fresh_prefix(), Duration::from_millis(500))
        .await
        .expect("lazy connect succeeds without Redis");
    let s = scope("rb", "svc");
    let started = Instant::now();
    assert_unavailable(
        "decide",
        store.decide(&reserve("i", "a", &s, &open_limits(), LONG_LEASE)).await,
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_200),
        "took {:?}",
        started.elapsed()
    );
    assert_unavailable(
        "decide_batch",
        store
            .decide_batch(&[reserve("i", "a", &s, &open_limits(), LONG_LEASE)])
            .await,
    );
    // An empty batch asks Redis nothing, so it cannot fail.
    assert_eq!(store.decide_batch(&[]).await.expect("nothing asked"), Vec::new());
    assert_unavailable("ping", store.ping().await);
    assert_unavailable("renew", store.renew(&renewal("i", "a", "rb", 1_000, 1)).await);
    assert_unavailable(
        "finish",
        store
            .finish(&finish("i", "a", &s, &open_limits(), ExecResult::Success))
            .await,
    );
    assert_unavailable("record", store.record("i", "a", "[]", 1_000).await);
    assert_unavailable("circuit", store.circuit("rb").await);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

/// A server that accepts connections and never answers (a hung Redis): calls time out instead
/// of stalling a partition. Needs no Redis.
#[tokio::test]
async fn silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(300);
    let store = RedisStore::connect(&format!("redis://{addr}"), &fresh_prefix(), timeout)
        .await
        .expect("lazy connect");
    let started = Instant::now();
    assert_unavailable(
        "decide",
        store
            .decide(&reserve("i", "a", &scope("rb", "s"), &open_limits(), 1_000))
            .await,
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "took {:?}",
        started.elapsed()
    );
    assert_unavailable("ping", store.ping().await);
    hold.abort();
}

/// `SCRIPT FLUSH` (a restart, a failover to a replica without the scripts) costs one NOSCRIPT
/// and a reload, never an error.
#[tokio::test]
async fn script_flush_is_survived() {
    let Some(url) = common::redis_url() else { return };
    let store = connect(&url, &fresh_prefix()).await;
    let mut conn = raw(&url).await;
    let s = scope("rb", "svc");
    let limits = open_limits();
    let flush = || redis::cmd("SCRIPT").arg("FLUSH").clone();

    assert_eq!(
        store
            .decide(&check("i1", "a1", &s, &limits, LONG_LEASE))
            .await
            .expect("decide"),
        ALLOWED
    );
    raw_cmd::<()>(&mut conn, &mut flush()).await;
    assert_eq!(
        store
            .decide(&reserve("i2", "a2", &s, &limits, LONG_LEASE))
            .await
            .expect("decide"),
        ALLOWED
    );
    raw_cmd::<()>(&mut conn, &mut flush()).await;
    store
        .renew(&renewal("i2", "a2", "rb", LONG_LEASE, 1))
        .await
        .expect("renew");
    raw_cmd::<()>(&mut conn, &mut flush()).await;
    let answer = store
        .finish(&finish("i2", "a2", &s, &limits, ExecResult::Success))
        .await
        .expect("finish");
    assert_eq!(answer.circuit, CircuitState::Closed);
    raw_cmd::<()>(&mut conn, &mut flush()).await;
    store.record("i2", "a2", "[]", 60_000).await.expect("record");
}

/// Every key lives under the store's one hash tag (single slot in Redis Cluster), ids with the
/// separator included.
#[tokio::test]
async fn every_key_shares_one_hash_tag() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let store = connect(&url, &prefix).await;
    let s = scope("rb:with:colons", "svc:x");
    let limits = open_limits();
    store
        .decide(&reserve("inc:1", "a:1", &s, &limits, LONG_LEASE))
        .await
        .expect("decide");
    store
        .finish(&finish("inc:1", "a:1", &s, &limits, ExecResult::Failure))
        .await
        .expect("finish");
    let mut conn = raw(&url).await;
    let keys = keys_of(&mut conn, &prefix).await;
    assert!(keys.len() >= 5, "{keys:?}");
    let tag = format!("{{{prefix}}}:");
    for key in &keys {
        assert!(key.starts_with(&tag), "{key} is outside {tag}");
    }
    assert!(
        keys.contains(&format!("{tag}rate:rb%3Awith%3Acolons:svc%3Ax")),
        "{keys:?}"
    );
    assert!(keys.contains(&format!("{tag}inc:inc%3A1")), "{keys:?}");
    // The per-runbook services set is windowed like the rate key: it expires with its window.
    let rbsvc = format!("{tag}rbsvc:rb%3Awith%3Acolons");
    assert!(keys.contains(&rbsvc), "{keys:?}");
    let ttl: i64 = raw_cmd(&mut conn, redis::cmd("PTTL").arg(&rbsvc)).await;
    assert!(
        (1..=limits.services_window_ms as i64).contains(&ttl),
        "{rbsvc} PTTL {ttl}"
    );
}

/// An incident record of the wrong type (corruption, a foreign writer) is a protocol error, not
/// an outage and not a guess.
#[tokio::test]
async fn foreign_data_is_a_protocol_error() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let store = connect(&url, &prefix).await;
    let mut conn = raw(&url).await;
    raw_cmd::<()>(
        &mut conn,
        redis::cmd("SET").arg(format!("{{{prefix}}}:inc:x")).arg("garbage"),
    )
    .await;
    let r = store
        .decide(&reserve("x", "a", &scope("rb", "s"), &open_limits(), LONG_LEASE))
        .await;
    assert!(matches!(r, Err(StoreError::Protocol(_))), "{r:?}");
    raw_cmd::<()>(
        &mut conn,
        redis::cmd("HSET")
            .arg(format!("{{{prefix}}}:cb:rb"))
            .arg("state")
            .arg("AJAR"),
    )
    .await;
    let r = store.circuit("rb").await;
    assert!(matches!(r, Err(StoreError::Protocol(_))), "{r:?}");
}

/// Two replicas (two stores, one namespace) share every limit exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_rate_limit() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let replicas = [
        Arc::new(connect(&url, &prefix).await),
        Arc::new(connect(&url, &prefix).await),
    ];
    let limits = Limits {
        max_per_hour: 5,
        ..open_limits()
    };
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = replicas[i % 2].clone();
            let req = reserve(
                &format!("i{i}"),
                &format!("a{i}"),
                &scope("rb", "svc"),
                &limits,
                LONG_LEASE,
            );
            tokio::spawn(async move { store.decide(&req).await.expect("decide") })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.expect("task") == ALLOWED {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
}

/// The record of an action that started lives the idempotency TTL (here a day), not lease +
/// the one-hour claim grace; a renewal never shortens it; the interrupted claim that takes it
/// over lives as long. (Read from Redis: nobody waits an hour in a test.)
#[tokio::test]
async fn started_action_record_lives_the_idempotency_ttl() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let store = connect(&url, &prefix).await;
    let mut conn = raw(&url).await;
    let day: i64 = 24 * 3_600_000;
    let limits = Limits {
        record_ttl_ms: day as u64,
        ..open_limits()
    };
    let key = format!("{{{prefix}}}:inc:i1");
    let s = scope("rb", "svc");
    assert_eq!(
        store.decide(&reserve("i1", "a1", &s, &limits, 300)).await.expect("d"),
        ALLOWED
    );
    let pttl: i64 = raw_cmd(&mut conn, redis::cmd("PTTL").arg(&key)).await;
    assert!(pttl > day - 60_000, "executing record PTTL {pttl}");
    store.renew(&renewal("i1", "a1", "rb", 300, 1)).await.expect("renew");
    let pttl: i64 = raw_cmd(&mut conn, redis::cmd("PTTL").arg(&key)).await;
    assert!(pttl > day - 60_000, "renewed executing record PTTL {pttl}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut next = reserve("i1", "a2", &s, &limits, 300);
    next.worker = "w2".into();
    assert_eq!(
        store.decide(&next).await.expect("d"),
        DecideAnswer::Interrupted { worker: "w1".into() }
    );
    let pttl: i64 = raw_cmd(&mut conn, redis::cmd("PTTL").arg(&key)).await;
    assert!(pttl > day - 60_000, "interrupted record PTTL {pttl}");
}

fn conservative_limits() -> Limits {
    Limits {
        conservative_ms: 1_500,
        ..open_limits()
    }
}

const CONSERVATIVE_PROBE: DecideAnswer = DecideAnswer::Allowed {
    probe: true,
    conservative: true,
};

/// Losing the `epoch` key means Redis lost its data: every circuit runs half-open (one probe per
/// runbook) for conservative_ms, and a conservative probe's failure opens its circuit.
#[tokio::test]
async fn conservative_mode_after_epoch_loss() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let store = connect(&url, &prefix).await;
    let mut conn = raw(&url).await;
    let limits = conservative_limits();
    let (rb1, rb2) = (scope("rb1", "svc"), scope("rb2", "svc"));

    assert_eq!(
        store
            .decide(&reserve("i0", "a0", &rb1, &limits, LONG_LEASE))
            .await
            .expect("d"),
        ALLOWED
    );
    store
        .finish(&finish("i0", "a0", &rb1, &limits, ExecResult::Success))
        .await
        .expect("f");

    raw_cmd::<()>(&mut conn, redis::cmd("DEL").arg(format!("{{{prefix}}}:epoch"))).await;
    let started = Instant::now();
    assert_eq!(
        store
            .decide(&reserve("i1", "a1", &rb1, &limits, LONG_LEASE))
            .await
            .expect("d"),
        CONSERVATIVE_PROBE
    );
    assert_eq!(
        store
            .decide(&reserve("i2", "a2", &rb1, &limits, LONG_LEASE))
            .await
            .expect("d"),
        DecideAnswer::Blocked {
            guardrail: Guardrail::CircuitOpen,
            detail: "circuit half-open (conservative mode), probe in flight".into()
        }
    );
    assert!(matches!(
        store
            .decide(&check("i3", "a3", &rb1, &limits, LONG_LEASE))
            .await
            .expect("d"),
        DecideAnswer::Blocked {
            guardrail: Guardrail::CircuitOpen,
            ..
        }
    ));
    assert_eq!(
        store
            .decide(&reserve("i4", "a4", &rb2, &limits, LONG_LEASE))
            .await
            .expect("d"),
        CONSERVATIVE_PROBE
    );

    // The probe's success keeps the circuit closed; the next caller probes again (still
    // conservative), and that probe's failure opens the circuit.
    let ok = store
        .finish(&finish("i1", "a1", &rb1, &limits, ExecResult::Success))
        .await
        .expect("f");
    assert_eq!(ok.circuit, CircuitState::Closed);
    assert_eq!(
        store
            .decide(&reserve("i5", "a5", &rb1, &limits, LONG_LEASE))
            .await
            .expect("d"),
        CONSERVATIVE_PROBE
    );
    let failed = store
        .finish(&finish("i5", "a5", &rb1, &limits, ExecResult::Failure))
        .await
        .expect("f");
    assert_eq!((failed.circuit, failed.opened), (CircuitState::Open, true));

    // After the window, a closed circuit is normal again.
    tokio::time::sleep_until((started + Duration::from_millis(1_700)).into()).await;
    store
        .finish(&finish("i4", "a4", &rb2, &limits, ExecResult::Success))
        .await
        .expect("f");
    assert_eq!(
        store
            .decide(&reserve("i6", "a6", &rb2, &limits, LONG_LEASE))
            .await
            .expect("d"),
        ALLOWED
    );
}

/// A store remembers the epoch from the moment it connects: Redis losing its data before this
/// replica's first decision is noticed too (conservative mode), not taken for a fresh start.
#[tokio::test]
async fn a_wipe_before_the_first_decision_is_noticed() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let store = connect(&url, &prefix).await;
    let mut conn = raw(&url).await;
    let epoch: Option<String> = raw_cmd(&mut conn, redis::cmd("GET").arg(format!("{{{prefix}}}:epoch"))).await;
    assert!(epoch.is_some_and(|e| !e.is_empty()), "the epoch is written at connect");
    raw_cmd::<()>(&mut conn, redis::cmd("DEL").arg(format!("{{{prefix}}}:epoch"))).await;
    assert_eq!(
        store
            .decide(&reserve(
                "i0",
                "a0",
                &scope("rb", "svc"),
                &conservative_limits(),
                LONG_LEASE
            ))
            .await
            .expect("d"),
        CONSERVATIVE_PROBE
    );
}

/// The store says how it reaches Redis and under which prefix, and its `Debug` output names
/// both but never the URL's password.
#[tokio::test]
async fn the_store_names_its_topology_and_prefix_but_never_the_password() {
    let prefix = fresh_prefix();
    // Nothing listens on port 1: the lazy connection is never made, the store still is.
    let store = RedisStore::connect("redis://:hunter2-secret@127.0.0.1:1/0", &prefix, TIMEOUT)
        .await
        .expect("a store, connected lazily");
    assert_eq!(store.topology(), "single");
    assert_eq!(store.key_prefix(), prefix);
    let shown = format!("{store:?}");
    assert!(shown.contains("single") && shown.contains(&prefix), "{shown}");
    assert!(!shown.contains("hunter2"), "the password leaked: {shown}");
}

/// The key prefix is the hash tag of every key: an empty one, or one with a brace, is refused
/// at connect with the reason named.
#[tokio::test]
async fn a_key_prefix_that_cannot_be_a_hash_tag_is_refused() {
    for bad in ["", "a{b", "a}b", "{x}"] {
        let err = RedisStore::connect("redis://127.0.0.1:1/0", bad, TIMEOUT)
            .await
            .expect_err(bad);
        assert!(
            err.to_string().contains("invalid guardrail key prefix"),
            "{bad:?}: {err}"
        );
    }
}

/// A promoted replica keeps the epoch but not necessarily the old primary's last writes; it has a
/// new replication id, though. A `primary` key naming another replication id than the server's
/// is what a promotion looks like to the script: conservative mode for everyone, once.
#[tokio::test]
async fn conservative_mode_after_a_new_primary() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let store = connect(&url, &prefix).await;
    let mut conn = raw(&url).await;
    let limits = conservative_limits();
    let key = format!("{{{prefix}}}:primary");
    assert_eq!(
        store
            .decide(&reserve("i0", "a0", &scope("rb0", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        ALLOWED,
        "the first decision records the primary without suspicion"
    );
    let info: String = raw_cmd(&mut conn, redis::cmd("INFO").arg("replication")).await;
    let replid = info
        .lines()
        .find_map(|l| l.strip_prefix("master_replid:"))
        .expect("master_replid")
        .trim()
        .to_string();
    let recorded: String = raw_cmd(&mut conn, redis::cmd("GET").arg(&key)).await;
    assert_eq!(recorded, replid);

    // As if these decisions had been made on a primary that is gone now.
    raw_cmd::<()>(&mut conn, redis::cmd("SET").arg(&key).arg("0123456789abcdef")).await;
    assert_eq!(
        store
            .decide(&reserve("i1", "a1", &scope("rb1", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        CONSERVATIVE_PROBE
    );
    let recorded: String = raw_cmd(&mut conn, redis::cmd("GET").arg(&key)).await;
    assert_eq!(recorded, replid, "the new primary is recorded");
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(
        store
            .decide(&reserve("i2", "a2", &scope("rb2", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        ALLOWED,
        "declared once per promotion, for conservative_ms"
    );
}

/// A server that refuses `INFO` (an ACL, a renamed command) loses only the promotion check:
/// decisions go on, not conservative.
#[tokio::test]
async fn decisions_work_where_info_is_denied() {
    let Some(url) = common::redis_url() else { return };
    let mut conn = raw(&url).await;
    let user = format!("noinfo-{}", uuid::Uuid::new_v4().simple());
    raw_cmd::<()>(
        &mut conn,
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(">pw")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-info"),
    )
    .await;
    let limited = url.replacen("redis://", &format!("redis://{user}:pw@"), 1);
    let store = connect(&limited, &fresh_prefix()).await;
    let limits = conservative_limits();
    for i in 0..2 {
        let id = format!("i{i}");
        assert_eq!(
            store
                .decide(&reserve(
                    &id,
                    &id,
                    &scope(&format!("rb{i}"), "svc"),
                    &limits,
                    LONG_LEASE
                ))
                .await
                .expect("decide without INFO"),
            ALLOWED
        );
    }
    raw_cmd::<()>(&mut conn, redis::cmd("ACL").arg("DELUSER").arg(&user)).await;
}

/// A full wipe followed by a new replica starting (which re-creates the epoch unknowingly): an
/// older replica notices the changed epoch and declares conservative mode for everyone.
#[tokio::test]
async fn wipe_noticed_by_an_older_replica() {
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let old = connect(&url, &prefix).await;
    let limits = conservative_limits();
    let mut conn = raw(&url).await;
    assert_eq!(
        old.decide(&reserve("i0", "a0", &scope("rb0", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        ALLOWED
    );

    let keys = keys_of(&mut conn, &prefix).await;
    raw_cmd::<()>(&mut conn, redis::cmd("DEL").arg(&keys)).await;
    let new = connect(&url, &prefix).await;
    assert_eq!(
        new.decide(&reserve("i1", "a1", &scope("rb1", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        ALLOWED,
        "a fresh replica cannot tell a wipe from a first deployment"
    );
    assert_eq!(
        old.decide(&reserve("i2", "a2", &scope("rb2", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        CONSERVATIVE_PROBE
    );
    assert_eq!(
        new.decide(&reserve("i3", "a3", &scope("rb3", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        CONSERVATIVE_PROBE,
        "conservative mode is shared"
    );
    // The old replica adopted the stored epoch: once the window is over it is not re-declared.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(
        old.decide(&reserve("i4", "a4", &scope("rb4", "svc"), &limits, LONG_LEASE))
            .await
            .expect("d"),
        ALLOWED
    );
}

/// An approval answered by an older version (no `retryable` mark: its execution was claimed under
/// another key, which this version cannot find) is never a retry: the same approver repeating
/// the same answer after an upgrade is refused as already answered, not executed again. An
/// answer this version accepted stays retryable.
#[tokio::test]
async fn an_answer_given_by_an_older_version_is_never_a_retry() {
    use common::ledger_suite::approval;
    use remediator::guardrails::{Answer, AnswerResult, LedgerStore};
    let Some(url) = common::redis_url() else { return };
    let prefix = fresh_prefix();
    let store = connect(&url, &prefix).await;
    let alice = Answer {
        approve: true,
        approver: "alice".into(),
        action_hash: Some("h1".into()),
    };
    // Answered by this version: a repeat is a retry.
    store.create_approval(&approval("new"), 60_000).await.unwrap();
    assert!(matches!(
        store.answer_approval("new", &alice).await.unwrap(),
        AnswerResult::Accepted(_)
    ));
    assert!(matches!(
        store.answer_approval("new", &alice).await.unwrap(),
        AnswerResult::Repeated(_)
    ));
    // Answered by an older version: the hash as it wrote it (state, approver, answered_at).
    store.create_approval(&approval("old"), 60_000).await.unwrap();
    let mut conn = raw(&url).await;
    let key = format!("{{{prefix}}}:appr:old");
    let _: () = raw_cmd(
        &mut conn,
        redis::cmd("HSET")
            .arg(&key)
            .arg("state")
            .arg("approved")
            .arg("approver")
            .arg("alice")
            .arg("answered_at")
            .arg("1"),
    )
    .await;
    let again = store.answer_approval("old", &alice).await.unwrap();
    assert!(matches!(again, AnswerResult::AlreadyAnswered(_)), "{again:?}");
}

/// A decision in a rollout stage the record has left is refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_in_a_left_rollout_stage_writes_nothing() {
    let Some(url) = common::redis_url() else { return };
    let store = Arc::new(connect(&url, &fresh_prefix()).await);
    common::guardrail_suite::a_decision_in_a_left_rollout_stage_writes_nothing(store.clone(), store).await;
}
