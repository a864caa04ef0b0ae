//! `remediator demo`: the whole pipeline in one process, on embedded defaults.
//!
//! librdkafka's in-process mock cluster stands in for the broker, an in-memory store for Redis and
//! a simulated cluster for Kubernetes; everything else (the Kafka loop, the engine, the guardrails,
//! the outcome events) is the production code path. It feeds the four sample incidents of
//! `tests/data/seed-incidents.jsonl` and a few more that show cooldown, the circuit breaker,
//! rejection and idempotency, and prints each outcome as it is read back from the outcomes topic.

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, EventIds, Settings};
use crate::executor::simulated::{Faults, SimulatedExecutor};
use crate::guardrails::memory::MemoryStore;
use crate::health::Health;
use crate::kafka::{self, KafkaSettings};
use crate::metrics::Metrics;
use crate::outcome::{Decision, Outcome};
use crate::runbook::Catalogue;
use crate::shutdown;
use anyhow::{anyhow, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// The embedded runbook catalogue (`config/runbooks.yaml`).
pub const RUNBOOKS: &str = include_str!("../config/runbooks.yaml");

/// The demo's incidents: a title for the reader, and the event.
pub fn incidents() -> Vec<(&'static str, String)> {
    let seed = [
        r#"{"id":"INC001","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"api-server","context":{"pod_name":"api-server-abc123","namespace":"production"}}"#,
        r#"{"id":"INC002","root_cause":"high_cpu","confidence":0.75,"service":"worker","context":{"deployment":"worker","namespace":"production","new_replicas":5,"old_replicas":3}}"#,
        r#"{"id":"INC003","root_cause":"error_rate_spike_after_deploy","confidence":0.92,"service":"checkout","context":{"deployment":"checkout","namespace":"production"}}"#,
        r#"{"id":"INC004","root_cause":"unknown_issue","confidence":0.60,"service":"auth","context":{}}"#,
    ];
    let mut v: Vec<(&'static str, String)> = seed.iter().map(|s| ("seed sample incident", s.to_string())).collect();
    v.push((
        "api-server crash-loops again (another pod), minutes before its cooldown ends",
        r#"{"id":"INC005","root_cause":"CrashLoopBackOff","confidence":0.97,"service":"api-server","context":{"pod_name":"api-server-def456","namespace":"production"}}"#.into(),
    ));
    for (i, svc) in ["payments", "search", "cart"].iter().enumerate() {
        v.push((
            "restart whose pod never becomes Ready (simulated fault)",
            format!(
                r#"{{"id":"INC00{}","root_cause":"OOMKilled","confidence":0.9,"service":"{svc}","context":{{"pod_name":"{svc}-7f9c","namespace":"production"}}}}"#,
                6 + i
            ),
        ));
    }
    v.push((
        "another crash loop, after three failed restarts",
        r#"{"id":"INC009","root_cause":"CrashLoopBackOff","confidence":0.9,"service":"profile","context":{"pod_name":"profile-5d2a","namespace":"production"}}"#.into(),
    ));
    v.push((
        "malformed event from a buggy producer",
        r#"{"id":"INC010","root_cause":"high_cpu","confidence":"very"}"#.into(),
    ));
    v.push(("INC001 delivered a second time", seed[0].to_string()));
    v
}

/// Run the demo, writing its report to `out`.
pub async fn run(out: &mut dyn Write) -> Result<()> {
    let settings = KafkaSettings {
        group_id: "remediator-demo".into(),
        incidents_topic: "incidents".into(),
        outcomes_topic: "remediation-outcomes".into(),
        dlq_topic: "incidents-dlq".into(),
        // The demo waits for each outcome before sending the next incident: poll briskly.
        properties: [("fetch.wait.max.ms", "10")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..KafkaSettings::default()
    };
    // One partition per topic keeps the story in order; production uses several.
    let mock = MockCluster::new(1).context("starting the embedded mock Kafka cluster")?;
    for t in [&settings.incidents_topic, &settings.outcomes_topic, &settings.dlq_topic] {
        mock.create_topic(t, 1, 1)
            .with_context(|| format!("creating mock topic {t}"))?;
    }
    let settings = KafkaSettings {
        brokers: mock.bootstrap_servers(),
        ..settings
    };

    let catalogue = Catalogue::from_yaml(RUNBOOKS, "config/runbooks.yaml (embedded)").map_err(|e| anyhow!("{e}"))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let faults = Faults {
        fail_post_checks_for: ["payments", "search", "cart"].iter().map(|s| s.to_string()).collect(),
        ..Faults::default()
    };
    let executor = Arc::new(SimulatedExecutor::with_faults(faults));
    let engine = Arc::new(Engine::new(
        Arc::new(catalogue),
        Arc::new(MemoryStore::new(Arc::clone(&clock))),
        executor.clone(),
        clock,
        Settings {
            worker: "demo".into(),
            ..Settings::default()
        },
        Metrics::new(),
        EventIds::Random,
    ));

    writeln!(
        out,
        "remediator demo: embedded Kafka (librdkafka mock cluster), in-memory guardrails, simulated cluster"
    )?;
    writeln!(
        out,
        "runbooks: {}",
        engine
            .catalogue()
            .runbooks()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "guardrails: max 3 concurrent actions, 10 services per 15m, circuit opens after 3 failures\n"
    )?;

    let (trigger, shutdown) = shutdown::channel();
    let worker = {
        let (settings, engine) = (settings.clone(), Arc::clone(&engine));
        tokio::spawn(async move { kafka::run(&settings, engine, Arc::new(Health::new()), shutdown).await })
    };

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .create()
        .context("creating the demo producer")?;
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", "remediator-demo-reader")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("creating the demo outcome reader")?;
    reader
        .subscribe(&[&settings.outcomes_topic])
        .context("subscribing to outcomes")?;

    let incidents = incidents();
    for (n, (title, json)) in incidents.iter().enumerate() {
        let key = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
            .unwrap_or_default();
        producer
            .send(
                FutureRecord::to(&settings.incidents_topic).key(&key).payload(json),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow!("producing incident: {e}"))?;
        let outcome = tokio::time::timeout(Duration::from_secs(30), next_outcome(&reader))
            .await
            .map_err(|_| anyhow!("no outcome for incident #{} within 30 s", n + 1))??;
        writeln!(out, "{}. {title}", n + 1)?;
        writeln!(out, "{}", render(&outcome))?;
    }
    trigger.fire();
    let stats = worker.await.context("worker task")??;
    let journal = executor.journal();
    writeln!(
        out,
        "{} incidents in, {} outcomes out, {} sent to the dead-letter topic; the simulated cluster ran {} actions:",
        incidents.len(),
        stats.handled,
        stats.dead_lettered,
        journal.len()
    )?;
    for j in journal {
        writeln!(out, "   {:<7} {}", j.incident_id, j.display)?;
    }
    Ok(())
}

async fn next_outcome(reader: &StreamConsumer) -> Result<Outcome> {
    let msg = reader.recv().await.context("reading outcomes")?;
    let payload = msg.payload().ok_or_else(|| anyhow!("empty outcome message"))?;
    serde_json::from_slice(payload).context("parsing an outcome")
}

/// One outcome as a few readable lines.
pub fn render(o: &Outcome) -> String {
    let verdict = match (o.decision, o.success) {
        (Decision::Executed, Some(true)) => "EXECUTED, verified".to_string(),
        (Decision::Executed, Some(false)) if o.rolled_back => "EXECUTED, FAILED verification, rolled back".to_string(),
        (Decision::Executed, Some(false)) => "EXECUTED, FAILED verification".to_string(),
        (Decision::Blocked, _) => format!("BLOCKED by {}", o.guardrail.map(|g| g.as_str()).unwrap_or("guardrail")),
        (d, _) => d.as_str().to_uppercase(),
    };
    let mut s = format!(
        "   {:<7} {} on {} (confidence {})\n   -> {verdict}{}\n      {}",
        o.incident_id.as_deref().unwrap_or("-"),
        o.root_cause.as_deref().unwrap_or("?"),
        o.service.as_deref().unwrap_or("?"),
        o.confidence.map(|c| format!("{c:.2}")).unwrap_or_else(|| "?".into()),
        o.runbook_id
            .as_ref()
            .map(|r| format!("  [runbook {r}]"))
            .unwrap_or_default(),
        o.reason,
    );
    if let Some(a) = &o.action {
        s.push_str(&format!("\n      action: {}", a.display));
    }
    if !o.checks.is_empty() {
        let checks: Vec<String> = o
            .checks
            .iter()
            .map(|c| format!("{} {}", c.name, if c.passed { "ok" } else { "FAILED" }))
            .collect();
        s.push_str(&format!("\n      checks: {}", checks.join(", ")));
    }
    s.push('\n');
    s
}
