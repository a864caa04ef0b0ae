//! Humans in the loop against real Redis and Kafka: approvals over the HTTP API (`remediator
//! approve`, `approvals`) and the approvals topic (signed answers only, `remediator
//! sign-answer`), refused and forged answers, `remediator execute`, and `remediator runbooks`,
//! all through real `remediator` processes.

#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "common/live_worker.rs"]
mod live_worker;

use kafka_common::{bootstrap, committed, produce, read, redis_url, unique, Msg};
use live_worker::{incident, ready, text, Setup};
use std::process::Stdio;
use std::time::{Duration, Instant};

const HMAC_KEY: &str = "approvals-topic-key-0123456789abcdef";

/// The action hash of a pending approval, from the worker's API.
async fn pending_hash(url: &str, approval: &str) -> Option<String> {
    let list: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{url}/v1/approvals"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .expect("list approvals")
        .json()
        .await
        .expect("approvals json");
    list.iter()
        .find(|a| a["id"] == approval)
        .map(|a| a["action_hash"].as_str().expect("hash").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_over_http_and_kafka_with_refusals_and_manual_runs() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let Setup {
        topics,
        approvals_topic,
        url,
        mut env,
    } = Setup::new(&brokers, &redis).await;
    env.vars
        .push(("REMEDIATOR_APPROVALS_TOPIC_ENABLED".into(), "true".into()));
    env.vars.push(("REMEDIATOR_APPROVAL_HMAC_KEY".into(), HMAC_KEY.into()));
    let _worker = env.spawn_run(&[]);
    ready(&url).await;

    // Three HIGH-risk incidents ask for approval.
    let ids: Vec<String> = (0..3).map(|i| unique(&format!("APR{i}"))).collect();
    let svcs = ["checkout", "cart", "search"];
    let msgs: Vec<Msg> = ids
        .iter()
        .zip(svcs)
        .map(|(id, s)| Msg::incident(id, &incident(id, s)))
        .collect();
    produce(&brokers, &topics.incidents, &msgs).await;
    let first = read(&brokers, &topics.outcomes, 3, Duration::from_secs(30)).await;
    let approval = |id: &str| -> String {
        let o = first
            .iter()
            .map(|r| r.json())
            .find(|o| o["incident_id"] == id)
            .expect("outcome");
        assert_eq!(o["decision"], "approval_required");
        o["approval_id"].as_str().expect("approval id").to_string()
    };
    let (a0, a1, a2) = (approval(&ids[0]), approval(&ids[1]), approval(&ids[2]));

    // Listed, with the action hash to review.
    let listed = env.run(&["approvals", "--url", &url]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        text(&listed).contains(&a0) && text(&listed).contains("action hash:"),
        "{}",
        text(&listed)
    );

    // No token, wrong token: refused.
    let anon = reqwest::Client::new()
        .post(format!("{url}/v1/approvals/{a0}/approve"))
        .json(&serde_json::json!({"approver": "mallory"}))
        .send()
        .await
        .expect("post");
    assert_eq!(anon.status().as_u16(), 401);
    let wrong = env
        .command(&["approve", &a0, "--url", &url])
        .env("REMEDIATOR_APPROVAL_TOKEN", "nope")
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    // Approved over HTTP: executed, audited with the approver; a replay is refused.
    let ok = env.run(&["approve", &a0, "--approver", "alice", "--url", &url]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("EXECUTED, verified"), "{}", text(&ok));
    // Alice's retry (say her client timed out) gets the recorded outcome again, runs nothing.
    let retry = env.run(&["approve", &a0, "--approver", "alice", "--url", &url]);
    assert!(retry.status.success(), "{}", text(&retry));
    assert!(text(&retry).contains("EXECUTED, verified"), "{}", text(&retry));
    let replay = env.run(&["approve", &a0, "--approver", "mallory", "--url", &url]);
    assert!(!replay.status.success());
    assert!(text(&replay).contains("already approved by alice"), "{}", text(&replay));

    // Over Kafka, only signed answers count. Forged approvals of the HIGH-risk rollback a2 (no
    // signature, the wrong key, no action hash) are refused and audited; then a signed denial
    // (made by `remediator sign-answer`), a signed answer naming another hash (tampered), a
    // malformed message, and last a signed approval of a2, which executes.
    let hash2 = pending_hash(&url, &a2).await.expect("a2 pending");
    let hash1 = pending_hash(&url, &a1).await.expect("a1 pending");
    let sign = |id: &str, decision: &str, who: &str, hash: &str, key: &str| -> String {
        let out = env
            .command(&[
                "sign-answer",
                id,
                "--decision",
                decision,
                "--approver",
                who,
                "--action-hash",
                hash,
            ])
            .env("REMEDIATOR_APPROVAL_HMAC_KEY", key)
            .output()
            .expect("sign-answer");
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
    };
    let unsigned =
        serde_json::json!({"approval_id": a2, "decision": "approve", "approver": "mallory", "action_hash": hash2});
    let wrong_key = sign(
        &a2,
        "approve",
        "mallory",
        &hash2,
        "not-the-workers-key-0123456789abcdef",
    );
    let mut no_hash: serde_json::Value = serde_json::from_str(&sign(&a2, "approve", "mallory", "x", HMAC_KEY)).unwrap();
    no_hash.as_object_mut().unwrap().remove("action_hash");
    let mut empty_hash = no_hash.clone();
    empty_hash["action_hash"] = "".into();
    let answers = [
        unsigned.to_string(),
        wrong_key,
        no_hash.to_string(),
        empty_hash.to_string(),
        sign(&a1, "deny", "bob", &hash1, HMAC_KEY),
        sign(&a2, "approve", "eve", "forged", HMAC_KEY),
        r#"{"approval_id": 42}"#.to_string(),
        sign(&a2, "approve", "carol", &hash2, HMAC_KEY),
    ];
    let msgs: Vec<Msg> = answers.iter().map(|a| Msg::incident("answer", a)).collect();
    produce(&brokers, &approvals_topic, &msgs).await;

    // Outcomes: 3 approvals + executed (alice) + the same again (her retry) + refused replay +
    // 4 forged + denied + tampered + malformed + executed (carol).
    let all: Vec<serde_json::Value> = read(&brokers, &topics.outcomes, 14, Duration::from_secs(60))
        .await
        .iter()
        .map(|r| r.json())
        .collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| all.iter().find(|o| pred(o)).cloned();
    let executed = find(&|o| o["approval_id"] == a0.as_str() && o["decision"] == "executed").expect("executed");
    assert_eq!(executed["approver"], "alice");
    assert_eq!(executed["incident_id"], ids[0].as_str());
    let a0_runs: Vec<&serde_json::Value> = all
        .iter()
        .filter(|o| o["approval_id"] == a0.as_str() && o["decision"] == "executed")
        .collect();
    assert_eq!(a0_runs.len(), 2, "published twice");
    assert_eq!(
        a0_runs[0]["event_id"], a0_runs[1]["event_id"],
        "one execution, the same event"
    );
    let denied = find(&|o| o["approval_id"] == a1.as_str() && o["approver"] == "bob").expect("denied outcome");
    assert_eq!(denied["decision"], "manual");
    assert!(denied["reason"].as_str().unwrap().contains("denied by bob"));
    let tampered = find(&|o| o["approval_id"] == a2.as_str() && o["approver"] == "eve").expect("tampered");
    assert_eq!(tampered["decision"], "rejected");
    assert!(
        tampered["reason"].as_str().unwrap().contains("action hash"),
        "{tampered}"
    );
    assert!(
        find(&|o| o["decision"] == "rejected" && o["approval_id"].is_null()).is_some(),
        "malformed answer audited"
    );
    let forged: Vec<&serde_json::Value> = all
        .iter()
        .filter(|o| o["approval_id"] == a2.as_str() && o["reason"].as_str().unwrap_or("").contains("mallory"))
        .collect();
    assert_eq!(forged.len(), 4, "every forged answer audited: {all:#?}");
    for o in &forged {
        assert_eq!(o["decision"], "rejected", "{o}");
        assert!(
            o["approver"].is_null(),
            "an unproven approver is not audited as one: {o}"
        );
        let why = o["reason"].as_str().unwrap();
        assert!(
            why.contains("signature is missing")
                || why.contains("signature does not verify")
                || why.contains("action_hash is required"),
            "{why}"
        );
    }
    let runs: Vec<&serde_json::Value> = all
        .iter()
        .filter(|o| o["approval_id"] == a2.as_str() && o["decision"] == "executed")
        .collect();
    assert_eq!(runs.len(), 1, "a2 executed once, by the signed answer: {all:#?}");
    assert_eq!(runs[0]["approver"], "carol");
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"remediator_approvals_total{result="unauthenticated"} 4"#),
        "{metrics}"
    );

    // A manual run goes through the same guardrails: the second run hits the cooldown.
    let run = env.run(&[
        "execute",
        "restart-pod",
        "--service",
        "api",
        "--context",
        "pod_name=api-7",
        "--context",
        "namespace=prod",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("manual run by tester"), "{}", text(&run));
    let again = env.run(&[
        "execute",
        "restart-pod",
        "--service",
        "api",
        "--context",
        "pod_name=api-8",
        "--context",
        "namespace=prod",
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("BLOCKED by cooldown"), "{}", text(&again));
    let bad = env.run(&[
        "execute",
        "restart-pod",
        "--service",
        "api",
        "--context",
        "pod_name=../etc",
        "--context",
        "namespace=prod",
    ]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("context.pod_name"), "{}", text(&bad));

    // The ledger view.
    let report = env.run(&["runbooks"]);
    assert!(report.status.success(), "{}", text(&report));
    let t = text(&report);
    assert!(
        t.lines()
            .any(|l| l.starts_with("restart-pod") && l.contains("CLOSED") && l.contains("1/20")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("rollback-deployment") && l.contains("2/20")),
        "{t}"
    );
}

/// The approvals topic is a door only when opened: by default a validly signed answer on it is
/// never consumed (the approval stays pending, nothing is published, no offset is committed),
/// and opening it without a signing key stops the worker at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvals_topic_is_off_by_default_and_needs_a_key() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let Setup {
        topics,
        approvals_topic,
        url,
        env,
    } = Setup::new(&brokers, &redis).await;

    // Enabled without a key: refused at start, naming what is missing.
    let mut keyless = env.command(&["run"]);
    keyless
        .env("REMEDIATOR_APPROVALS_TOPIC_ENABLED", "true")
        .env_remove("REMEDIATOR_APPROVAL_HMAC_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = keyless.spawn().expect("run");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("a worker with the topic enabled and no key kept running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().expect("output");
    assert!(!status.success());
    assert!(text(&out).contains("REMEDIATOR_APPROVAL_HMAC_KEY"), "{}", text(&out));

    // Default (off): a signed approval on the topic is not consumed.
    let group = env
        .vars
        .iter()
        .find(|(k, _)| k == "REMEDIATOR_KAFKA_GROUP_ID")
        .map(|(_, v)| v.clone())
        .unwrap();
    let _worker = env.spawn_run(&[("REMEDIATOR_APPROVAL_HMAC_KEY", HMAC_KEY)]);
    ready(&url).await;
    let id = unique("OFF");
    produce(
        &brokers,
        &topics.incidents,
        &[Msg::incident(&id, &incident(&id, "checkout"))],
    )
    .await;
    let first = read(&brokers, &topics.outcomes, 1, Duration::from_secs(30)).await;
    let approval = first[0].json()["approval_id"]
        .as_str()
        .expect("approval id")
        .to_string();
    let hash = pending_hash(&url, &approval).await.expect("pending");
    let signed = env
        .command(&[
            "sign-answer",
            &approval,
            "--decision",
            "approve",
            "--approver",
            "alice",
            "--action-hash",
            &hash,
        ])
        .env("REMEDIATOR_APPROVAL_HMAC_KEY", HMAC_KEY)
        .output()
        .expect("sign");
    assert!(signed.status.success(), "{}", text(&signed));
    let answer = String::from_utf8(signed.stdout).unwrap();
    produce(&brokers, &approvals_topic, &[Msg::incident("answer", answer.trim())]).await;
    // Long enough for a consumer to join, read and answer (the enabled test answers in < 5 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        pending_hash(&url, &approval).await.as_deref(),
        Some(hash.as_str()),
        "still pending: the topic was not consumed"
    );
    let all = read(&brokers, &topics.outcomes, 2, Duration::from_secs(2)).await;
    assert_eq!(all.len(), 1, "nothing but the approval_required outcome");
    assert_eq!(
        committed(&brokers, &format!("{group}-approvals"), &approvals_topic, 1),
        vec![None],
        "no approvals consumer group committed anything"
    );
}

/// Behind an authenticating proxy: a worker told to trust the identity header from its proxy's
/// address (here 127.0.0.1) lets a request carrying it in without the token, and audits the
/// identity the proxy names, not a name in the body; the same header from an address the
/// worker does not trust opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_identity_header_authenticates_and_is_the_approver() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let Setup {
        topics, url, mut env, ..
    } = Setup::new(&brokers, &redis).await;
    env.vars
        .push(("REMEDIATOR_APPROVALS_IDENTITY_HEADER".into(), "X-Remote-User".into()));
    env.vars.push((
        "REMEDIATOR_APPROVALS_TRUSTED_PROXIES".into(),
        "[\"127.0.0.1/32\"]".into(),
    ));
    let _worker = env.spawn_run(&[]);
    ready(&url).await;
    let id = unique("PROXY");
    produce(
        &brokers,
        &topics.incidents,
        &[Msg::incident(&id, &incident(&id, "checkout"))],
    )
    .await;
    let asked = read(&brokers, &topics.outcomes, 1, Duration::from_secs(30)).await[0].json();
    assert_eq!(asked["decision"], "approval_required", "{asked}");
    let approval = asked["approval_id"].as_str().expect("approval id").to_string();
    let client = reqwest::Client::new();
    let listed = client
        .get(format!("{url}/v1/approvals"))
        .header("X-Remote-User", "alice@example.com")
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status().as_u16(), 200, "the proxy's identity is enough");
    let console = client
        .get(format!("{url}/v1/console/runbooks"))
        .header("X-Remote-User", "alice@example.com")
        .send()
        .await
        .expect("console");
    assert_eq!(console.status().as_u16(), 200, "the console takes it too");
    let empty = client
        .get(format!("{url}/v1/approvals"))
        .header("X-Remote-User", "")
        .send()
        .await
        .expect("list");
    assert_eq!(empty.status().as_u16(), 401, "an empty identity is no identity");
    let answered = client
        .post(format!("{url}/v1/approvals/{approval}/approve"))
        .header("X-Remote-User", "alice@example.com")
        .json(&serde_json::json!({"approver": "mallory"}))
        .send()
        .await
        .expect("approve");
    assert_eq!(answered.status().as_u16(), 200);
    let outcomes = read(&brokers, &topics.outcomes, 2, Duration::from_secs(30)).await;
    let executed = outcomes[1].json();
    assert_eq!(executed["decision"], "executed", "{executed}");
    assert_eq!(
        executed["approver"], "alice@example.com",
        "the proxy's identity is audited: {executed}"
    );

    // Another worker trusts only a proxy elsewhere: the header from here opens nothing.
    let Setup { url: url2, mut env, .. } = Setup::new(&brokers, &redis).await;
    env.vars
        .push(("REMEDIATOR_APPROVALS_IDENTITY_HEADER".into(), "X-Remote-User".into()));
    env.vars
        .push(("REMEDIATOR_APPROVALS_TRUSTED_PROXIES".into(), "[\"10.9.9.9\"]".into()));
    let _other = env.spawn_run(&[]);
    ready(&url2).await;
    for path in ["/v1/approvals", "/v1/console/runbooks"] {
        let r = client
            .get(format!("{url2}{path}"))
            .header("X-Remote-User", "alice@example.com")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 401, "{path}: the header from an untrusted address");
    }
    // A worker that would believe the header from anyone does not start.
    let refused = env
        .command(&["validate"])
        .env("REMEDIATOR_APPROVALS_TRUSTED_PROXIES", "[]")
        .output()
        .expect("validate");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("approvals.trusted_proxies"),
        "names the key: {}",
        text(&refused)
    );
}
