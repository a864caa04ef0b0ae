//! Progressive rollout of a runbook, end to end against a real `remediator run` process on real
//! Redis and Kafka (simulated executor): a runbook with a `rollout:` policy starts in shadow
//! (dry runs), moves to approval on evidence (verified dry runs), to a 50% canary on evidence
//! (approved, verified executions), where targets in the canary act automatically and the others
//! ask for approval; it stops there (`automatic_until: canary`) until `remediator promote` moves
//! it to auto, and a failed verification steps it back to the canary. Every outcome carries the
//! `rollout` object; `remediator runbooks` shows the stage and `/metrics` the stage gauge; the
//! promotion is a `rollout_changed` outcome of its own. A promotion without enough evidence is
//! refused. With `automatic_until: auto`, evidence alone takes a runbook from shadow to auto.

#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "common/live_worker.rs"]
mod live_worker;

use kafka_common::{bootstrap, redis_url, unique};
use live_worker::{ready, text, Env, Setup};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "s3cret-token";
const RUNBOOK: &str = "rollout-restart";
/// The service whose post-checks fail in the simulated executor.
const BAD: &str = "bad-svc";
/// How long one outcome may take to appear on the topic.
const WAIT: Duration = Duration::from_secs(20);

/// The catalogue: one LOW-risk (auto) runbook with a rollout policy starting at `start`.
fn catalogue(start: &str) -> String {
    format!(
        "runbooks:
  {RUNBOOK}:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.5
    max_per_hour: 100
    cooldown_minutes: 0
    action: kubectl rollout restart deployment {{deployment}} -n {{namespace}}
    post_checks: [deployment_rolled_out]
    rollout:
      start: {start}
      promote_after: 2
      window_hours: 24
      canary:
        shares: [50]
      automatic_until: canary
"
    )
}

/// Write the catalogue into `dir`, returning its path.
fn write_catalogue(dir: &tempfile::TempDir, start: &str) -> String {
    let path = dir.path().join("runbooks.yaml");
    std::fs::write(&path, catalogue(start)).expect("write runbooks");
    path.to_str().expect("utf-8 path").to_string()
}

/// A worker on fresh topics running `catalogue` (with many services allowed: the blast radius
/// must not be what decides) and `extra` variables; what a test drives it with.
struct Live {
    bus: Bus,
    url: String,
    env: Env,
    _worker: live_worker::Child,
    _dir: tempfile::TempDir,
}

async fn live(brokers: &str, redis: &str, catalogue: &str, extra: &[(&str, &str)]) -> Live {
    let Setup {
        topics, url, mut env, ..
    } = Setup::new(brokers, redis).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runbooks.yaml");
    std::fs::write(&path, catalogue).expect("write runbooks");
    set(&mut env, "REMEDIATOR_RUNBOOKS", path.to_str().expect("utf-8 path"));
    set(&mut env, "REMEDIATOR_GUARDRAILS_MAX_AFFECTED_SERVICES", "1000");
    for (k, v) in extra {
        set(&mut env, k, v);
    }
    let worker = env.spawn_run(&[]);
    ready(&url).await;
    Live {
        bus: Bus::new(brokers, &topics.incidents, &topics.outcomes),
        url,
        env,
        _worker: worker,
        _dir: dir,
    }
}

/// Set (or replace) a variable of `env`.
fn set(env: &mut Env, key: &str, value: &str) {
    env.vars.retain(|(k, _)| k != key);
    env.vars.push((key.to_string(), value.to_string()));
}

/// A CrashLoopBackOff incident for `deployment` (also its service) in `production`.
fn incident(id: &str, deployment: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"{deployment}","context":{{"deployment":"{deployment}","namespace":"production"}}}}"#
    )
}

/// Produces incidents and reads every outcome on the outcomes topic (from its beginning), so
/// each step finds its incident's outcomes by id.
struct Bus {
    producer: FutureProducer,
    incidents: String,
    outcomes: StreamConsumer,
    seen: Vec<Value>,
}

impl Bus {
    fn new(brokers: &str, incidents: &str, outcomes: &str) -> Self {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("rollout-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(outcomes, 0, Offset::Beginning).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        Self {
            producer,
            incidents: incidents.to_string(),
            outcomes: consumer,
            seen: Vec::new(),
        }
    }

    /// Send a fresh incident for `deployment`; its id.
    async fn send(&self, deployment: &str) -> String {
        let id = unique(&format!("RO-{deployment}"));
        let payload = incident(&id, deployment);
        self.producer
            .send(
                FutureRecord::to(&self.incidents).key(&id).payload(&payload),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .expect("incident produced");
        id
    }

    /// The first outcome of incident `id` that `pred` accepts (bounded by [`WAIT`]).
    async fn wait(&mut self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_any(&format!("{what} outcome for {id}"), |o| {
            o["incident_id"] == id && pred(o)
        })
        .await
    }

    /// The first outcome `pred` accepts, of any incident or none (bounded by [`WAIT`]).
    async fn wait_any(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(o) = self.seen.iter().find(|o| pred(o)) {
                return o.clone();
            }
            match tokio::time::timeout_at(deadline, self.outcomes.recv()).await {
                Ok(Ok(m)) => {
                    let o: Value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("outcome JSON");
                    self.seen.push(o);
                }
                Ok(Err(e)) => panic!("reading outcomes: {e}"),
                Err(_) => panic!("no {what} within {WAIT:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// The first outcome of incident `id`, whatever it decided.
    async fn first(&mut self, id: &str) -> Value {
        self.wait(id, "", |_| true).await
    }

    /// Send an incident for `deployment` and return its first outcome.
    async fn decide(&mut self, deployment: &str) -> (String, Value) {
        let id = self.send(deployment).await;
        let o = self.first(&id).await;
        (id, o)
    }
}

/// The outcome's `rollout` object (every outcome of a runbook with a policy has one).
fn rollout(o: &Value) -> &Value {
    assert_eq!(o["runbook_id"], RUNBOOK, "{o:#}");
    let r = &o["rollout"];
    assert!(r.is_object(), "no rollout object: {o:#}");
    r
}

/// The outcome decided in `stage` and did not change it; `needed` is the policy's 2 below auto.
fn assert_stage(o: &Value, stage: &str) {
    let r = rollout(o);
    assert_eq!(r["stage"], stage, "{o:#}");
    if stage != "auto" {
        assert_eq!(r["needed"], 2, "{o:#}");
    }
}

/// The outcome carries the change `from` -> `to` (with `share` for a canary), with a reason.
fn assert_change(o: &Value, from: &str, to: &str, share: Option<u64>) {
    let c = &rollout(o)["change"];
    assert!(c.is_object(), "no rollout.change: {o:#}");
    assert_eq!(c["from"], from, "{o:#}");
    assert_eq!(c["to"], to, "{o:#}");
    match share {
        Some(s) => assert_eq!(c["share"], s, "{o:#}"),
        None => assert!(c["share"].is_null(), "{o:#}"),
    }
    assert!(
        c["why"].as_str().is_some_and(|w| !w.trim().is_empty()),
        "a change says why: {o:#}"
    );
}

fn assert_no_change(o: &Value) {
    assert!(rollout(o)["change"].is_null(), "unexpected stage change: {o:#}");
}

/// Approve `approval` over the HTTP API (with the action hash the API lists); the reply.
async fn approve(url: &str, approval: &str) -> Value {
    let client = reqwest::Client::new();
    let list: Vec<Value> = client
        .get(format!("{url}/v1/approvals"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list approvals")
        .json()
        .await
        .expect("approvals JSON");
    let hash = list
        .iter()
        .find(|a| a["id"] == approval)
        .and_then(|a| a["action_hash"].as_str())
        .unwrap_or_else(|| panic!("{approval} is pending: {list:#?}"))
        .to_string();
    let reply = client
        .post(format!("{url}/v1/approvals/{approval}/approve"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "approver": "alice", "action_hash": hash }))
        .send()
        .await
        .expect("approve");
    let status = reply.status().as_u16();
    let body: Value = reply.json().await.expect("answer JSON");
    assert_eq!(status, 200, "{body:#}");
    body
}

/// An incident for `deployment` asks for approval in the approval stage; approved, it runs and
/// is verified. The executed outcome (from the topic).
async fn approved_run(bus: &mut Bus, url: &str, deployment: &str) -> Value {
    let (id, asked) = bus.decide(deployment).await;
    assert_eq!(asked["decision"], "approval_required", "{asked:#}");
    assert_stage(&asked, "approval");
    assert_no_change(&asked);
    let approval = asked["approval_id"].as_str().expect("approval id").to_string();
    approve(url, &approval).await;
    let done = bus.wait(&id, "executed", |o| o["decision"] == "executed").await;
    assert_eq!(done["approval_id"], approval.as_str(), "{done:#}");
    assert_eq!(done["approver"], "alice", "{done:#}");
    assert_eq!(done["success"], true, "{done:#}");
    assert_stage(&done, "approval");
    done
}

/// The value of `remediator_rollout_stage{runbook="rollout-restart"}` on the worker's /metrics.
async fn stage_gauge(url: &str) -> Option<f64> {
    let metrics = reqwest::get(format!("{url}/metrics")).await.ok()?.text().await.ok()?;
    metrics
        .lines()
        .filter(|l| l.starts_with("remediator_rollout_stage{"))
        .find(|l| l.contains(&format!(r#"runbook="{RUNBOOK}""#)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Wait (bounded) for the stage gauge to read `want`.
async fn assert_gauge(url: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = stage_gauge(url).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "remediator_rollout_stage{{runbook=\"{RUNBOOK}\"}} reads {got:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The STAGE column of the runbook's line in `remediator runbooks` (the columns are aligned
/// under their headers), and the whole line.
fn runbooks_stage(env: &Env) -> (String, String) {
    let out = env.run(&["runbooks"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = t
        .lines()
        .find(|l| l.starts_with("RUNBOOK"))
        .unwrap_or_else(|| panic!("no header: {t}"));
    let start = header.find("STAGE").unwrap_or_else(|| panic!("no STAGE column: {t}"));
    let end = header[start..].find("CIRCUIT").map_or(header.len(), |i| start + i);
    let line = t
        .lines()
        .find(|l| l.starts_with(&format!("{RUNBOOK} ")))
        .unwrap_or_else(|| panic!("no {RUNBOOK} line: {t}"))
        .to_string();
    let stage = line.get(start..end).unwrap_or_default().trim().to_string();
    (stage, line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_moves_shadow_approval_canary_auto_on_evidence_and_steps_back_on_failure() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let bad = format!("[{BAD}]");
    // The worker and its catalogue live as long as these bindings (`..` would drop them at once).
    let Live {
        mut bus,
        url,
        env,
        _worker,
        _dir,
    } = live(
        &brokers,
        &redis,
        &catalogue("shadow"),
        &[("REMEDIATOR_SIMULATED_FAIL_POST_CHECKS_FOR", &bad)],
    )
    .await;

    // Shadow: dry runs; the second verified one moves the runbook to approval.
    let (_, first) = bus.decide("shadow-a").await;
    assert_eq!(first["decision"], "dry_run", "{first:#}");
    assert_stage(&first, "shadow");
    assert_no_change(&first);
    let (_, second) = bus.decide("shadow-b").await;
    assert_eq!(second["decision"], "dry_run", "{second:#}");
    assert_stage(&second, "shadow");
    assert_change(&second, "shadow", "approval", None);

    // Approval: each incident asks; two approved, verified executions move it to the canary.
    let one = approved_run(&mut bus, &url, "approval-a").await;
    assert_no_change(&one);
    let two = approved_run(&mut bus, &url, "approval-b").await;
    assert_change(&two, "approval", "canary", Some(50));

    // Canary at 50%: targets in it act automatically, the others ask. Distinct targets until
    // both kinds are seen (at least 8, at most 16).
    let mut inside: Vec<String> = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    let mut canary_runs = 0;
    for i in 0..16 {
        if i >= 8 && !inside.is_empty() && !outside.is_empty() {
            break;
        }
        let deployment = format!("canary-{i:02}");
        let (_, o) = bus.decide(&deployment).await;
        assert_stage(&o, "canary");
        assert_no_change(&o);
        let r = rollout(&o);
        assert_eq!(r["share"], 50, "{o:#}");
        match r["in_canary"].as_bool() {
            Some(true) => {
                assert_eq!(o["decision"], "executed", "in the canary, acts: {o:#}");
                assert_eq!(o["success"], true, "{o:#}");
                canary_runs += 1;
                inside.push(deployment);
            }
            Some(false) => {
                assert_eq!(o["decision"], "approval_required", "outside the canary, asks: {o:#}");
                outside.push(deployment);
            }
            None => panic!("a canary outcome says whether its target is in the canary: {o:#}"),
        }
    }
    assert!(
        !inside.is_empty() && !outside.is_empty(),
        "a 50% canary over 16 targets: inside {inside:?}, outside {outside:?}"
    );
    // Membership is stable: the same targets again are still in the canary and still act. With
    // 2 verified runs or more the runbook is eligible for auto, but auto is beyond
    // `automatic_until: canary`, so it stays in the canary.
    let mut last = Value::Null;
    for k in 0..3usize.saturating_sub(canary_runs).max(1) {
        let deployment = inside[k % inside.len()].clone();
        let (_, o) = bus.decide(&deployment).await;
        assert_eq!(o["decision"], "executed", "stable membership: {o:#}");
        assert_eq!(o["success"], true, "{o:#}");
        assert_stage(&o, "canary");
        assert_no_change(&o);
        assert_eq!(rollout(&o)["in_canary"], true, "stable membership: {o:#}");
        canary_runs += 1;
        last = o;
    }
    assert!(canary_runs >= 3, "{canary_runs}");
    if let Some(evidence) = rollout(&last)["evidence"].as_u64() {
        assert!(
            evidence >= 2,
            "{canary_runs} verified canary runs counted as {evidence}: {last:#}"
        );
    }
    let (stage, line) = runbooks_stage(&env);
    assert_eq!(stage, "canary 50%", "{line}");
    assert_gauge(&url, 2.0).await;

    // A human promotes it past automatic_until; the very next decision is automatic.
    let promoted = env.run(&["promote", RUNBOOK]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    // The promotion is an outcome of its own on the audit topic, naming who and why.
    let audit = bus
        .wait_any("rollout_changed outcome", |o| o["decision"] == "rollout_changed")
        .await;
    assert_eq!(audit["incident_id"], Value::Null, "{audit:#}");
    assert_eq!(audit["approver"], "tester", "{audit:#}");
    assert_change(&audit, "canary", "auto", None);
    assert!(
        audit["reason"]
            .as_str()
            .is_some_and(|r| r.contains("promoted by tester after 2 verified successes")),
        "{audit:#}"
    );
    assert!(
        text(&promoted).contains("auto"),
        "prints the change: {}",
        text(&promoted)
    );
    let (stage, line) = runbooks_stage(&env);
    assert_eq!(stage, "auto", "promoted: {line}");
    let (_, auto) = bus.decide(&outside[0]).await;
    assert_eq!(
        auto["decision"], "executed",
        "auto acts on a target outside the canary: {auto:#}"
    );
    assert_eq!(auto["success"], true, "{auto:#}");
    assert_stage(&auto, "auto");
    assert_no_change(&auto);
    assert_gauge(&url, 3.0).await;

    // A failed verification steps it back to the canary at its first share.
    let (_, failed) = bus.decide(BAD).await;
    assert_eq!(failed["decision"], "executed", "{failed:#}");
    assert_eq!(failed["success"], false, "{failed:#}");
    assert_stage(&failed, "auto");
    assert_change(&failed, "auto", "canary", Some(50));
    assert_gauge(&url, 2.0).await;
    let target = outside.last().expect("a target outside the canary").clone();
    let (_, asked) = bus.decide(&target).await;
    assert_eq!(
        asked["decision"], "approval_required",
        "back in the canary, outside it asks: {asked:#}"
    );
    assert_stage(&asked, "canary");
    assert_eq!(rollout(&asked)["in_canary"], false, "{asked:#}");
    let (stage, line) = runbooks_stage(&env);
    assert_eq!(stage, "canary 50%", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_without_enough_evidence_is_refused() {
    // Only the store is used (no worker): the stage of a runbook nothing has run yet is its
    // policy's `start`, read by the CLI from Redis.
    let (Some(_brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let env = Env {
        vars: [
            ("REMEDIATOR_EXECUTOR", "simulated".to_string()),
            ("REMEDIATOR_REDIS_URL", redis),
            ("REMEDIATOR_REDIS_KEY_PREFIX", unique("test")),
            ("REMEDIATOR_RUNBOOKS", write_catalogue(&dir, "approval")),
            ("REMEDIATOR_LOG_FORMAT", "text".to_string()),
            ("USER", "tester".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    let (stage, line) = runbooks_stage(&env);
    assert_eq!(stage, "approval", "{line}");

    let refused = env.run(&["promote", RUNBOOK]);
    let t = text(&refused);
    assert!(!refused.status.success(), "promoted on no evidence: {t}");
    assert!(
        t.contains('0') && t.contains('2'),
        "names the evidence it has (0) and needs (2): {t}"
    );

    // Nothing changed.
    let (stage, line) = runbooks_stage(&env);
    assert_eq!(stage, "approval", "unchanged: {line}");
}

/// With `automatic_until: auto`, evidence alone takes a runbook all the way: shadow → approval
/// (two dry runs) → canary (two approved, verified runs) → auto (two verified runs in the
/// canary), with no human promotion; then a target outside the canary runs on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_alone_reaches_auto_when_the_policy_allows() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let yaml = catalogue("shadow").replace("automatic_until: canary", "automatic_until: auto");
    let Live {
        mut bus,
        url,
        _worker,
        _dir,
        ..
    } = live(&brokers, &redis, &yaml, &[]).await;

    bus.decide("ev-shadow-a").await;
    let (_, shadow) = bus.decide("ev-shadow-b").await;
    assert_eq!(shadow["decision"], "dry_run", "{shadow:#}");
    assert_change(&shadow, "shadow", "approval", None);
    approved_run(&mut bus, &url, "ev-approval-a").await;
    let approved = approved_run(&mut bus, &url, "ev-approval-b").await;
    assert_change(&approved, "approval", "canary", Some(50));
    // Targets until two are in the canary: their verified runs are the evidence for auto.
    let mut executed = 0;
    for i in 0..24 {
        let (_, o) = bus.decide(&format!("ev-canary-{i:02}")).await;
        if o["decision"] == "executed" {
            assert_eq!(o["success"], true, "{o:#}");
            executed += 1;
            if executed == 2 {
                assert_change(&o, "canary", "auto", None);
                break;
            }
            assert_no_change(&o);
        } else {
            assert_eq!(o["decision"], "approval_required", "{o:#}");
        }
    }
    assert_eq!(executed, 2, "two targets of 24 in a 50% canary");
    let (_, auto) = bus.decide("ev-after").await;
    assert_eq!(
        (&auto["decision"], &auto["success"]),
        (&"executed".into(), &true.into()),
        "{auto:#}"
    );
    assert_stage(&auto, "auto");
    assert!(
        !bus.seen.iter().any(|o| o["decision"] == "rollout_changed"),
        "no human promoted it"
    );
}
