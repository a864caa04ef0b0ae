//! The Kafka pipeline against a real broker (docs/design.md#kafka): outcomes published and offsets
//! committed only after acknowledgement, poison to the dead-letter topic, redelivery answered
//! from the store, graceful shutdown, fail-closed when the guardrail store is down.
//!
//! Needs `KAFKA_BOOTSTRAP` (and uses `REDIS_URL` when set, else the in-memory store); see
//! `scripts/services.sh`. Every test uses its own topics, group and incident ids.

#[path = "common/kafka.rs"]
mod kafka_common;

use kafka_common::{
    bootstrap, committed, engine, engine_with, high_watermarks, produce, read, redis_url, seed_incidents, unique,
    wait_until, Msg, Topics, Worker,
};
use remediator::clock::SystemClock;
use remediator::executor::simulated::{Faults, SimulatedExecutor};
use remediator::guardrails::memory::MemoryStore;
use remediator::guardrails::redis::RedisStore;
use remediator::guardrails::Store;
use remediator::kafka::RunStats;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(30);

/// The shared store of the replicas under test: Redis under a unique prefix when available.
async fn store() -> Arc<dyn Store> {
    match redis_url() {
        Some(url) => Arc::new(
            RedisStore::connect(&url, &unique("kafka-test"), Duration::from_millis(200))
                .await
                .expect("redis store"),
        ),
        None => Arc::new(MemoryStore::new(Arc::new(SystemClock))),
    }
}

/// The four sample incidents (tests/data/seed-incidents.jsonl) give executed, executed,
/// approval_required, manual — exactly four outcomes, keyed by incident id — and the group's
/// committed offsets cover all four messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_incidents_publish_four_outcomes_and_commit() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 3).await;
    let group = unique("group");
    let incidents = seed_incidents(&unique("seed"));
    let msgs: Vec<Msg> = incidents.iter().map(|(id, p)| Msg::incident(id, p)).collect();
    produce(&bs, &topics.incidents, &msgs).await;

    let executor = Arc::new(SimulatedExecutor::new());
    let mut settings = topics.settings(&bs, &group);
    // Statistics (the lag gauge's source) every 100 ms instead of 5 s.
    settings
        .properties
        .insert("statistics.interval.ms".into(), "100".into());
    let engine = engine(store().await, executor.clone());
    let worker = Worker::start(&settings, engine.clone());
    let outcomes = read(&bs, &topics.outcomes, 4, WITHIN).await;
    assert!(worker.health.snapshot().0, "kafka reported healthy");
    assert!(worker.health.snapshot().1, "store reported healthy");
    wait_until("consumer lag 0 on every partition", WITHIN, || {
        let text = engine.metrics().render();
        (0..topics.partitions)
            .all(|p| text.contains(&format!("remediator_kafka_consumer_lag{{partition=\"{p}\"}} 0\n")))
    })
    .await;
    let stats = worker.stop().await.expect("run ok");

    let decisions: BTreeMap<String, String> = outcomes
        .iter()
        .map(|r| {
            let v = r.json();
            let id = v["incident_id"].as_str().expect("incident_id").to_string();
            assert_eq!(r.key.as_deref(), Some(id.as_str()), "outcome keyed by incident id");
            (id, v["decision"].as_str().expect("decision").to_string())
        })
        .collect();
    let want: BTreeMap<String, String> = incidents
        .iter()
        .zip(["executed", "executed", "approval_required", "manual"])
        .map(|((id, _), d)| (id.clone(), d.to_string()))
        .collect();
    assert_eq!(decisions, want);
    assert_eq!(
        high_watermarks(&bs, &topics.outcomes, 1),
        vec![4],
        "exactly four outcomes"
    );
    assert_eq!(executor.journal().len(), 2, "two executions");
    assert_eq!(
        stats,
        RunStats {
            handled: 4,
            dead_lettered: 0,
            republished: 0
        }
    );

    let ends = high_watermarks(&bs, &topics.incidents, topics.partitions);
    let done = committed(&bs, &group, &topics.incidents, topics.partitions);
    for (p, (end, c)) in ends.iter().zip(&done).enumerate() {
        assert_eq!(
            c.unwrap_or(0),
            *end,
            "partition {p}: committed offset covers every message"
        );
    }
    assert_eq!(ends.iter().sum::<i64>(), 4);
}

/// The guardrails' edges through the live worker (real broker, real Redis when `REDIS_URL` is set,
/// as under `scripts/test.sh`), one partition so the order is the produce order: with
/// `max_per_hour: 3`, exactly three act and the fourth is blocked by the rate limit; confidence
/// exactly at `min_confidence` acts and just below it is manual; an incident id that acted once
/// is a duplicate when it comes again in a new message; an incident older than
/// `max_incident_age` is expired while a younger one acts. (The time-driven edges to the
/// millisecond, cooldown and circuit, run with a manual clock in tests/safety_edges.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guardrail_edges_hold_through_the_live_worker() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 1).await;
    let run = unique("edges");
    let catalogue = r#"
runbooks:
  restart:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.8
    max_per_hour: 3
    cooldown_minutes: 0
    action: {kind: delete_pod, namespace: "{namespace}", pod: "{pod_name}"}
    post_checks: [pod_becomes_ready]
    rollback: null
"#;
    let at = |minutes_ago: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let crash = |n: u32, service: &str, confidence: f64, detected_at: Option<String>| {
        let id = format!("{run}-{n}");
        let detected = detected_at
            .map(|t| format!(r#","detected_at":"{t}""#))
            .unwrap_or_default();
        let payload = format!(
            r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":{confidence},"service":"{service}","context":{{"pod_name":"{service}-{n}","namespace":"production"}}{detected}}}"#
        );
        (id, payload)
    };
    // (incident, expected decision, expected reason prefix)
    let mut cases = vec![
        (
            crash(1, "edge-a", 0.95, None),
            "executed",
            "simulated: kubectl delete pod ",
        ),
        (
            crash(2, "edge-a", 0.95, None),
            "executed",
            "simulated: kubectl delete pod ",
        ),
        (
            crash(3, "edge-a", 0.95, None),
            "executed",
            "simulated: kubectl delete pod ",
        ),
        (
            crash(4, "edge-a", 0.95, None),
            "blocked",
            "rate limit 3/hour reached (next slot in ",
        ),
        (
            crash(5, "edge-b", 0.8, None),
            "executed",
            "simulated: kubectl delete pod ",
        ),
        (
            crash(6, "edge-c", 0.79, None),
            "manual",
            "confidence 0.79 < 0.8 required by runbook restart",
        ),
        (
            crash(7, "edge-d", 0.95, Some(at(14))),
            "executed",
            "simulated: kubectl delete pod ",
        ),
        (crash(8, "edge-e", 0.95, Some(at(16))), "expired", "incident is 16m"),
    ];
    // Incident 1 again, in a new message: already handled.
    cases.push((cases[0].0.clone(), "duplicate", "incident id already handled"));
    let msgs: Vec<Msg> = cases.iter().map(|((id, p), _, _)| Msg::incident(id, p)).collect();
    produce(&bs, &topics.incidents, &msgs).await;

    let executor = Arc::new(SimulatedExecutor::new());
    let worker = Worker::start(
        &topics.settings(&bs, &unique("group")),
        engine_with(catalogue, store().await, executor.clone()),
    );
    let outcomes = read(&bs, &topics.outcomes, cases.len(), WITHIN).await;
    worker.stop().await.expect("run ok");

    let got: Vec<(String, String, String)> = outcomes
        .iter()
        .map(|r| {
            let v = r.json();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("incident_id"), s("decision"), s("reason"))
        })
        .collect();
    for (i, (((id, _), decision, reason), (got_id, got_decision, got_reason))) in cases.iter().zip(&got).enumerate() {
        assert_eq!(
            (got_id, got_decision),
            (id, &decision.to_string()),
            "outcome {i}: {got:#?}"
        );
        assert!(
            got_reason.starts_with(reason),
            "outcome {i}: reason {got_reason:?}, want {reason:?}..."
        );
    }
    assert_eq!(
        outcomes[3].json()["guardrail"].as_str(),
        Some("rate_limit"),
        "the fourth is blocked by the rate limit"
    );
    assert_eq!(
        executor.journal().len(),
        5,
        "exactly five actions ran: {:?}",
        executor.journal()
    );
}

/// Malformed and null messages: rejected outcome + byte-for-byte DLQ copy with the error and
/// origin headers, offsets committed, and the next incident in the partition is still handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_goes_to_the_dlq_and_the_partition_moves_on() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 1).await;
    let group = unique("group");
    let run = unique("poison");
    let bad = format!(r#"{{"id":"{run}-BAD","root_cause":"high_cpu","confidence":"very","service":"worker"}}"#);
    let good_id = format!("{run}-OK");
    let good = format!(r#"{{"id":"{good_id}","root_cause":"unknown_issue","confidence":0.6,"service":"auth"}}"#);
    let msgs = vec![
        Msg {
            key: Some("bad-key".into()),
            payload: Some(bad.as_bytes().to_vec()),
            headers: vec![("trace".into(), "t-1".into())],
        },
        Msg {
            key: Some("tombstone".into()),
            payload: None,
            headers: Vec::new(),
        },
        Msg::incident(&good_id, &good),
    ];
    let offsets = produce(&bs, &topics.incidents, &msgs).await;

    let worker = Worker::start(
        &topics.settings(&bs, &group),
        engine(store().await, Arc::new(SimulatedExecutor::new())),
    );
    let outcomes = read(&bs, &topics.outcomes, 3, WITHIN).await;
    let dlq = read(&bs, &topics.dlq, 2, WITHIN).await;
    let stats = worker.stop().await.expect("run ok");

    let decisions: Vec<String> = outcomes
        .iter()
        .map(|r| r.json()["decision"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(decisions, ["rejected", "rejected", "manual"]);
    let first = outcomes[0].json();
    assert_eq!(
        first["incident_id"],
        format!("{run}-BAD"),
        "rejected outcome still names the incident"
    );
    assert!(
        first["reason"].as_str().unwrap_or("").contains("confidence"),
        "reason names the field: {first}"
    );
    assert!(outcomes[1].json()["reason"]
        .as_str()
        .unwrap_or("")
        .contains("null payload"));

    assert_eq!(dlq.len(), 2, "both poison messages dead-lettered");
    let (copy, tomb) = (&dlq[0], &dlq[1]);
    assert_eq!(copy.payload.as_deref(), Some(bad.as_bytes()), "raw bytes copied");
    assert_eq!(copy.key.as_deref(), Some("bad-key"), "key copied");
    assert_eq!(copy.header("error_field"), Some("confidence"));
    assert!(
        copy.header("error").unwrap_or("").starts_with("confidence: "),
        "{:?}",
        copy.headers
    );
    assert_eq!(copy.header("source_topic"), Some(topics.incidents.as_str()));
    assert_eq!(copy.header("source_partition"), Some("0"));
    assert_eq!(copy.header("source_offset"), Some(offsets[0].1.to_string().as_str()));
    assert_eq!(copy.header("trace"), Some("t-1"), "original headers kept");
    assert_eq!(tomb.payload, None, "null payload stays null");
    assert_eq!(tomb.header("error_field"), Some("$"));
    assert_eq!(tomb.header("source_offset"), Some(offsets[1].1.to_string().as_str()));

    assert_eq!(
        stats,
        RunStats {
            handled: 3,
            dead_lettered: 2,
            republished: 0
        }
    );
    assert_eq!(committed(&bs, &group, &topics.incidents, 1), vec![Some(3)]);
}

/// Redelivery (a second group reading the same messages, as after a crash before commit): the
/// store answers with the recorded outcomes, which are re-published with the same event ids, and
/// nothing is executed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_incidents_republish_without_executing_again() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 3).await;
    let incidents: Vec<(String, String)> = seed_incidents(&unique("redeliver")).into_iter().take(2).collect();
    let msgs: Vec<Msg> = incidents.iter().map(|(id, p)| Msg::incident(id, p)).collect();
    produce(&bs, &topics.incidents, &msgs).await;
    let store = store().await;
    let executor = Arc::new(SimulatedExecutor::new());

    let first = Worker::start(
        &topics.settings(&bs, &unique("group")),
        engine(store.clone(), executor.clone()),
    );
    let original = read(&bs, &topics.outcomes, 2, WITHIN).await;
    let stats = first.stop().await.expect("first run ok");
    assert_eq!(
        stats,
        RunStats {
            handled: 2,
            dead_lettered: 0,
            republished: 0
        }
    );
    assert_eq!(executor.journal().len(), 2);

    let second = Worker::start(&topics.settings(&bs, &unique("group")), engine(store, executor.clone()));
    let all = read(&bs, &topics.outcomes, 4, WITHIN).await;
    let stats = second.stop().await.expect("second run ok");
    assert_eq!(
        stats,
        RunStats {
            handled: 2,
            dead_lettered: 0,
            republished: 2
        }
    );
    assert_eq!(executor.journal().len(), 2, "redelivery executed nothing");

    let ids = |rs: &[kafka_common::Record]| {
        let mut v: Vec<(String, String, String)> = rs
            .iter()
            .map(|r| {
                let j = r.json();
                let s = |k: &str| j[k].as_str().unwrap_or("").to_string();
                (s("incident_id"), s("event_id"), s("decision"))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(all.len(), 4);
    assert_eq!(ids(&all[2..]), ids(&original), "the recorded outcomes, same event ids");
    assert!(ids(&original).iter().all(|(_, _, d)| d == "executed"));
}

/// Shutdown while an action runs: the action finishes, its outcome is published and its offset
/// committed before `run` returns; the message queued behind it is left for redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_the_incident_in_flight() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 1).await;
    let group = unique("group");
    let incidents: Vec<(String, String)> = seed_incidents(&unique("drain")).into_iter().take(2).collect();
    let msgs: Vec<Msg> = incidents.iter().map(|(id, p)| Msg::incident(id, p)).collect();
    produce(&bs, &topics.incidents, &msgs).await;

    let executor = Arc::new(SimulatedExecutor::with_faults(Faults {
        action_delay: Duration::from_secs(1),
        ..Faults::default()
    }));
    let engine = engine(store().await, executor.clone());
    let worker = Worker::start(&topics.settings(&bs, &group), engine.clone());
    wait_until("the first action to be in flight", WITHIN, || {
        engine.metrics().in_flight.get() == 1
    })
    .await;
    let stopping = std::time::Instant::now();
    let stats = worker.stop().await.expect("run ok");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "drained promptly: {:?}",
        stopping.elapsed()
    );

    assert_eq!(
        stats,
        RunStats {
            handled: 1,
            dead_lettered: 0,
            republished: 0
        }
    );
    assert_eq!(executor.journal().len(), 1, "only the in-flight incident ran");
    assert_eq!(executor.journal()[0].incident_id, incidents[0].0);
    let outcomes = read(&bs, &topics.outcomes, 1, WITHIN).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].json()["decision"], "executed");
    assert_eq!(outcomes[0].json()["incident_id"], incidents[0].0.as_str());
    assert_eq!(
        high_watermarks(&bs, &topics.outcomes, 1),
        vec![1],
        "nothing else published"
    );
    assert_eq!(
        committed(&bs, &group, &topics.incidents, 1),
        vec![Some(1)],
        "committed up to the drained one"
    );
}

/// Fail closed: with the guardrail store unreachable nothing is executed or published and the
/// offset is not committed; the worker keeps retrying the same message. A worker of the same
/// group with a reachable store then picks the incident up: nothing was lost.
///
/// (The resume half restarts the worker with a working store rather than reviving the dead one,
/// since an `Engine`'s store cannot be swapped; the retry loop itself is covered by the
/// `store_errors` counter climbing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_unavailable_holds_the_message_until_a_store_answers() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 1).await;
    let group = unique("group");
    let incidents: Vec<(String, String)> = seed_incidents(&unique("failclosed")).into_iter().take(1).collect();
    produce(
        &bs,
        &topics.incidents,
        &[Msg::incident(&incidents[0].0, &incidents[0].1)],
    )
    .await;

    // Port 1 on loopback: nothing listens, connections are refused at once.
    let dead: Arc<dyn Store> = Arc::new(
        RedisStore::connect("redis://127.0.0.1:1", &unique("dead"), Duration::from_millis(200))
            .await
            .expect("lazy"),
    );
    let executor = Arc::new(SimulatedExecutor::new());
    let engine1 = engine(dead, executor.clone());
    let worker = Worker::start(&topics.settings(&bs, &group), engine1.clone());
    wait_until("three failed store calls", WITHIN, || {
        engine1.metrics().store_errors.get() >= 3
    })
    .await;
    assert!(!worker.health.snapshot().1, "store reported unhealthy while paused");
    let stats = worker.stop().await.expect("run ok");
    assert_eq!(stats, RunStats::default());
    assert!(executor.journal().is_empty(), "nothing executed without guardrails");
    assert_eq!(
        high_watermarks(&bs, &topics.outcomes, 1),
        vec![0],
        "no outcome published"
    );
    assert_eq!(
        committed(&bs, &group, &topics.incidents, 1),
        vec![None],
        "offset not committed"
    );

    let worker = Worker::start(&topics.settings(&bs, &group), engine(store().await, executor.clone()));
    let outcomes = read(&bs, &topics.outcomes, 1, WITHIN).await;
    assert!(worker.health.snapshot().1, "store healthy again");
    let stats = worker.stop().await.expect("run ok");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].json()["decision"], "executed");
    assert_eq!(executor.journal().len(), 1);
    assert_eq!(stats.handled, 1);
    assert_eq!(committed(&bs, &group, &topics.incidents, 1), vec![Some(1)]);
}

/// A second replica joins mid-stream (classic, eager rebalance): the first one's partitions are
/// revoked while it is working, yet every incident gets its outcome, none is executed twice,
/// the replayed ones are re-published identically, and the group ends up committing every
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_loses_nothing_and_executes_nothing_twice() {
    // Heartbeats every 300 ms: the first member learns of the join well before its work is done.
    let properties = [("heartbeat.interval.ms".to_string(), "300".to_string())].into();
    rebalance(properties, true).await;
}

/// The same hand-over with the KIP-848 consumer protocol (incremental assignment and
/// revocation). Its heartbeat interval is the broker's (5 s by default), so the second member
/// may only get partitions when the first one leaves; either way nothing is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handover_with_the_consumer_protocol() {
    rebalance([("group.protocol".to_string(), "consumer".to_string())].into(), false).await;
}

async fn rebalance(mut properties: BTreeMap<String, String>, expect_midstream: bool) {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 3).await;
    let group = unique("group");
    let run = unique("rebalance");
    // Ten services: within the blast-radius default of 10 distinct services per window.
    let incidents: Vec<(String, String)> = (0..10)
        .map(|i| {
            let id = format!("{run}-{i:02}");
            let payload = format!(
                r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"svc-{i}","context":{{"pod_name":"svc-{i}-abc","namespace":"production"}}}}"#
            );
            (id, payload)
        })
        .collect();
    let msgs: Vec<Msg> = incidents.iter().map(|(id, p)| Msg::incident(id, p)).collect();
    produce(&bs, &topics.incidents, &msgs).await;

    properties.insert("auto.commit.interval.ms".into(), "200".into());
    let settings = remediator::kafka::KafkaSettings {
        properties,
        ..topics.settings(&bs, &group)
    };
    let store = store().await;
    let executor = Arc::new(SimulatedExecutor::with_faults(Faults {
        action_delay: Duration::from_millis(1200),
        ..Faults::default()
    }));
    let a = Worker::start(&settings, engine(store.clone(), executor.clone()));
    read(&bs, &topics.outcomes, 1, WITHIN).await;
    let b = Worker::start(&settings, engine(store.clone(), executor.clone()));

    // Every incident answered at least once.
    let deadline = std::time::Instant::now() + WITHIN;
    let outcomes = loop {
        let n = high_watermarks(&bs, &topics.outcomes, 1)[0] as usize;
        let got = read(&bs, &topics.outcomes, n, WITHIN).await;
        let ids: std::collections::BTreeSet<String> = got
            .iter()
            .filter_map(|r| r.json()["incident_id"].as_str().map(str::to_string))
            .collect();
        if ids.len() == incidents.len() {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {} incidents answered",
            ids.len(),
            incidents.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A leaves; B takes over its partitions and commits everything.
    let a_stats = a.stop().await.expect("a ok");
    let ends = high_watermarks(&bs, &topics.incidents, topics.partitions);
    wait_until("the group to commit every message", WITHIN, || {
        committed(&bs, &group, &topics.incidents, topics.partitions)
            .iter()
            .map(|c| c.unwrap_or(0))
            .collect::<Vec<_>>()
            == ends
    })
    .await;
    let b_stats = b.stop().await.expect("b ok");
    assert!(
        a_stats.handled + b_stats.handled >= incidents.len() as u64,
        "{a_stats:?} {b_stats:?}"
    );
    if expect_midstream {
        // Ten incidents at 1.2 s each over three partitions keep A's busiest partition going
        // for ≥ 4.8 s and B joined after ~1.5 s: the eager rebalance revoked that partition with
        // an incident in progress, whose redelivery (to A or B, whichever got the partition) was
        // answered from the store. (Which member gets which partition varies, so B may end up
        // with nothing left to do.)
        assert!(
            a_stats.republished + b_stats.republished > 0,
            "no redelivery: {a_stats:?} {b_stats:?}"
        );
    }

    let journal = executor.journal();
    let mut executed: Vec<&str> = journal.iter().map(|e| e.incident_id.as_str()).collect();
    executed.sort_unstable();
    let before = executed.len();
    executed.dedup();
    assert_eq!(before, executed.len(), "no incident executed twice: {executed:?}");
    let mut events: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for r in read(
        &bs,
        &topics.outcomes,
        high_watermarks(&bs, &topics.outcomes, 1)[0] as usize,
        WITHIN,
    )
    .await
    {
        let j = r.json();
        let decision = j["decision"].as_str().unwrap_or("").to_string();
        assert!(decision == "executed" || decision == "blocked", "{j}");
        events
            .entry(j["incident_id"].as_str().unwrap_or("").to_string())
            .or_default()
            .insert(j["event_id"].to_string());
    }
    assert!(outcomes.len() >= incidents.len());
    for (id, e) in &events {
        assert_eq!(
            e.len(),
            1,
            "{id}: a redelivery re-published the same outcome, not a new decision"
        );
    }
}

/// Backpressure with two slots for three partitions: bursts of quick decisions wait for a slot,
/// slow executions (1.2 s, longer than the 1 s a saturated consumer waits before pausing) make
/// it pause its partitions and resume them; either way every partition's incidents are answered
/// in offset order and everything is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_stay_ordered_under_backpressure() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 3).await;
    let group = unique("group");
    let run = unique("order");
    let msgs: Vec<Msg> = (0..36)
        .map(|i| {
            let id = format!("{run}-{i:02}");
            let payload = if i % 12 == 5 {
                format!(
                    r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"svc-{i}","context":{{"pod_name":"svc-{i}-abc","namespace":"production"}}}}"#
                )
            } else {
                format!(r#"{{"id":"{id}","root_cause":"unknown_issue","confidence":0.6,"service":"auth"}}"#)
            };
            Msg::incident(&id, &payload)
        })
        .collect();
    let placed = produce(&bs, &topics.incidents, &msgs).await;
    let mut settings = topics.settings(&bs, &group);
    settings.max_in_flight = 2;
    let executor = Arc::new(SimulatedExecutor::with_faults(Faults {
        action_delay: Duration::from_millis(1200),
        ..Faults::default()
    }));
    let worker = Worker::start(&settings, engine(store().await, executor.clone()));
    let outcomes = read(&bs, &topics.outcomes, msgs.len(), WITHIN).await;
    let stats = worker.stop().await.expect("run ok");
    assert_eq!(stats.handled, msgs.len() as u64);
    assert_eq!(outcomes.len(), msgs.len());
    assert_eq!(executor.journal().len(), 3);

    let placement: BTreeMap<String, (i32, i64)> = msgs
        .iter()
        .zip(&placed)
        .map(|(m, p)| (m.key.clone().unwrap_or_default(), *p))
        .collect();
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in &outcomes {
        let id = r.json()["incident_id"].as_str().unwrap_or("").to_string();
        let (p, o) = placement[&id];
        seen.entry(p).or_default().push(o);
    }
    for (p, offsets) in seen {
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        assert_eq!(offsets, sorted, "partition {p} answered in offset order");
    }
    let ends = high_watermarks(&bs, &topics.incidents, topics.partitions);
    let done: Vec<i64> = committed(&bs, &group, &topics.incidents, topics.partitions)
        .iter()
        .map(|c| c.unwrap_or(0))
        .collect();
    assert_eq!(done, ends);
}

/// W3C trace context: an incident's `traceparent` header continues on its outcome (same trace
/// id, the worker's own span id); without one, outcomes carry none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traceparent_is_carried_from_incident_to_outcome() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 1).await;
    let incidents = seed_incidents(&unique("trace"));
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut traced = Msg::incident(&incidents[0].0, &incidents[0].1);
    traced.headers.push(("traceparent".into(), tp.into()));
    let plain = Msg::incident(&incidents[3].0, &incidents[3].1);
    produce(&bs, &topics.incidents, &[traced, plain]).await;
    let worker = Worker::start(
        &topics.settings(&bs, &unique("group")),
        engine(store().await, Arc::new(SimulatedExecutor::new())),
    );
    let outcomes = read(&bs, &topics.outcomes, 2, WITHIN).await;
    worker.stop().await.expect("run ok");
    let header = outcomes[0].header("traceparent").expect("traceparent on the outcome");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "the worker's own span id");
    assert_eq!(outcomes[1].header("traceparent"), None);
}
