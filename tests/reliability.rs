//! Proving the promises (docs/reliability.md): real `remediator
//! run` processes against real Redis and Kafka, faults done to them, and the *full* history
//! checked afterwards — every incident sent, every outcome record published (read back to the
//! topic's end after the workers stopped), every action the executor was asked to run (the
//! simulated executor's journal, written before acting by every process), and the consumer
//! group's committed offsets.
//!
//! Every scenario runs reduced in a normal `cargo test` (about a minute in all on 2 cores) and
//! heavy under `REMEDIATOR_RELIABILITY=heavy` (`scripts/reliability.sh heavy`). Each reports its
//! figures (incidents, kills, restarts, cases, violations) on stderr and, for the script's
//! summary, to `$REMEDIATOR_RELIABILITY_FIGURES`. Tests skip with a note without `KAFKA_BOOTSTRAP`
//! and `REDIS_URL`, and fail instead under `REMEDIATOR_TEST_REQUIRE_SERVICES`.
//!
//! Guardrails under concurrency: [`rate_limit_is_exact_across_four_replicas`],
//! [`concurrent_actions_never_exceed_the_limit_across_replicas`],
//! [`circuit_breaker_admits_one_probe_across_replicas`]. Faults:
//! [`kill_nine_mid_action_never_executes_twice`], [`rebalance_under_load_never_executes_twice`],
//! [`redis_outage_executes_nothing_and_loses_nothing`], [`kafka_broker_restart_loses_nothing`].
//! Bad input: [`hostile_incidents_never_reach_the_executor`],
//! [`malformed_runbooks_are_refused_with_precise_errors`].

#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "common/reliability.rs"]
mod reliability_common;
#[allow(dead_code)]
#[path = "common/schema.rs"]
mod schema;

use kafka_common::{unique, Msg, Topics};
use reliability_common::{
    committed_all, crash, decisions, flood, free_port, full_history, http_get, ids, max_overlap, metric, now_ms,
    runbooks, scale, services, Collector, Figures, Fleet, Flood, Kind, OwnKafka, OwnRedis, Producer, Rng, Services,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// 1. Shared guardrails under concurrency

/// 4 worker processes, a flood of incidents for one runbook and one service with
/// `max_per_hour: 5` and no cooldown: exactly 5 executions in the journal, every other incident
/// `blocked` by `rate_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_exact_across_four_replicas() {
    let Some(svc) = services() else { return };
    let mut fig = Figures::new("rate_limit_exact");
    let n = scale(300, 3000);
    let topics = Topics::create(&svc.brokers, 4).await;
    let mut fleet = Fleet::new("rate", &svc, &topics, &runbooks(5), &[]);
    fleet.start(4).await;
    let collector = Collector::start(&svc.brokers, &topics.outcomes);
    let run = unique("rate");
    let msgs: Vec<Msg> = (0..n).map(|i| crash(&format!("{run}-{i}"), "rl-svc")).collect();
    let sent = ids(&msgs);
    Producer::new(&svc.brokers).send_all(&topics.incidents, &msgs).await;

    let mut v = Vec::new();
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(90, 300)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;

    let executions = h.journal.len();
    if executions != 5 {
        v.push(format!(
            "{executions} executions in the journal, want exactly 5 (max_per_hour: 5)"
        ));
    }
    let d = decisions(&finals);
    let rate_blocked = finals
        .by_id
        .values()
        .filter(|o| o.decision == "blocked" && o.guardrail.as_deref() == Some("rate_limit"))
        .count();
    if rate_blocked + 5 != n {
        v.push(format!("{rate_blocked} blocked by rate_limit, want {}: {d:?}", n - 5));
    }
    let deciders: BTreeSet<&str> = finals.by_id.values().map(|o| o.worker.as_str()).collect();
    if deciders.len() < 2 {
        v.push(format!(
            "only {deciders:?} decided: the flood did not reach several replicas"
        ));
    }
    fig.add("workers", 4)
        .add("incidents", n)
        .add("executions", executions)
        .add("blocked_rate_limit", rate_blocked)
        .add("deciding_workers", deciders.len())
        .finish(&v);
}

/// `guardrails.max_concurrent_actions=2`, actions of 500 ms, 4 replicas on 8 partitions,
/// incidents spread over many services (no rate-limit pressure): never more than 2 actions in
/// flight. An action's in-flight interval is taken from the journal (written after the slot is
/// reserved, before acting) plus the fixed action delay; the slot is held from before the first
/// to after the second, so more than 2 overlapping journal intervals would be a real violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_never_exceed_the_limit_across_replicas() {
    let Some(svc) = services() else { return };
    let mut fig = Figures::new("max_concurrent_actions");
    let (limit, delay_ms) = (2usize, 500i64);
    let n = scale(64, 600);
    let over = Duration::from_secs(scale(8, 75));
    let topics = Topics::create(&svc.brokers, 8).await;
    let mut fleet = Fleet::new(
        "conc",
        &svc,
        &topics,
        &runbooks(10_000),
        &[
            ("REMEDIATOR_GUARDRAILS_MAX_CONCURRENT_ACTIONS", "2"),
            ("REMEDIATOR_SIMULATED_ACTION_DELAY", "500ms"),
        ],
    );
    fleet.start(4).await;
    let collector = Collector::start(&svc.brokers, &topics.outcomes);
    let run = unique("conc");
    let msgs: Vec<Msg> = (0..n)
        .map(|i| crash(&format!("{run}-{i}"), &format!("svc-{i}")))
        .collect();
    let sent = ids(&msgs);
    let producing = Producer::new(&svc.brokers).send_paced(&topics.incidents, msgs, over);

    let mut v = Vec::new();
    producing.await.expect("producer");
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(60, 240)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;

    let intervals: Vec<(i64, i64)> = h.journal.iter().map(|a| (a.at_ms, a.at_ms + delay_ms)).collect();
    let (peak, at) = max_overlap(&intervals);
    if peak > limit {
        v.push(format!("{peak} actions in flight at {at} ms, limit {limit}"));
    }
    if peak < limit {
        v.push(format!(
            "peak {peak} < limit {limit}: the scenario never reached the limit"
        ));
    }
    let blocked = finals
        .by_id
        .values()
        .filter(|o| o.guardrail.as_deref() == Some("blast_radius"))
        .count();
    if blocked == 0 {
        v.push("no incident was blocked by blast_radius: the limit was never contended".into());
    }
    let pids: BTreeSet<u32> = h.journal.iter().map(|a| a.pid).collect();
    let deciders: BTreeSet<&str> = finals.by_id.values().map(|o| o.worker.as_str()).collect();
    fig.add("workers", 4)
        .add("deciding_workers", deciders.len())
        .add("incidents", n)
        .add("executions", h.journal.len())
        .add("peak_in_flight", peak)
        .add("limit", limit)
        .add("blocked_blast_radius", blocked)
        .add("executing_workers", pids.len())
        .finish(&v);
}

/// Failing post-checks open the runbook's circuit after `failure_threshold` (3) failures; while
/// OPEN nothing executes, and after `recovery_timeout` (2 s) exactly one replica of four gets the
/// HALF_OPEN probe (500 ms actions, a continuous flood, so the others try meanwhile). A failed
/// probe re-opens it; then incidents of a healthy service arrive, whose probe succeeds and closes
/// the circuit, and executions flow again.
///
/// From the journal and the outcomes: at most `threshold + partitions - 1` executions were
/// reserved before the circuit opened (those in flight when it did); every later execution up to
/// the close is a probe, starting no earlier than `recovery_timeout` after the previous probe's
/// failure (its start + the action delay), so no two probes ever overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_admits_one_probe_across_replicas() {
    let Some(svc) = services() else { return };
    let mut fig = Figures::new("circuit_breaker");
    let (threshold, recovery_ms, delay_ms, partitions) = (3usize, 2000i64, 500i64, 4usize);
    let n_bad = scale(240, 1800);
    let bad_over = Duration::from_secs(scale(6, 45));
    let n_good = scale(60, 200);
    let topics = Topics::create(&svc.brokers, partitions as i32).await;
    let mut fleet = Fleet::new(
        "cb",
        &svc,
        &topics,
        &runbooks(10_000),
        &[
            ("REMEDIATOR_SIMULATED_FAIL_POST_CHECKS_FOR", "[cb-bad]"),
            ("REMEDIATOR_SIMULATED_ACTION_DELAY", "500ms"),
            ("REMEDIATOR_GUARDRAILS_FAILURE_THRESHOLD", "3"),
            ("REMEDIATOR_GUARDRAILS_RECOVERY_TIMEOUT", "2s"),
        ],
    );
    fleet.start(4).await;
    let collector = Collector::start(&svc.brokers, &topics.outcomes);
    let run = unique("cb");
    let bad: Vec<Msg> = (0..n_bad).map(|i| crash(&format!("{run}-bad-{i}"), "cb-bad")).collect();
    let good: Vec<Msg> = (0..n_good)
        .map(|i| crash(&format!("{run}-good-{i}"), "cb-good"))
        .collect();
    let mut sent = ids(&bad);
    sent.extend(ids(&good));
    let producer = Producer::new(&svc.brokers);
    producer
        .send_paced(&topics.incidents, bad, bad_over)
        .await
        .expect("producer");
    producer
        .send_paced(&topics.incidents, good, Duration::from_secs(4))
        .await
        .expect("producer");

    let mut v = Vec::new();
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(60, 180)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;

    let mut execs: Vec<_> = h.journal.clone();
    execs.sort_by_key(|a| a.at_ms);
    let outcome = |id: &str| finals.by_id.get(id);
    // The first opening: the failure whose outcome says so and finished first.
    let opener = finals
        .by_id
        .values()
        .filter(|o| o.reason.contains("circuit opened"))
        .min_by_key(|o| o.finished_ms)
        .cloned();
    let mut probes = 0;
    let mut closed_by = None;
    let mut after_close = 0;
    match &opener {
        None => v.push("the circuit never opened".into()),
        Some(op) => {
            let opener_id = op.incident_id.clone().unwrap_or_default();
            let opener_start = execs.iter().find(|a| a.incident_id == opener_id).map(|a| a.at_ms);
            // Reserved before the opening (or possibly so): decided no later than the opener's
            // outcome was finished.
            let (pre, post): (Vec<_>, Vec<_>) = execs
                .iter()
                .partition(|a| outcome(&a.incident_id).is_none_or(|o| o.decided_ms <= op.finished_ms));
            if pre.len() < threshold || pre.len() > threshold + partitions - 1 {
                v.push(format!(
                    "{} executions before the circuit opened, want {threshold}..={}",
                    pre.len(),
                    threshold + partitions - 1
                ));
            }
            // The opening happened after the opener's action (start + delay); the first probe
            // may start `recovery` after that, each next one `recovery` after the previous
            // probe's failure.
            let mut ready_at = opener_start.unwrap_or(op.finished_ms - delay_ms) + delay_ms + recovery_ms;
            for a in post {
                let Some(o) = outcome(&a.incident_id) else { continue };
                if closed_by.is_some() {
                    after_close += 1;
                    continue;
                }
                probes += 1;
                if a.at_ms + 5 < ready_at {
                    v.push(format!(
                        "execution of {} by pid {} at {} while the circuit was open or its probe in flight \
                         (next probe allowed at {ready_at})",
                        a.incident_id, a.pid, a.at_ms
                    ));
                }
                if o.success == Some(true) {
                    if !o.reason.contains("half-open probe succeeded: circuit closed") {
                        v.push(format!(
                            "probe {} succeeded without closing the circuit: {}",
                            a.incident_id, o.reason
                        ));
                    }
                    closed_by = Some(a.incident_id.clone());
                } else {
                    if !o.reason.contains("circuit opened") {
                        v.push(format!(
                            "failed probe {} did not re-open the circuit: {}",
                            a.incident_id, o.reason
                        ));
                    }
                    ready_at = a.at_ms + delay_ms + recovery_ms;
                }
            }
        }
    }
    if probes < 2 {
        v.push(format!("only {probes} probe(s): the half-open state was not exercised"));
    }
    match &closed_by {
        Some(id) if id.contains("-good-") => {}
        other => v.push(format!("the circuit was not closed by a healthy probe: {other:?}")),
    }
    if after_close == 0 {
        v.push("nothing executed after the circuit closed".into());
    }
    let in_flight_blocks: Vec<_> = finals
        .by_id
        .values()
        .filter(|o| o.reason.contains("probe in flight"))
        .collect();
    if in_flight_blocks.is_empty() {
        v.push("no replica was turned away while a probe was in flight: the race was not exercised".into());
    }
    let contenders: BTreeSet<&str> = in_flight_blocks.iter().map(|o| o.worker.as_str()).collect();
    let open_blocks = finals
        .by_id
        .values()
        .filter(|o| o.guardrail.as_deref() == Some("circuit_open"))
        .count();
    let d = decisions(&finals);
    fig.add("workers", 4)
        .add("incidents", n_bad + n_good)
        .add("executions", h.journal.len())
        .add("probes", probes)
        .add("executions_after_close", after_close)
        .add("blocked_circuit_open", open_blocks)
        .add("turned_away_during_probe", in_flight_blocks.len())
        .add("replicas_turned_away", contenders.len())
        .add("decisions", format!("{d:?}").replace(' ', ""))
        .finish(&v);
}

// ---------------------------------------------------------------------------------------------
// 2. Faults

/// Workers are `kill -9`ed in the middle of actions (the victim is a worker whose journal shows
/// an action started less than the action delay ago) and replaced, while a mixed flood goes on:
/// every incident still gets exactly one final outcome (re-publications of a recorded outcome
/// count once), no incident's action runs twice, and an interrupted action is recorded `aborted`
/// ("interrupted"), never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_mid_action_never_executes_twice() {
    let Some(svc) = services() else { return };
    let mut fig = Figures::new("kill_9");
    let kills = scale(3, 12);
    let n = scale(150, 1500);
    let over = Duration::from_secs(scale(10, 90));
    let delay_ms = 300i64;
    let topics = Topics::create(&svc.brokers, 6).await;
    let mut fleet = Fleet::new(
        "kill",
        &svc,
        &topics,
        &runbooks(10_000),
        &[("REMEDIATOR_SIMULATED_ACTION_DELAY", "300ms")],
    );
    fleet.start(3).await;
    let Flood {
        collector,
        work,
        sent,
        producing,
    } = flood(&svc.brokers, &topics, "kill", n, over);

    let mut rng = Rng::new();
    let seed = rng.seed();
    let mut victims = Vec::new();
    let spacing = over.as_millis() as u64 / (kills as u64 + 1);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.range(spacing / 2, spacing))).await;
        // Wait (at most 3 s) for a running worker in the middle of an action, and kill it.
        let deadline = now_ms() + 3000;
        let victim = loop {
            let running: BTreeMap<u32, usize> = fleet.running().into_iter().map(|i| (fleet.proc(i).pid, i)).collect();
            let now = now_ms();
            let acting = fleet
                .journal()
                .into_iter()
                .rev()
                .find(|a| now - a.at_ms < delay_ms - 50 && running.contains_key(&a.pid))
                .map(|a| running[&a.pid]);
            match acting {
                Some(i) => break i,
                None if now > deadline => {
                    let all: Vec<usize> = running.values().copied().collect();
                    break all[rng.range(0, all.len() as u64) as usize];
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let pid = fleet.proc(victim).pid;
        fleet.kill9(victim);
        victims.push(pid);
        fleet.restart_one();
    }

    let mut v = Vec::new();
    producing.await.expect("producer");
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(120, 300)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;

    // A kill landed mid-action when the victim started an action that never finished: its
    // incident was recorded as interrupted by the replica that took it over.
    let interrupted_ids: BTreeSet<&str> = finals
        .by_id
        .iter()
        .filter(|(_, o)| o.decision == "aborted" && o.reason.contains("interrupted"))
        .map(|(id, _)| id.as_str())
        .collect();
    let mid_action = victims
        .iter()
        .filter(|pid| {
            h.journal
                .iter()
                .any(|a| a.pid == **pid && interrupted_ids.contains(a.incident_id.as_str()))
        })
        .count();
    if mid_action == 0 {
        v.push("no kill landed in the middle of an action".into());
    }
    let interrupted = interrupted_ids.len();
    expect_kinds(&work, &finals, &mut v);
    fig.add("incidents", n)
        .add("kills", fleet.kills)
        .add("kills_mid_action", mid_action)
        .add("restarts", fleet.restarts)
        .add("interrupted", interrupted)
        .history(&h, &finals)
        .add("seed", seed)
        .finish(&v);
}

/// Each incident of a mixed workload ended as its kind allows: `Act` executed, blocked or
/// aborted-interrupted; unknown root cause and low confidence `manual`; invalid `rejected`.
fn expect_kinds(work: &[(Msg, Kind)], finals: &reliability_common::Finals, v: &mut Vec<String>) {
    for (m, kind) in work {
        let id = m.key.clone().unwrap_or_default();
        let Some(o) = finals.by_id.get(&id) else { continue };
        let ok = match kind {
            Kind::Act => {
                o.decision == "executed"
                    || o.decision == "blocked"
                    || (o.decision == "aborted" && o.reason.contains("interrupted"))
            }
            Kind::Unknown | Kind::LowConfidence => o.decision == "manual",
            Kind::Invalid => o.decision == "rejected",
        };
        if !ok {
            v.push(format!("incident {id} ({kind:?}) ended {}: {}", o.decision, o.reason));
        }
    }
}

/// Workers join and leave the group (SIGTERM: drain, commit, exit 0) while a mixed flood with
/// slow actions goes on, so partitions move with messages in progress: no incident is executed
/// twice and each gets exactly one final outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_under_load_never_executes_twice() {
    let Some(svc) = services() else { return };
    let mut fig = Figures::new("rebalance");
    let changes = scale(6, 24);
    let n = scale(150, 1500);
    let over = Duration::from_secs(scale(10, 90));
    let topics = Topics::create(&svc.brokers, 6).await;
    let mut fleet = Fleet::new(
        "rebal",
        &svc,
        &topics,
        &runbooks(10_000),
        &[("REMEDIATOR_SIMULATED_ACTION_DELAY", "200ms")],
    );
    fleet.start(2).await;
    let Flood {
        collector,
        work,
        sent,
        producing,
    } = flood(&svc.brokers, &topics, "rebal", n, over);

    let mut v = Vec::new();
    let (mut joins, mut leaves) = (0, 0);
    let spacing = over / (changes as u32 + 1);
    for c in 0..changes {
        tokio::time::sleep(spacing).await;
        let running = fleet.running();
        // Alternate: join while fewer than 4, leave (the oldest) while more than 1.
        if (c % 2 == 0 && running.len() < 4) || running.len() <= 1 {
            fleet.restart_one();
            joins += 1;
        } else {
            let status = fleet.terminate(running[0]).await;
            if !status.success() {
                v.push(format!("a leaving worker exited with {status}"));
            }
            leaves += 1;
        }
    }

    producing.await.expect("producer");
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(120, 300)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;
    expect_kinds(&work, &finals, &mut v);
    fig.add("incidents", n)
        .add("joins", joins)
        .add("leaves", leaves)
        .history(&h, &finals)
        .finish(&v);
}

/// A private Redis is first frozen (SIGSTOP: connections stay open, nothing answers — a hung
/// server or a partition), then stopped and started again empty (no persistence: its data is
/// lost). Incidents sent meanwhile are neither executed nor decided while it is unavailable
/// (zero journal lines, zero outcomes; `/readyz` reports the store, `/healthz` stays 200, the
/// process stays up); once it is back every one of them is decided exactly once, nothing lost.
/// After the data loss the workers notice (the epoch) and run conservatively (one execution per
/// runbook at a time), so some incidents are `blocked` then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_executes_nothing_and_loses_nothing() {
    let Some(svc) = services() else { return };
    let Some(mut redis) = OwnRedis::start() else { return };
    let mut fig = Figures::new("redis_outage");
    let batch = scale(30, 300);
    let outage = Duration::from_secs(scale(3, 15));
    let own = Services {
        brokers: svc.brokers.clone(),
        redis: redis.url(),
    };
    let topics = Topics::create(&own.brokers, 4).await;
    let mut fleet = Fleet::new(
        "redis",
        &own,
        &topics,
        &runbooks(10_000),
        &[("REMEDIATOR_SIMULATED_ACTION_DELAY", "100ms")],
    );
    fleet.start(2).await;
    let collector = Collector::start(&own.brokers, &topics.outcomes);
    let producer = Producer::new(&own.brokers);
    let run = unique("redis");
    let make = |phase: &str| -> Vec<Msg> {
        (0..batch)
            .map(|i| crash(&format!("{run}-{phase}-{i}"), &format!("svc-{phase}-{i}")))
            .collect()
    };
    let mut v = Vec::new();
    let mut sent = BTreeSet::new();

    // Before: all healthy.
    let before = make("before");
    sent.extend(ids(&before));
    producer.send_all(&topics.incidents, &before).await;
    v.extend(collector.wait_all(&ids(&before), Duration::from_secs(60)).await.err());

    let mut not_ready = 0;
    for (phase, freeze) in [("frozen", true), ("down", false)] {
        let t_down = now_ms();
        if freeze {
            redis.pause();
        } else {
            redis.down();
        }
        // With no message needing the store yet, `/readyz` still turns not ready (the worker's
        // store probe, every 5 s).
        let waited = std::time::Instant::now();
        loop {
            let mut ready = Vec::new();
            for i in fleet.running() {
                if http_get(&fleet.proc(i).url("/readyz")).await.0 == 200 {
                    ready.push(fleet.proc(i).name.clone());
                }
            }
            if ready.is_empty() {
                break;
            }
            if waited.elapsed() > Duration::from_secs(12) {
                v.push(format!(
                    "{ready:?} still ready 12 s after Redis was {phase}, with no message to decide"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let msgs = make(phase);
        let batch_ids = ids(&msgs);
        sent.extend(batch_ids.clone());
        producer.send_all(&topics.incidents, &msgs).await;
        tokio::time::sleep(outage).await;
        // Still unavailable: nothing of this batch decided or executed, workers alive.
        let decided = collector.decided().intersection(&batch_ids).count();
        if decided > 0 {
            v.push(format!("{decided} incidents decided while Redis was {phase}"));
        }
        let acted = fleet
            .journal()
            .iter()
            .filter(|a| a.at_ms >= t_down || batch_ids.contains(&a.incident_id))
            .count();
        if acted > 0 {
            v.push(format!("{acted} actions while Redis was {phase}"));
        }
        for i in fleet.running() {
            let (code, body) = http_get(&fleet.proc(i).url("/readyz")).await;
            if code != 200 {
                not_ready += 1;
            } else {
                v.push(format!("{} ready while Redis was {phase}: {body}", fleet.proc(i).name));
            }
        }
        v.extend(fleet.check_alive().await);
        let t_up = now_ms();
        if freeze {
            redis.resume();
        } else {
            redis.up();
        }
        if let Err(e) = collector.wait_all(&batch_ids, Duration::from_secs(60)).await {
            v.push(format!("after Redis was {phase}: {e}"));
        }
        let early = fleet
            .journal()
            .iter()
            .filter(|a| batch_ids.contains(&a.incident_id) && a.at_ms < t_up)
            .count();
        if early > 0 {
            v.push(format!("{early} actions of the {phase} batch before Redis returned"));
        }
    }
    // After the data loss the workers noticed (the epoch) and ran conservatively.
    let conservative: usize = fleet
        .running()
        .into_iter()
        .map(|i| fleet.proc(i).log().matches("running conservatively").count())
        .sum();
    if conservative == 0 {
        v.push("no worker noticed that Redis lost its data (no conservative decision logged)".into());
    }
    let store_errors = fleet.metric_sum("remediator_store_errors_total").await;
    if store_errors == 0.0 {
        v.push("no store errors counted: the outage was not seen".into());
    }
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent.clone(), &mut v).await;
    let d = decisions(&finals);
    for (id, o) in &finals.by_id {
        let ok = o.decision == "executed"
            || (id.contains("-down-") && o.decision == "blocked" && o.reason.contains("conservative"));
        if !ok {
            v.push(format!("incident {id} ended {}: {}", o.decision, o.reason));
        }
    }
    fig.add("incidents", sent.len())
        .add("outages", 2)
        .add("outage_secs_each", outage.as_secs())
        .add("executions", h.journal.len())
        .add("executions_while_down", 0)
        .add("readyz_not_ready", not_ready)
        .add("store_errors", store_errors)
        .add("conservative_decisions", conservative)
        .add("decisions", format!("{d:?}").replace(' ', ""))
        .finish(&v);
}

/// The documented degradation: when Redis loses its data (here: restarted without persistence
/// after every round), the reservations made before are forgotten and the shared rate limit
/// opens again — but each replica's in-process ceiling (`max_per_hour` per runbook and service
/// per hour) still holds, so across rounds the total never exceeds *replicas × max_per_hour* and
/// no replica exceeds `max_per_hour`. 4 replicas, `max_per_hour: 5`: at most 20, whatever the
/// number of wipes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_after_redis_data_loss_stays_within_the_per_replica_ceiling() {
    let Some(svc) = services() else { return };
    let Some(redis) = OwnRedis::start() else { return };
    let mut fig = Figures::new("rate_limit_data_loss");
    let (replicas, max_per_hour) = (4usize, 5usize);
    let rounds = scale(5, 8);
    let per_round = scale(40, 200);
    let own = Services {
        brokers: svc.brokers.clone(),
        redis: redis.url(),
    };
    let topics = Topics::create(&own.brokers, replicas as i32).await;
    let mut fleet = Fleet::new("ceiling", &own, &topics, &runbooks(max_per_hour as u32), &[]);
    fleet.start(replicas).await;
    let collector = Collector::start(&own.brokers, &topics.outcomes);
    let producer = Producer::new(&own.brokers);
    let run = unique("ceiling");
    let mut v = Vec::new();
    let mut sent = BTreeSet::new();
    let mut per_round_execs = Vec::new();
    for r in 0..rounds {
        let msgs: Vec<Msg> = (0..per_round)
            .map(|i| crash(&format!("{run}-{r}-{i}"), "ceiling-svc"))
            .collect();
        let batch = ids(&msgs);
        sent.extend(batch.clone());
        let before = fleet.journal().len();
        producer.send_all(&topics.incidents, &msgs).await;
        if let Err(e) = collector.wait_all(&batch, Duration::from_secs(60)).await {
            v.push(format!("round {r}: {e}"));
        }
        per_round_execs.push(fleet.journal().len() - before);
        if r + 1 < rounds {
            // Lose everything the store knew: counters, claims, circuits, the epoch.
            redis.down();
            redis.up();
        }
    }
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent.clone(), &mut v).await;

    let total = h.journal.len();
    if total > replicas * max_per_hour {
        v.push(format!(
            "{total} executions after {} wipes, bound {replicas} × {max_per_hour}",
            rounds - 1
        ));
    }
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for a in &h.journal {
        *per_pid.entry(a.pid).or_default() += 1;
    }
    for (pid, n) in &per_pid {
        if *n > max_per_hour {
            v.push(format!(
                "pid {pid} executed {n} times, per-replica ceiling {max_per_hour}"
            ));
        }
    }
    if per_round_execs.first() != Some(&max_per_hour) {
        v.push(format!(
            "first round executed {per_round_execs:?}, want exactly {max_per_hour}"
        ));
    }
    if total <= max_per_hour {
        v.push(format!(
            "only {total} executions: the data loss never reopened the limit"
        ));
    }
    let ceiling_blocks = finals
        .by_id
        .values()
        .filter(|o| o.reason.contains("per-replica ceiling"))
        .count();
    fig.add("workers", replicas)
        .add("incidents", sent.len())
        .add("redis_wipes", rounds - 1)
        .add("executions", total)
        .add("bound", replicas * max_per_hour)
        .add("executions_per_round", format!("{per_round_execs:?}").replace(' ', ""))
        .add("max_per_replica", per_pid.values().max().copied().unwrap_or(0))
        .add("blocked_by_replica_ceiling", ceiling_blocks)
        .finish(&v);
}

/// A private Kafka broker is restarted in the middle of a flood (reduced: a clean stop; heavy:
/// also a crash, `kill -9`): every incident sent is decided exactly once, nothing is lost, and
/// every offset is committed in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_restart_loses_nothing() {
    let Some(_) = services() else { return };
    let Some(kafka) = OwnKafka::start("restart") else {
        return;
    };
    let mut fig = Figures::new("kafka_restart");
    let restarts = scale(1, 3);
    let n = scale(120, 1200);
    let over = Duration::from_secs(scale(12, 60));
    let own = Services {
        brokers: kafka.brokers.clone(),
        redis: kafka.redis.clone(),
    };
    let topics = Topics::create(&own.brokers, 4).await;
    let mut fleet = Fleet::new(
        "kafka",
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
    } = flood(&own.brokers, &topics, "kafka", n, over);

    let mut down_ms = 0;
    for r in 0..restarts {
        tokio::time::sleep(over / (restarts as u32 + 2)).await;
        let t0 = now_ms();
        kafka.stop_broker(if r % 2 == 0 { "TERM" } else { "KILL" });
        tokio::time::sleep(Duration::from_secs(2)).await;
        kafka.start_broker();
        down_ms += now_ms() - t0;
    }

    let mut v = Vec::new();
    producing.await.expect("producer");
    v.extend(
        collector
            .wait_all(&sent, Duration::from_secs(scale(120, 300)))
            .await
            .err(),
    );
    v.extend(fleet.check_alive().await);
    v.extend(fleet.stop_all().await);
    let (h, finals) = full_history(&fleet, sent, &mut v).await;
    expect_kinds(&work, &finals, &mut v);
    fig.add("incidents", n)
        .add("broker_restarts", restarts)
        .add("broker_down_secs", format!("{:.1}", down_ms as f64 / 1000.0))
        .history(&h, &finals)
        .finish(&v);
}

// ---------------------------------------------------------------------------------------------
// 3. Bad input

/// One hostile input: its bytes (`None`: a null payload) and what it must end as.
struct Case {
    name: String,
    payload: Option<Vec<u8>>,
    decision: String,
    /// `rejected`: the field named (DLQ `error_field`); else a substring of the reason.
    detail: String,
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile");
    let expected = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut cases: Vec<Case> = expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "expected.tsv line {l:?}");
            Case {
                name: f[0].to_string(),
                payload: Some(std::fs::read(dir.join(f[0])).unwrap_or_else(|e| panic!("{}: {e}", f[0]))),
                decision: f[1].to_string(),
                detail: f[2].to_string(),
            }
        })
        .collect();
    // Generated rather than committed.
    let valid = |id: &str| {
        serde_json::json!({"id": id, "root_cause": "CrashLoopBackOff", "confidence": 0.95, "service": "api-server",
            "context": {"pod_name": "api-server-abc123", "namespace": "production"}})
    };
    let mut huge = valid("hostile-huge");
    huge["padding"] = "x".repeat(300 * 1024).into();
    let mut deep = valid("hostile-deep").to_string().into_bytes();
    deep.pop();
    deep.extend(b",\"extra\":");
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.push(b'}');
    let mut keys = valid("hostile-many-keys");
    for k in 0..5000 {
        keys[format!("k{k}")] = k.into();
    }
    keys["context"]["pod_name"] = "api-server-abc123 && reboot".into();
    cases.extend([
        Case {
            name: "generated: 300 KiB payload".into(),
            payload: Some(huge.to_string().into_bytes()),
            decision: "rejected".into(),
            detail: "$".into(),
        },
        Case {
            name: "generated: 100000 nested arrays".into(),
            payload: Some(deep),
            decision: "rejected".into(),
            detail: "$".into(),
        },
        Case {
            name: "generated: null payload (tombstone)".into(),
            payload: None,
            decision: "rejected".into(),
            detail: "$".into(),
        },
        Case {
            name: "generated: 5000 ignored fields and a hostile pod name".into(),
            payload: Some(keys.to_string().into_bytes()),
            decision: "aborted".into(),
            detail: "context.pod_name".into(),
        },
    ]);
    cases
}

/// The hostile corpus (`tests/data/hostile/`, ≥40 committed cases plus generated huge, deep and
/// null payloads) through one worker process: each case ends `rejected` (dead-lettered byte for
/// byte, the field named), `aborted` (a template value refused, the variable named), `manual`
/// (unknown root cause) or `expired`, as `expected.tsv` says; the executor is never called for
/// any of them (a valid control incident sent last is the journal's only line); offsets advance
/// past every message; the process stays up and healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_incidents_never_reach_the_executor() {
    let Some(svc) = services() else { return };
    let mut fig = Figures::new("hostile_incidents");
    let cases = corpus();
    let topics = Topics::create(&svc.brokers, 1).await;
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/seed-runbooks.yaml"))
        .expect("seed runbooks");
    let mut fleet = Fleet::new("hostile", &svc, &topics, &seed, &[]);
    fleet.start(1).await;
    let control = unique("control");
    let mut msgs: Vec<Msg> = cases
        .iter()
        .map(|c| Msg {
            key: Some(format!("case-{}", c.name)),
            payload: c.payload.clone(),
            headers: Vec::new(),
        })
        .collect();
    let control_payload = serde_json::json!({"id": control, "root_cause": "CrashLoopBackOff", "confidence": 0.95,
        "service": "control", "context": {"pod_name": "control-0", "namespace": "production"}});
    msgs.push(Msg::incident(&control, &control_payload.to_string()));
    let collector = Collector::start(&svc.brokers, &topics.outcomes);
    let offsets = Producer::new(&svc.brokers).send_all(&topics.incidents, &msgs).await;
    let total = msgs.len();

    let mut v = Vec::new();
    if let Err(e) = reliability_common::wait_for("every outcome", Duration::from_secs(60), || {
        collector.snapshot().len() >= total
    })
    .await
    {
        v.push(e);
    }
    v.extend(fleet.check_alive().await);
    let (ready, _) = http_get(&fleet.proc(0).url("/readyz")).await;
    if ready != 200 {
        v.push(format!("worker not ready after the corpus: {ready}"));
    }
    let (_, metrics) = http_get(&fleet.proc(0).url("/metrics")).await;
    v.extend(fleet.stop_all().await);

    // One partition, one worker: outcomes come in input order.
    let outs = reliability_common::read_all(&svc.brokers, &topics.outcomes).await;
    let dlq = reliability_common::read_all(&svc.brokers, &topics.dlq).await;
    if outs.len() != total {
        v.push(format!("{} outcome records for {total} messages", outs.len()));
    }
    let dlq_by_offset: BTreeMap<String, &kafka_common::Record> = dlq
        .iter()
        .map(|r| (r.header("source_offset").unwrap_or("").to_string(), r))
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for ((case, out), (_, offset)) in cases.iter().zip(&outs).zip(&offsets) {
        let o = out.json();
        schema::assert_valid_outcome(&o);
        let decision = o["decision"].as_str().unwrap_or("");
        let reason = o["reason"].as_str().unwrap_or("");
        *counts.entry(decision.to_string()).or_default() += 1;
        if decision != case.decision {
            v.push(format!("{}: {decision} ({reason}), want {}", case.name, case.decision));
            continue;
        }
        let dead = dlq_by_offset.get(&offset.to_string());
        if decision == "rejected" {
            let prefix = format!("invalid incident: {}: ", case.detail);
            if !reason.starts_with(&prefix) {
                v.push(format!(
                    "{}: reason {reason:?} does not name {:?}",
                    case.name, case.detail
                ));
            }
            match dead {
                None => v.push(format!("{}: rejected but not dead-lettered", case.name)),
                Some(r) => {
                    if r.payload != case.payload {
                        v.push(format!("{}: dead letter differs from the input bytes", case.name));
                    }
                    if r.header("error_field") != Some(case.detail.as_str())
                        || r.header("error").is_none_or(str::is_empty)
                        || r.header("source_topic") != Some(topics.incidents.as_str())
                    {
                        v.push(format!("{}: dead-letter headers {:?}", case.name, r.headers));
                    }
                }
            }
        } else {
            if !reason.contains(&case.detail) {
                v.push(format!(
                    "{}: reason {reason:?} does not mention {:?}",
                    case.name, case.detail
                ));
            }
            if dead.is_some() {
                v.push(format!("{}: {decision} but dead-lettered", case.name));
            }
        }
    }
    if let Some(last) = outs.last() {
        let o = last.json();
        if o["incident_id"] != control.as_str() || o["decision"] != "executed" {
            v.push(format!("the control incident was not executed: {o}"));
        }
    }
    let journal = fleet.journal();
    let calls: Vec<&str> = journal.iter().map(|a| a.incident_id.as_str()).collect();
    if calls != [control.as_str()] {
        v.push(format!("executor calls {calls:?}, want only the control {control}"));
    }
    let rejected = counts.get("rejected").copied().unwrap_or(0);
    if dlq.len() != rejected {
        v.push(format!("{} dead letters for {rejected} rejections", dlq.len()));
    }
    if metric(&metrics, "remediator_dlq_messages_total") != Some(rejected as f64) {
        v.push(format!(
            "remediator_dlq_messages_total {:?}, want {rejected}",
            metric(&metrics, "remediator_dlq_messages_total")
        ));
    }
    committed_all(&fleet, &mut v);
    fig.add("cases", cases.len())
        .add("rejected", rejected)
        .add("aborted", counts.get("aborted").copied().unwrap_or(0))
        .add("manual", counts.get("manual").copied().unwrap_or(0))
        .add("expired", counts.get("expired").copied().unwrap_or(0))
        .add("dead_letters", dlq.len())
        .add("executor_calls", journal.len().saturating_sub(1))
        .finish(&v);
}

/// Malformed runbook files (`tests/data/hostile/runbooks/`): `remediator validate` exits non-zero
/// and prints every problem as `FILE:LINE:COLUMN: runbook "ID": KEY: message`, exactly as many as
/// `expected.tsv` lists (each once); a YAML alias bomb is refused, not expanded; `remediator run`
/// refuses to start on one.
#[test]
fn malformed_runbooks_are_refused_with_precise_errors() {
    let mut fig = Figures::new("malformed_runbooks");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile/runbooks");
    let scratch = tempfile::tempdir().expect("scratch");
    let expected = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut v = Vec::new();
    let mut cases = 0;
    for line in expected.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (file, problems, want) = (f[0], f[1], &f[2..]);
        cases += 1;
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_remediator"))
            .args(["validate", "--runbooks", file])
            .current_dir(&dir)
            .output()
            .expect("remediator validate");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            v.push(format!("{file}: validate succeeded"));
        }
        if started.elapsed() > Duration::from_secs(5) {
            v.push(format!("{file}: validate took {:?}", started.elapsed()));
        }
        for w in want {
            if !err.lines().any(|l| l.starts_with(w)) {
                v.push(format!("{file}: missing {w:?} in:\n{err}"));
            }
        }
        let summary = format!("error: {file}: {problems} problem(s) found");
        if !err.contains(&summary) {
            v.push(format!("{file}: want {summary:?} in:\n{err}"));
        }
    }
    // The worker refuses to start on a malformed catalogue, naming the problem.
    let out = Command::new(env!("CARGO_BIN_EXE_remediator"))
        .arg("run")
        .current_dir(scratch.path())
        .env("REMEDIATOR_RUNBOOKS", dir.join("04-shell-in-action.yaml"))
        .env("REMEDIATOR_EXECUTOR", "simulated")
        .env("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{}", free_port(false)))
        .output()
        .expect("remediator run");
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !err.contains(r#"runbook "restart-pod": action: unsupported action"#) {
        v.push(format!("run started on a malformed catalogue: {:?}\n{err}", out.status));
    }
    fig.add("cases", cases + 1).finish(&v);
}
