//! The console's routes in process, over a memory store: the page and its headers, the token on
//! every data route, what the runbooks and outcomes routes answer, and the audit topic's tail
//! against librdkafka's embedded mock broker. The page driven in a real browser against real
//! Redis and Kafka is `tests/console.rs`.

use super::*;
use crate::clock::SystemClock;
use crate::engine::{EventIds, Settings};
use crate::executor::simulated::SimulatedExecutor;
use crate::guardrails::memory::MemoryStore;
use crate::guardrails::Store;
use crate::metrics::Metrics;
use crate::outcome::{Decision, Outcome};
use crate::runbook::Catalogue;
use std::time::Duration;

const TOKEN: &str = "console-token";

fn engine() -> (Arc<Engine>, Arc<dyn Store>) {
    engine_of(include_str!("../../config/runbooks.yaml"))
}

fn engine_of(runbooks: &str) -> (Arc<Engine>, Arc<dyn Store>) {
    let catalogue = Catalogue::from_yaml(runbooks, "runbooks.yaml").expect("the catalogue loads");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
    let engine = Engine::new(
        Arc::new(catalogue),
        Arc::clone(&store),
        Arc::new(SimulatedExecutor::new()),
        Arc::new(SystemClock),
        Settings::default(),
        Metrics::new(),
        EventIds::Random,
    );
    (Arc::new(engine), store)
}

/// The console's routes on a free local port; its base URL.
async fn serve(recent: Recent) -> (String, Arc<dyn Store>) {
    serve_engine(engine(), recent).await
}

async fn serve_engine((engine, store): (Arc<Engine>, Arc<dyn Store>), recent: Recent) -> (String, Arc<dyn Store>) {
    let console = Arc::new(Console::new(engine, Gate::token(TOKEN.into()), recent, None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, console.routes()).await });
    (url, store)
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("request")
}

fn outcome(incident: &str, runbook: &str, service: &str, decision: Decision, finished_s: i64) -> Outcome {
    let at = chrono::DateTime::from_timestamp(1_800_000_000 + finished_s, 0).expect("instant");
    Outcome {
        schema_version: crate::outcome::SCHEMA_VERSION,
        event_id: format!("ev-{incident}"),
        incident_id: Some(incident.into()),
        service: Some(service.into()),
        root_cause: Some("CrashLoopBackOff".into()),
        confidence: Some(0.9),
        runbook_id: Some(runbook.into()),
        decision,
        success: (decision == Decision::Executed).then_some(true),
        rolled_back: false,
        reason: "test".into(),
        guardrail: None,
        action: None,
        checks: vec![],
        approval_id: None,
        approver: None,
        trust: None,
        rollout: None,
        mode: None,
        worker: "w1".into(),
        decided_at: at,
        finished_at: at,
        duration_ms: 0,
    }
}

#[tokio::test]
async fn the_page_is_served_without_a_token_and_forbids_framing_and_foreign_code() {
    let (url, _) = serve(Recent::new(10)).await;
    for (path, kind, marker) in [
        ("/console", "text/html", "<title>remediator"),
        ("/console/", "text/html", "<title>remediator"),
        ("/console/app.js", "text/javascript", "\"use strict\""),
        ("/console/app.css", "text/css", ":root"),
    ] {
        let r = get(&format!("{url}{path}"), None).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-store", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        let csp = header("content-security-policy");
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert!(r.text().await.expect("body").contains(marker), "{path}");
    }
}

/// The page writes what it shows as text: an incident's fields and the audit topic are not
/// trusted, so nothing reaches the DOM as markup, and nothing is evaluated.
#[test]
fn the_script_never_writes_markup_nor_evaluates_text() {
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setTimeout(\"",
        "setInterval(\"",
    ] {
        assert!(!APP_JS.contains(sink), "app.js uses {sink}");
    }
    // Nothing inline that the CSP would block (and that would tempt a relaxed policy).
    assert!(!INDEX_HTML.contains("style="), "inline style in index.html");
    assert!(!INDEX_HTML.contains("onclick"), "inline handler in index.html");
    assert_eq!(INDEX_HTML.matches("<script").count(), 1);
    assert!(INDEX_HTML.contains("<script src=\"/console/app.js\" defer></script>"));
    assert!(
        !INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"),
        "a foreign resource"
    );
}

#[tokio::test]
async fn every_data_route_needs_the_token() {
    let (url, _) = serve(Recent::new(10)).await;
    for path in ["/v1/console/runbooks", "/v1/console/outcomes"] {
        for token in [
            None,
            Some("wrong"),
            Some(""),
            Some("console-tokenx"),
            Some("Console-token"),
            Some("console-toke"),
        ] {
            let r = get(&format!("{url}{path}"), token).await;
            assert_eq!(r.status(), 401, "{path} with {token:?}");
            assert_eq!(r.headers()["x-frame-options"], "DENY");
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(body["reason"], "missing or wrong bearer token");
        }
        let r = reqwest::Client::new()
            .get(format!("{url}{path}"))
            .header("Authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{path}: another scheme");
        assert_eq!(get(&format!("{url}{path}"), Some(TOKEN)).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn runbooks_show_mode_demotion_circuit_trust_and_checks() {
    let (url, store) = serve(Recent::new(10)).await;
    store
        .demote("restart-pod", "success rate 40% below floor 80%")
        .await
        .expect("demote");
    for ok in [true, true, false] {
        store.record_trust("restart-pod", ok, 20).await.expect("trust");
    }
    let r = get(&format!("{url}/v1/console/runbooks"), Some(TOKEN)).await;
    assert_eq!(r.status(), 200);
    let list: Vec<serde_json::Value> = r.json().await.expect("json");
    let ids: Vec<&str> = list.iter().map(|r| r["id"].as_str().unwrap_or("")).collect();
    assert_eq!(
        ids,
        [
            "restart-pod",
            "scale-up",
            "clear-disk-cache",
            "restart-service",
            "failover-database",
            "rollback-deployment",
            "scale-to-zero"
        ]
    );
    let restart = &list[0];
    assert_eq!(restart["mode"], "auto");
    assert_eq!(restart["effective_mode"], "approval");
    assert_eq!(restart["demoted"], "success rate 40% below floor 80%");
    assert_eq!(restart["circuit"], "CLOSED");
    assert_eq!(restart["executions"], 3);
    let rate = restart["success_rate"].as_f64().expect("a rate");
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{rate}");
    assert_eq!(restart["risk"], "LOW");
    assert!(restart["post_checks"].as_array().is_some_and(|c| !c.is_empty()));
    let rollback = list
        .iter()
        .find(|r| r["id"] == "rollback-deployment")
        .expect("rollback-deployment");
    assert_eq!(rollback["mode"], "approval");
    assert_eq!(rollback["effective_mode"], "approval");
    assert_eq!(rollback["demoted"], serde_json::Value::Null);
    assert_eq!(rollback["success_rate"], serde_json::Value::Null, "no runs yet");
    assert_eq!(rollback["executions"], 0);
}

#[tokio::test]
async fn outcomes_are_newest_first_filtered_and_forged_messages_left_out() {
    let recent = Recent::new(100);
    let push = |o: &Outcome| recent.push(o.to_json().as_bytes());
    push(&outcome("i1", "restart-pod", "checkout", Decision::Executed, 1));
    push(&outcome("i2", "scale-up", "checkout", Decision::Blocked, 2));
    recent.push(b"not json at all");
    recent.push(br#"{"decision":"executed","reason":"<script>alert(1)</script>"}"#);
    push(&outcome("i3", "restart-pod", "payments", Decision::ApprovalRequired, 3));
    // Arrived last but finished first: newest means finished last.
    push(&outcome("i0", "restart-pod", "payments", Decision::Executed, 0));
    let (url, _) = serve(recent).await;
    let ids = |query: &'static str| {
        let url = url.clone();
        async move {
            let r = get(&format!("{url}/v1/console/outcomes{query}"), Some(TOKEN)).await;
            assert_eq!(r.status(), 200, "{query}");
            let list: Vec<Outcome> = r.json().await.expect("outcomes");
            list.into_iter()
                .map(|o| o.incident_id.unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("").await, ["i3", "i2", "i1", "i0"]);
    assert_eq!(ids("?runbook=restart-pod").await, ["i3", "i1", "i0"]);
    assert_eq!(ids("?service=payments").await, ["i3", "i0"]);
    assert_eq!(ids("?decision=executed").await, ["i1", "i0"]);
    assert_eq!(ids("?decision=executed&service=checkout").await, ["i1"]);
    assert_eq!(
        ids("?runbook=&service=&decision=").await,
        ["i3", "i2", "i1", "i0"],
        "empty filters match all"
    );
    assert_eq!(ids("?limit=2").await, ["i3", "i2"]);
    assert_eq!(ids("?runbook=nope").await, Vec::<String>::new());
    for bad in ["?limit=0", "?limit=501", "?limit=-1", "?limit=x", "?colour=red"] {
        let r = get(&format!("{url}/v1/console/outcomes{bad}"), Some(TOKEN)).await;
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()), "{bad}: {body}");
    }
    let r = get(&format!("{url}/v1/console/outcomes?limit=0"), Some(TOKEN)).await;
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["reason"], "limit: must be between 1 and 500");
}

#[test]
fn recent_keeps_only_the_newest_it_has_room_for() {
    let recent = Recent::new(3);
    for i in 0..5 {
        recent.push(
            outcome(&format!("i{i}"), "r", "s", Decision::Executed, i)
                .to_json()
                .as_bytes(),
        );
    }
    let ids: Vec<String> = recent
        .newest(&OutcomeFilter::default())
        .into_iter()
        .filter_map(|o| o.incident_id)
        .collect();
    assert_eq!(ids, ["i4", "i3", "i2"]);
    let none = Recent::new(0);
    none.push(outcome("i", "r", "s", Decision::Executed, 0).to_json().as_bytes());
    assert!(none.newest(&OutcomeFilter::default()).is_empty());
    assert_eq!(none.capacity(), 0);
}

/// The tail starts a little before the end of every partition and keeps what arrives after.
#[tokio::test]
async fn the_tail_reads_the_end_of_every_partition_then_what_arrives() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let topic = "audit";
    broker.create_topic(topic, 2, 1).expect("topic");
    let settings = crate::kafka::KafkaSettings {
        brokers: broker.bootstrap_servers(),
        ..crate::kafka::KafkaSettings::default()
    };
    let producer: FutureProducer = crate::kafka::producer_config(&settings).create().expect("producer");
    let send = |i: i64, partition: i32| {
        let o = outcome(&format!("i{i}"), "r", "s", Decision::Executed, i).to_json();
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload(&o).partition(partition),
                    Duration::from_secs(5),
                )
                .await
                .expect("produce");
        }
    };
    for i in 0..6 {
        send(i, (i % 2) as i32).await;
    }
    let recent = Recent::new(2);
    let (trigger, shutdown) = crate::shutdown::channel();
    let task = tokio::spawn(recent.clone().tail(settings, topic.into(), shutdown));
    let seen = |recent: &Recent| -> Vec<String> {
        recent
            .newest(&OutcomeFilter::default())
            .into_iter()
            .filter_map(|o| o.incident_id)
            .collect()
    };
    // Two per partition at the start (i2, i4 and i3, i5), of which it keeps the last two that
    // arrived; then a new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen(&recent).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing read: {:?}",
            seen(&recent)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen(&recent)
            .iter()
            .all(|i| ["i2", "i3", "i4", "i5"].contains(&i.as_str())),
        "{:?}",
        seen(&recent)
    );
    send(9, 0).await;
    while !seen(&recent).contains(&"i9".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new outcome never came: {:?}",
            seen(&recent)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen(&recent)[0], "i9");
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the tail stops at shutdown")
        .expect("tail task");
}

/// A human promotes a rollout runbook through the console as `remediator promote` does: with
/// the token, naming who promotes, only once the evidence is there, one stage at a time; the
/// runbooks route shows the stage, the evidence and whether it may be promoted.
#[tokio::test]
async fn a_rollout_runbook_is_promoted_only_with_its_evidence() {
    use crate::rollout::Transition;
    let yaml = "runbooks:\n  r:\n    risk: LOW\n    triggers: [x]\n    min_confidence: 0.5\n    action: kubectl delete pod {pod_name}\n    \
                rollout: {start: approval, promote_after: 2, canary: {shares: [25]}}\n  plain:\n    risk: LOW\n    \
                triggers: [y]\n    min_confidence: 0.5\n    action: kubectl delete pod {pod_name}\n";
    let (engine, store) = engine_of(yaml);
    let rb = engine.catalogue().get("r").expect("r").clone();
    let (url, _) = serve_engine((engine, Arc::clone(&store)), Recent::new(10)).await;
    let promote = |id: &'static str, token: &'static str, body: serde_json::Value| {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/v1/console/runbooks/{id}/promote"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("request");
            let code = r.status().as_u16();
            (code, r.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let by = serde_json::json!({"by": "alice"});
    assert_eq!(promote("r", "wrong", by.clone()).await.0, 401);
    let (code, body) = promote("r", TOKEN, by.clone()).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body["reason"],
        "not promoted: 0 of the 2 verified successes its policy needs since the last stage change or failure"
    );
    assert_eq!(promote("nope", TOKEN, by.clone()).await.0, 404);
    assert_eq!(
        promote("plain", TOKEN, by.clone()).await,
        (
            409,
            serde_json::json!({"reason": "not promoted: the runbook has no rollout policy"})
        )
    );
    for who in ["", "  ", "a\nb"] {
        assert_eq!(
            promote("r", TOKEN, serde_json::json!({"by": who})).await.0,
            400,
            "{who:?}"
        );
    }
    let policy = rb.rollout.clone().expect("policy");
    let status = |list: &serde_json::Value| list.as_array().expect("list")[0]["rollout"].clone();
    let runbooks = || async {
        get(&format!("{url}/v1/console/runbooks"), Some(TOKEN))
            .await
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    let succeed = |ids: &'static [&'static str]| {
        let (store, policy) = (Arc::clone(&store), policy.clone());
        async move {
            for id in ids {
                let counted = store.rollout_apply("r", &policy, Transition::Success, id).await;
                counted.expect("store").expect("counted");
            }
        }
    };
    // (stage, evidence, promotable) and what the next stage needs, as the route shows them.
    let shown = || async {
        let s = status(&runbooks().await);
        let seen = (
            s["describe"].as_str().map(String::from),
            s["evidence"].as_u64(),
            s["promotable"].as_bool(),
        );
        (seen, s["needs"].as_str().unwrap_or("").to_string())
    };
    succeed(&["i1"]).await;
    assert_eq!(
        shown().await,
        (
            (Some("approval".into()), Some(1), Some(false)),
            "1 more verified success(es), then canary 25% on its own".into()
        )
    );
    // The second success moves it on its own (automatic_until defaults to canary with shares).
    succeed(&["i2", "i3", "i4"]).await;
    assert_eq!(
        shown().await,
        (
            (Some("canary 25%".into()), Some(2), Some(true)),
            "a human: `remediator promote r` moves it to auto".into()
        )
    );
    let (code, body) = promote("r", TOKEN, by.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["change"]["from"], "canary");
    assert_eq!(body["change"]["to"], "auto");
    assert_eq!(body["change"]["why"], "promoted by alice after 2 verified successes");
    assert_eq!(body["published"], false, "no audit topic in this test");
    let outcome = &body["outcome"];
    assert_eq!(
        (
            &outcome["decision"],
            &outcome["runbook_id"],
            &outcome["incident_id"],
            &outcome["approver"]
        ),
        (
            &"rollout_changed".into(),
            &"r".into(),
            &serde_json::Value::Null,
            &"alice".into()
        )
    );
    assert_eq!(
        outcome["reason"],
        "rollout of runbook r moved from canary 25% to auto: promoted by alice after 2 verified successes"
    );
    assert_eq!(outcome["rollout"]["stage"], "canary");
    let s = status(&runbooks().await);
    assert_eq!(
        (s["describe"].as_str(), s["promotable"].as_bool()),
        (Some("auto"), Some(false))
    );
    assert_eq!(s["needs"], "nothing: it runs automatically");
    let (code, body) = promote("r", TOKEN, by).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("not promoted: it runs automatically already (stage auto)"))
    );
}
