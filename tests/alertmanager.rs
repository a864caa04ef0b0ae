//! The Alertmanager webhook intake (`POST /v1/alertmanager`) over real HTTP: firing alerts become
//! incidents on the real Kafka broker (200 only after the broker acknowledged them), resolved
//! ones never do, retries keep the incident id (so the worker answers them `duplicate`), and
//! bad requests are refused before anything is produced.
//!
//! The broker tests need `KAFKA_BOOTSTRAP` (skip/require semantics of `tests/common/kafka.rs`);
//! the refusal tests and the broker-down test need no service.

#[path = "common/kafka.rs"]
mod kafka_common;

use kafka_common::{bootstrap, engine, read, unique, Topics, Worker};
use remediator::alertmanager::{Intake, MAX_BODY_BYTES, PATH};
use remediator::clock::SystemClock;
use remediator::config::{AlertmanagerConfig, Config};
use remediator::executor::simulated::SimulatedExecutor;
use remediator::guardrails::memory::MemoryStore;
use remediator::health::Health;
use remediator::kafka::KafkaSettings;
use remediator::metrics::Metrics;
use remediator::shutdown::{self, Trigger};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The HTTP server of a worker (`remediator::http::serve`) with the intake enabled.
struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    _stop: Trigger,
}

impl Server {
    async fn start(kafka: &KafkaSettings, config: &AlertmanagerConfig, token: Option<&str>) -> Self {
        let metrics = Metrics::new();
        let intake = Intake::new(config, kafka, token.map(str::to_string), metrics.clone()).expect("intake");
        let (stop, observer) = shutdown::channel();
        let (addr, _task) = remediator::http::serve(
            "127.0.0.1:0",
            metrics.clone(),
            Arc::new(Health::new()),
            Some(Arc::new(intake)),
            None,
            observer,
        )
        .await
        .expect("serve");
        Self {
            addr,
            metrics,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    async fn post(&self, body: impl Into<reqwest::Body>, token: Option<&str>) -> (u16, String) {
        let mut req = reqwest::Client::new()
            .post(self.url())
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// `remediator_alertmanager_alerts_total{status}` as exported on `/metrics`.
    fn count(&self, status: &str) -> u64 {
        let line = format!("remediator_alertmanager_alerts_total{{status=\"{status}\"}} ");
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&line).map(|v| v.trim().parse().expect("counter value")))
            .unwrap_or(0)
    }
}

/// An alert as Alertmanager sends it (webhook payload v4).
fn alert(status: &str, fingerprint: &str, starts_at: &str, labels: Value) -> Value {
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": "pod is crash-looping"},
        "startsAt": starts_at,
        "endsAt": if status == "resolved" { starts_at } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
        "fingerprint": fingerprint,
    })
}

fn notification(alerts: Vec<Value>) -> String {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"CrashLoopBackOff\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "remediator",
        "groupLabels": {"alertname": "CrashLoopBackOff"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
    .to_string()
}

fn crash_labels(run: &str) -> Value {
    json!({
        "alertname": "CrashLoopBackOff",
        "service": "api-server",
        "namespace": "production",
        "pod": "api-server-abc123",
        "deployment": "api-server",
        "run": run,
    })
}

/// A broker nobody listens on: refusals must happen before any produce is attempted.
fn nowhere() -> KafkaSettings {
    KafkaSettings {
        brokers: "127.0.0.1:1".into(),
        ..KafkaSettings::default()
    }
}

#[tokio::test]
async fn requests_are_refused_before_anything_is_produced() {
    let server = Server::start(&nowhere(), &AlertmanagerConfig::default(), Some("s3cret")).await;
    let body = notification(vec![alert(
        "firing",
        "0123456789abcdef",
        "2026-01-01T00:00:00Z",
        crash_labels("x"),
    )]);
    let (code, _) = server.post(body.clone(), None).await;
    assert_eq!(code, 401, "no token");
    let (code, _) = server.post(body.clone(), Some("wrong")).await;
    assert_eq!(code, 401, "wrong token");
    let (code, text) = server.post("{not json", Some("s3cret")).await;
    assert_eq!(code, 400, "{text}");
    let (code, text) = server.post(r#"{"version":"3","alerts":[]}"#, Some("s3cret")).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("version"), "{text}");
    let big = format!(
        r#"{{"version":"4","alerts":[],"pad":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let (code, _) = server.post(big, Some("s3cret")).await;
    assert_eq!(code, 413, "bodies over 1 MiB");
    // Only resolved alerts: nothing to produce, so 200 even without a broker.
    let resolved = notification(vec![alert(
        "resolved",
        "0123456789abcdef",
        "2026-01-01T00:00:00Z",
        crash_labels("x"),
    )]);
    let (code, text) = server.post(resolved, Some("s3cret")).await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(server.count("resolved"), 1);
    assert_eq!(server.count("firing"), 0);
    let (code, _) = reqwest::get(server.url())
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("GET");
    assert_eq!(code, 405, "POST only");
}

/// An enabled intake without a token is never created: the error names the variable, the file
/// key and the explicit switch (the worker then refuses to start, see `tests/worker_process.rs`).
#[test]
fn an_intake_without_a_token_is_refused_unless_explicitly_allowed() {
    let e = Intake::new(&AlertmanagerConfig::default(), &nowhere(), None, Metrics::new())
        .err()
        .expect("refused without a token")
        .to_string();
    assert!(
        e.contains("REMEDIATOR_ALERTMANAGER_TOKEN") && e.contains("alertmanager.allow_unauthenticated"),
        "{e}"
    );
    let open = AlertmanagerConfig {
        allow_unauthenticated: true,
        ..AlertmanagerConfig::default()
    };
    assert!(Intake::new(&open, &nowhere(), None, Metrics::new()).is_ok());
}

#[tokio::test]
async fn an_unacknowledged_incident_fails_the_request_so_alertmanager_retries() {
    // Also the explicit opt-in at work: no token, yet requests without one are served.
    let config = AlertmanagerConfig {
        delivery_timeout: std::time::Duration::from_secs(1),
        allow_unauthenticated: true,
        ..AlertmanagerConfig::default()
    };
    let server = Server::start(&nowhere(), &config, None).await;
    let now = chrono::Utc::now().to_rfc3339();
    let body = notification(vec![
        alert("firing", "0123456789abcdef", &now, crash_labels("down")),
        // An alert without any service label is rejected on its own and does not hide the failure.
        alert("firing", "fedcba9876543210", &now, json!({"alertname": "Orphan"})),
    ]);
    let started = Instant::now();
    let (code, text) = server.post(body, None).await;
    assert_eq!(code, 503, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails within the delivery timeout"
    );
    let reply: Value = serde_json::from_str(&text).expect("JSON reply");
    assert_eq!(reply["failed"].as_array().map(Vec::len), Some(1), "{reply}");
    assert_eq!(reply["rejected"][0]["fingerprint"], "fedcba9876543210", "{reply}");
    assert_eq!(server.count("failed"), 1);
    assert_eq!(server.count("rejected"), 1);
}

/// A firing and a resolved alert in one notification: exactly one incident on the topic, valid,
/// keyed by its id; the retry of the same notification produces the same id again, and the worker
/// executes the first copy and answers the second `duplicate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn firing_alerts_reach_the_broker_and_retries_are_idempotent() {
    let Some(bs) = bootstrap() else { return };
    let topics = Topics::create(&bs, 1).await;
    let settings = topics.settings(&bs, &unique("group"));
    let server = Server::start(&settings, &AlertmanagerConfig::default(), Some("s3cret")).await;
    let run = unique("am");
    let starts_at = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    let body = notification(vec![
        alert("firing", "00000000feedbeef", &starts_at, crash_labels(&run)),
        alert(
            "resolved",
            "00000000deadbeef",
            &starts_at,
            json!({"alertname": "OOMKilled", "service": "worker", "run": run}),
        ),
    ]);

    let (code, text) = server.post(body.clone(), Some("s3cret")).await;
    assert_eq!(code, 200, "{text}");
    // 200 came after the broker's acknowledgement: the record is readable right away.
    let records = read(&bs, &topics.incidents, 2, Duration::from_secs(3)).await;
    assert_eq!(records.len(), 1, "exactly one incident (the resolved alert is skipped)");
    let payload = records[0].payload.as_deref().expect("payload");
    let incident = remediator::incident::parse(payload).expect("a valid incident");
    assert_eq!(records[0].key.as_deref(), Some(incident.id.as_str()), "keyed by id");
    assert!(incident.id.starts_with("am-00000000feedbeef-"), "{}", incident.id);
    assert_eq!(incident.root_cause, "CrashLoopBackOff");
    assert_eq!(incident.service(), "api-server");
    assert_eq!(incident.confidence, 0.9);
    assert!(incident.detected_at.is_some());
    let reply: Value = serde_json::from_str(&text).expect("JSON reply");
    assert_eq!(reply["produced"], json!([incident.id]), "{reply}");
    assert_eq!((server.count("firing"), server.count("resolved")), (1, 1));

    // Alertmanager retries (e.g. after a timeout on its side): same id again.
    let (code, text) = server.post(body, Some("s3cret")).await;
    assert_eq!(code, 200, "{text}");
    let records = read(&bs, &topics.incidents, 3, Duration::from_secs(3)).await;
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[1].payload, records[0].payload,
        "a retry produces the same incident"
    );

    // The worker acts once.
    let store = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
    let executor = Arc::new(SimulatedExecutor::new());
    let worker = Worker::start(&settings, engine(store, executor));
    let outcomes = read(&bs, &topics.outcomes, 2, Duration::from_secs(30)).await;
    worker.stop().await.expect("worker ran");
    let decisions: Vec<(String, String)> = outcomes
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["incident_id"].as_str().unwrap_or_default().to_string(),
                v["decision"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            (incident.id.clone(), "executed".to_string()),
            (incident.id.clone(), "duplicate".to_string())
        ]
    );
}

/// The intake's keys are real config keys, settable from the environment; its token is read by
/// the intake and is neither a config key nor an "unknown key" error.
#[test]
fn intake_config_comes_from_file_keys_and_environment() {
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let c = Config::load(
        None,
        &env(&[
            ("REMEDIATOR_ALERTMANAGER_ENABLED", "true"),
            ("REMEDIATOR_ALERTMANAGER_LABEL_MAPPING_SERVICE", "[app, job]"),
            ("REMEDIATOR_ALERTMANAGER_DEFAULT_CONFIDENCE", "0.8"),
            ("REMEDIATOR_ALERTMANAGER_TOKEN", "s3cret"),
        ]),
        &[],
    )
    .expect("valid");
    assert!(c.alertmanager.enabled);
    assert_eq!(c.alertmanager.label_mapping.service, vec!["app", "job"]);
    assert_eq!(c.alertmanager.label_mapping.root_cause, vec!["alertname"]);
    assert_eq!(c.alertmanager.default_confidence, 0.8);
    let keys: Vec<String> = Config::keys().into_iter().map(|(_, e)| e).collect();
    assert!(
        !keys.contains(&"REMEDIATOR_ALERTMANAGER_TOKEN".to_string()),
        "never a config key"
    );
    let e = Config::load(None, &env(&[("REMEDIATOR_ALERTMANAGER_ENABLD", "true")]), &[])
        .expect_err("typo")
        .to_string();
    assert!(e.contains("REMEDIATOR_ALERTMANAGER_ENABLD"), "{e}");
    let e = Config::load(None, &env(&[("REMEDIATOR_ALERTMANAGER_DEFAULT_CONFIDENCE", "2")]), &[])
        .expect_err("out of range")
        .to_string();
    assert!(e.contains("alertmanager.default_confidence"), "{e}");
}
