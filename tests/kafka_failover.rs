//! Replicated Kafka (docs/reliability.md#replicated-kafka): real `remediator run` processes against a private
//! 3-node KRaft cluster (`scripts/kafka-cluster.sh`: every topic replication factor 3,
//! `min.insync.replicas=2`, no unclean leader election), with the shared Redis.
//!
//! * [`leader_kill_mid_flood_loses_nothing`]: the leader of the outcomes partition, of an
//!   incidents partition or of the group coordinator's partition is killed (`kill -9`,
//!   alternating with a clean stop) in the middle of a paced flood and started again,
//!   repeatedly; then the full history is checked as in
//!   `tests/reliability.rs`: every incident exactly one final outcome, no action twice, journal
//!   and outcomes agree, nothing lost from the audit topic, every offset committed.
//! * [`stuck_producer_ends_the_worker_and_redelivery_republishes`]: the worker's liveness
//!   guarantee (`src/kafka/publish.rs`, `Shared::deliver`): while the whole cluster is frozen the worker
//!   waits; when the cluster answers but the outcome can never be acknowledged (its topic needs
//!   3 in-sync replicas and one node is down) the worker exits non-zero, and its replacement
//!   re-publishes the recorded outcome from the store instead of acting again.
//!
//! Reduced under `cargo test` (2 kills; the two tests together in about 90 s on 2 cores), heavy
//! (`REMEDIATOR_RELIABILITY=heavy`, `scripts/reliability.sh heavy`): 1500 incidents, 6 kills.
//! They skip with a note without `REDIS_URL` /
//! `KAFKA_BOOTSTRAP` or the Kafka jars, and fail instead under `REMEDIATOR_TEST_REQUIRE_SERVICES`.
//! The two tests take turns (each starts 3 JVMs; the machine may have 2 cores).

#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "common/reliability.rs"]
mod reliability_common;
#[allow(dead_code)]
#[path = "common/schema.rs"]
mod schema;

use kafka_common::{unique, Msg};
use reliability_common::{
    crash, flood, full_history, ids, now_ms, runbooks, scale, services, wait_for, Collector, Figures, Fleet, Flood,
    Kind, OwnCluster, Producer, Services,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Each test starts a 3-node cluster: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn expect_kinds(work: &[(Msg, Kind)], finals: &reliability_common::Finals, v: &mut Vec<String>) {
    for (m, kind) in work {
        let id = m.key.clone().unwrap_or_default();
        let Some(o) = finals.by_id.get(&id) else { continue };
        let ok = match kind {
            Kind::Act => o.decision == "executed" || (o.decision == "aborted" && o.reason.contains("interrupted")),
            Kind::Unknown | Kind::LowConfidence => o.decision == "manual",
            Kind::Invalid => o.decision == "rejected",
        };
        if !ok {
            v.push(format!("incident {id} ({kind:?}) ended {}: {}", o.decision, o.reason));
        }
    }
}

/// The most failed deliveries in a row a worker's log reports (`failures=N` on its "delivery not
/// acknowledged; retrying" lines, colours stripped).
fn max_failures_logged(log: &str) -> u32 {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ ... m
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|l| l.contains("delivery not acknowledged"))
        .filter_map(|l| l.split("failures=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The leader of the outcomes partition, of an incidents partition or of the consumer-offsets
/// partition (the group coordinator), in turn, is killed mid-flood — `kill -9` and clean stops
/// alternating — and started again once its partitions have new leaders; the next kill waits
/// until every replica is back in sync (so `min.insync.replicas=2` always holds). 2 workers, a
/// mixed flood with 100 ms actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_mid_flood_loses_nothing() {
    let Some(svc) = services() else { return };
    let _turn = SERIAL.lock().await;
    let Some(cluster) = OwnCluster::start("failover") else {
        return;
    };
    let mut fig = Figures::new("kafka_leader_kill");
    let kills = scale(2, 6);
    let n = scale(150, 1500);
    let over = Duration::from_secs(scale(20, 120));
    let own = Services {
        brokers: cluster.brokers.clone(),
        redis: svc.redis.clone(),
    };
    let topics = cluster.topics(4, 2).await;
    let mut fleet = Fleet::new(
        "failover",
        &own,
        &topics,
        &runbooks(10_000),
        &[("REMEDIATOR_SIMULATED_ACTION_DELAY", "100ms")],
    );
    fleet.start(2).await;
    let Flood {
        collector,
        work,
        sent,
        producing,
    } = flood(&own.brokers, &topics, "failover", n, over);
    let all_topics = [
        topics.incidents.as_str(),
        topics.outcomes.as_str(),
        topics.dlq.as_str(),
        "__consumer_offsets",
    ];

    let mut v = Vec::new();
    let (mut max_new_leader_ms, mut max_next_outcome_ms, mut max_resync_ms) = (0i64, 0i64, 0i64);
    let mut victims = Vec::new();
    // Kills spread evenly over the flood (a kill, the restart and the resync take about 8 s).
    let flood_start = Instant::now();
    for k in 0..kills {
        let at = flood_start + over * (k as u32 + 1) / (kills as u32 + 1);
        tokio::time::sleep(at.saturating_duration_since(Instant::now()).max(Duration::from_secs(1))).await;
        let (topic, partition) = match k % 3 {
            0 => (topics.outcomes.as_str(), 0),
            1 => (topics.incidents.as_str(), (k / 3) % topics.partitions),
            // The group coordinator (kafka-cluster.sh: one offsets partition).
            _ => ("__consumer_offsets", 0),
        };
        let Some(victim) = cluster.leader(topic, partition) else {
            v.push(format!("kill {k}: no leader for {topic}/{partition}"));
            break;
        };
        let sig = if k % 2 == 0 { "KILL" } else { "TERM" };
        victims.push(format!("{victim}:{sig}"));
        let before = collector.snapshot().len();
        let t0 = now_ms();
        cluster.stop_node(victim, sig);
        // A new leader: at once for a clean stop, after broker.session.timeout.ms (3 s) for a crash.
        let moved = wait_for("a new leader", Duration::from_secs(30), || {
            cluster.leader(topic, partition).is_some_and(|l| l != victim)
        })
        .await;
        let new_leader_ms = now_ms() - t0;
        if let Err(e) = moved {
            v.push(format!("kill {k} of node {victim} ({sig}): {e}"));
        }
        // Outcomes keep coming without the victim (unless everything was decided already).
        let next = wait_for("an outcome after the kill", Duration::from_secs(30), || {
            collector.snapshot().len() > before || collector.decided().is_superset(&sent)
        })
        .await;
        let next_outcome_ms = now_ms() - t0;
        if let Err(e) = next {
            v.push(format!("kill {k} of node {victim} ({sig}): {e}"));
        }
        cluster.start_node(victim);
        match cluster.wait_isr(&all_topics, 3, Duration::from_secs(60)).await {
            Ok(_) => max_resync_ms = max_resync_ms.max(now_ms() - t0),
            Err(e) => v.push(format!("after restarting node {victim}: {e}")),
        }
        max_new_leader_ms = max_new_leader_ms.max(new_leader_ms);
        max_next_outcome_ms = max_next_outcome_ms.max(next_outcome_ms);
    }

    producing.await.expect("producer");
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(90, 300)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;
    expect_kinds(&work, &finals, &mut v);
    fig.add("incidents", n)
        .add("workers", 2)
        .add("leader_kills", kills)
        .add("victims", victims.join(","))
        .add("cluster_start_secs", format!("{:.1}", cluster.started_in.as_secs_f64()))
        .add("max_new_leader_ms", max_new_leader_ms)
        .add("max_next_outcome_ms", max_next_outcome_ms)
        .add("max_back_in_sync_ms", max_resync_ms)
        .add("outcome_records", h.records.len())
        .history(&h, &finals)
        .finish(&v);
}

/// The liveness guarantee, both ways. (1) The whole cluster frozen (SIGSTOP) for several
/// delivery timeouts while an outcome waits: an outage, so the worker waits and delivers once
/// the cluster is back. (2) The outcomes topic needs 3 in-sync replicas and a follower is down:
/// the cluster answers but never acknowledges, so after 4 failed deliveries the worker exits
/// non-zero ("the producer is stuck"); with the node back, a replacement worker gets the
/// unacknowledged incidents again and re-publishes their recorded outcomes (the stuck worker's
/// events, same `worker`) without acting again. `message.timeout.ms` is 1 s here (30 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_producer_ends_the_worker_and_redelivery_republishes() {
    let Some(svc) = services() else { return };
    let _turn = SERIAL.lock().await;
    let Some(cluster) = OwnCluster::start("stuck") else {
        return;
    };
    let mut fig = Figures::new("kafka_stuck_producer");
    let own = Services {
        brokers: cluster.brokers.clone(),
        redis: svc.redis.clone(),
    };
    let topics = cluster.topics(2, 3).await;
    let mut fleet = Fleet::new(
        "stuck",
        &own,
        &topics,
        &runbooks(10_000),
        &[
            ("REMEDIATOR_SIMULATED_ACTION_DELAY", "1s"),
            (
                "REMEDIATOR_KAFKA_PROPERTIES",
                "session.timeout.ms=6000,heartbeat.interval.ms=1000,message.timeout.ms=1000",
            ),
        ],
    );
    fleet.start(1).await;
    let collector = Collector::start(&own.brokers, &topics.outcomes);
    let producer = Producer::new(&own.brokers);
    let run = unique("stuck");
    let mut v = Vec::new();

    // (1) An outage is waited out: freeze every node while the first action runs (1 s), for
    // several delivery timeouts (1 s), each followed by a metadata check that gets no answer (3 s).
    let first = vec![crash(&format!("{run}-outage"), "svc-outage")];
    let mut sent = ids(&first);
    producer.send_all(&topics.incidents, &first).await;
    if let Err(e) = wait_for("the first action to start", Duration::from_secs(30), || {
        !fleet.journal().is_empty()
    })
    .await
    {
        v.push(e);
    }
    for n in 1..=OwnCluster::NODES {
        cluster.pause_node(n);
    }
    let frozen = Duration::from_secs(12);
    tokio::time::sleep(frozen).await;
    let survived = fleet.proc(0).alive();
    let outage_failures = max_failures_logged(&fleet.proc(0).log());
    for n in 1..=OwnCluster::NODES {
        cluster.resume_node(n);
    }
    if outage_failures < 2 {
        v.push(format!(
            "only {outage_failures} failed deliveries during the freeze: the stall check was not exercised"
        ));
    }
    if !survived {
        v.push(format!(
            "the worker exited during a cluster outage: {:?}\n{}",
            fleet.proc(0).exit_status(),
            fleet.proc(0).log()
        ));
    }
    let outage_delivered = collector.wait_all(&sent, Duration::from_secs(60)).await;
    v.extend(outage_delivered.err());
    // Idle before the next phase: the freeze may have cost the worker its group membership, and a
    // redelivery still in progress would be what gets stuck below.
    let (brokers, group) = (own.brokers.clone(), fleet.group.clone());
    let settled = wait_for(
        "every offset committed after the outage",
        Duration::from_secs(60),
        || {
            let hw = kafka_common::high_watermarks(&brokers, &topics.incidents, topics.partitions);
            let committed = kafka_common::committed(&brokers, &group, &topics.incidents, topics.partitions);
            hw.iter().zip(&committed).all(|(h, c)| *h == 0 || *c == Some(*h))
        },
    )
    .await;
    v.extend(settled.err());
    // The failure that happened during the freeze must not end the worker once the cluster
    // answers again (it counts once; the next attempt succeeds).
    if !fleet.proc(0).alive() {
        v.push(format!(
            "the worker exited after the outage: {:?}; log tail:\n{}",
            fleet.proc(0).exit_status(),
            fleet
                .proc(0)
                .log()
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }

    // (2) The cluster answers but cannot acknowledge: a follower of the outcomes partition down.
    let parts = cluster.partitions(&topics.outcomes).expect("outcomes metadata");
    let follower = parts[0]
        .replicas
        .iter()
        .copied()
        .find(|r| *r != parts[0].leader)
        .expect("a follower");
    cluster.stop_node(follower, "KILL");
    if let Err(e) = cluster
        .wait_isr(&[topics.outcomes.as_str()], 2, Duration::from_secs(30))
        .await
    {
        v.push(format!("ISR did not shrink: {e}"));
    }
    let stuck: Vec<Msg> = (0..4)
        .map(|i| crash(&format!("{run}-stuck-{i}"), &format!("svc-{i}")))
        .collect();
    sent.extend(ids(&stuck));
    let t0 = Instant::now();
    producer.send_all(&topics.incidents, &stuck).await;
    let exited = wait_for("the stuck worker to exit", Duration::from_secs(90), || {
        !fleet.proc(0).alive()
    })
    .await;
    let exit_secs = t0.elapsed().as_secs_f64();
    let status = fleet.proc(0).exit_status();
    let log = fleet.proc(0).log();
    match (exited, status) {
        (Ok(()), Some(s)) if !s.success() && log.contains("the producer is stuck") => {}
        (r, s) => v.push(format!(
            "want a non-zero exit naming the stuck producer, got {r:?} {s:?}; log tail:\n{}",
            log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
        )),
    }
    let stuck_pid = fleet.proc(0).pid;
    let acted_before_restart: BTreeSet<String> = fleet
        .journal()
        .into_iter()
        .filter(|a| a.pid == stuck_pid)
        .map(|a| a.incident_id)
        .collect();

    // The node back, a replacement worker: everything decided, nothing acted on twice.
    cluster.start_node(follower);
    if let Err(e) = cluster
        .wait_isr(&[topics.outcomes.as_str()], 3, Duration::from_secs(60))
        .await
    {
        v.push(e);
    }
    let replacement = fleet.restart_one();
    fleet.wait_ready(replacement, Duration::from_secs(60)).await;
    v.extend(collector.wait_all(&sent, Duration::from_secs(90)).await.err());
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;
    let stuck_name = fleet.proc(0).name.clone();
    let mut republished_from_store = 0;
    for id in ids(&stuck) {
        match finals.by_id.get(&id) {
            Some(o) if o.decision == "executed" && o.worker == stuck_name => republished_from_store += 1,
            Some(o) if o.decision == "executed" && !acted_before_restart.contains(&id) => {}
            Some(o) => v.push(format!(
                "incident {id}: {} by {} ({}), acted on before the restart: {}",
                o.decision,
                o.worker,
                o.reason,
                acted_before_restart.contains(&id)
            )),
            None => {}
        }
    }
    if republished_from_store == 0 {
        v.push("no outcome of the stuck worker was re-published by its replacement".into());
    }
    fig.add("incidents", h.sent.len())
        .add("cluster_frozen_secs", frozen.as_secs())
        .add("worker_survived_outage", survived)
        .add("failed_deliveries_in_outage", outage_failures)
        .add("stuck_exit_secs", format!("{exit_secs:.1}"))
        .add("acted_before_exit", acted_before_restart.len())
        .add("republished_from_store", republished_from_store)
        .add("executions", h.journal.len())
        .add("restarts", fleet.restarts)
        .finish(&v);
}
