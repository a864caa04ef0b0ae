//! `remediator run` as a real process: configured only through `REMEDIATOR_*` variables, against
//! the real Redis and Kafka, serving `/metrics`, `/healthz` and `/readyz`, logging JSON with the
//! incident id, and draining on SIGTERM with exit code 0.

#[path = "common/k8s.rs"]
mod k8s_common;
#[path = "common/kafka.rs"]
mod kafka_common;

use kafka_common::{bootstrap, produce, read, redis_url, seed_incidents, unique, Msg, Topics};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running `remediator run` child, killed if the test fails half-way.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_processes_incidents_serves_metrics_and_drains_on_sigterm() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let topics = Topics::create(&brokers, 3).await;
    let port = free_port();
    let run = unique("proc");
    let mut child = Command::new(env!("CARGO_BIN_EXE_remediator"))
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("REMEDIATOR_KAFKA_BROKERS", &brokers)
        .env("REMEDIATOR_KAFKA_GROUP_ID", unique("group"))
        .env("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", &topics.incidents)
        .env("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", &topics.outcomes)
        .env("REMEDIATOR_KAFKA_DLQ_TOPIC", &topics.dlq)
        .env("REMEDIATOR_REDIS_URL", &redis)
        .env("REMEDIATOR_REDIS_KEY_PREFIX", unique("test"))
        .env("REMEDIATOR_RUNBOOKS", "tests/data/seed-runbooks.yaml")
        .env("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("REMEDIATOR_WORKER_ID", "proc-1")
        .env("REMEDIATOR_EXECUTOR", "simulated")
        .env("REMEDIATOR_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start remediator run");
    let base = format!("http://127.0.0.1:{port}");

    // Ready once Kafka, Redis and the executor answer.
    let t0 = Instant::now();
    loop {
        if get(&format!("{base}/readyz")).await.0 == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not ready in 30 s: {:?}",
            get(&format!("{base}/readyz")).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    let incidents = seed_incidents(&run);
    let msgs: Vec<Msg> = incidents.iter().map(|(id, json)| Msg::incident(id, json)).collect();
    produce(&brokers, &topics.incidents, &msgs).await;
    let outcomes = read(&brokers, &topics.outcomes, 4, Duration::from_secs(30)).await;
    let mut decisions: Vec<(String, String)> = outcomes
        .iter()
        .map(|r| {
            let o = r.json();
            (
                o["incident_id"].as_str().unwrap_or("").to_string(),
                o["decision"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    decisions.sort();
    let want: Vec<(String, String)> = ["executed", "executed", "approval_required", "manual"]
        .iter()
        .enumerate()
        .map(|(i, d)| (incidents[i].0.clone(), d.to_string()))
        .collect();
    assert_eq!(decisions, want);
    assert!(outcomes.iter().all(|r| r.json()["worker"] == "proc-1"));

    let (code, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    for line in [
        "remediator_incidents_total{decision=\"executed\"} 2",
        "remediator_incidents_total{decision=\"approval_required\"} 1",
        "remediator_incidents_total{decision=\"manual\"} 1",
        "remediator_actions_total{result=\"success\",runbook=\"restart-pod\"} 1",
        "remediator_outcomes_published_total 4",
        "remediator_actions_in_flight 0",
        // The approval waits in the shared store; the trust gauges of a runbook that never ran
        // come from the store refresh, not from an execution.
        "remediator_approvals_pending 1",
        "remediator_runbook_executions{runbook=\"rollback-deployment\"} 0",
        "remediator_runbook_demoted{runbook=\"rollback-deployment\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("remediator_decision_duration_seconds_count 4"),
        "{metrics}"
    );
    // The lag gauge comes from librdkafka statistics, emitted every few seconds.
    let t0 = Instant::now();
    while !get(&format!("{base}/metrics"))
        .await
        .1
        .contains("remediator_kafka_consumer_lag{partition=")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no consumer lag gauge after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGTERM: drain, commit, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let t0 = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "did not exit within 40 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("read logs");
    assert!(exit.success(), "exit {exit:?}; logs:\n{logs}");
    // JSON logs, one span per incident carrying its id.
    let first = &incidents[0].0;
    let with_id = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["span"]["id"] == first.as_str());
    assert!(with_id.is_some(), "no JSON log line in the span of {first}:\n{logs}");
}

#[test]
fn bad_configuration_fails_fast_with_the_key_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_remediator"))
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("REMEDIATOR_REDIS_TIMEOUT_MS", "soon")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REMEDIATOR_REDIS_TIMEOUT_MS") || err.contains("timeout_ms"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_remediator"))
        .args(["run", "--runbooks", "tests/data/does-not-exist.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.yaml"));
}

/// `remediator run` with the Alertmanager intake enabled and nothing else reachable (the intake
/// is built before the store is contacted), its stderr read line by line in a thread.
fn start_with_intake(extra: &[(&str, &str)]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remediator"));
    cmd.arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("REMEDIATOR_ALERTMANAGER_TOKEN")
        .env("REMEDIATOR_ALERTMANAGER_ENABLED", "true")
        .env("REMEDIATOR_RUNBOOKS", "tests/data/seed-runbooks.yaml")
        .env("REMEDIATOR_REDIS_URL", "redis://127.0.0.1:1")
        .env("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("REMEDIATOR_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start remediator run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Child(child), rx)
}

/// An enabled intake without a token refuses to start, naming the variable and
/// the switch; `alertmanager.allow_unauthenticated: true` starts it with a warning.
#[test]
fn an_alertmanager_intake_without_a_token_refuses_to_start_unless_allowed() {
    let (mut child, lines) = start_with_intake(&[]);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "still running 20 s after start without a token"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        err.push_str(&l);
        err.push('\n');
    }
    assert!(
        err.contains("REMEDIATOR_ALERTMANAGER_TOKEN") && err.contains("alertmanager.allow_unauthenticated"),
        "{err}"
    );

    let (mut child, lines) = start_with_intake(&[("REMEDIATOR_ALERTMANAGER_ALLOW_UNAUTHENTICATED", "true")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("WITHOUT authentication") => break,
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
            }
            Err(_) => panic!("no warning about the open intake within 20 s:\n{seen}"),
        }
    }
    assert!(child.0.try_wait().expect("wait").is_none(), "it keeps running:\n{seen}");
}

/// The Kubernetes executor wired by configuration alone: a crash-looping pod of a 3-replica
/// Deployment is deleted by `remediator run` and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_the_kubernetes_executor_restarts_a_crash_looping_pod() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let Some(kubeconfig) = k8s_common::kubeconfig() else {
        return;
    };
    let client = k8s_common::client().await;
    let ns = k8s_common::create_namespace(&client, "proc").await;
    k8s_common::create_deployment(&client, &ns, "api", 3).await;
    let pods = k8s_common::wait_ready_pods(&client, &ns, "app=api", 3, Duration::from_secs(30)).await;
    let victim = pods[0].metadata.name.clone().expect("pod name");
    let victim_uid = pods[0].metadata.uid.clone().expect("pod uid");

    let topics = Topics::create(&brokers, 1).await;
    let port = free_port();
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_remediator"))
            .arg("run")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("KUBECONFIG", &kubeconfig)
            .env("REMEDIATOR_EXECUTOR", "kubernetes")
            .env("REMEDIATOR_KAFKA_BROKERS", &brokers)
            .env("REMEDIATOR_KAFKA_GROUP_ID", unique("group"))
            .env("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", &topics.incidents)
            .env("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", &topics.outcomes)
            .env("REMEDIATOR_KAFKA_DLQ_TOPIC", &topics.dlq)
            .env("REMEDIATOR_REDIS_URL", &redis)
            .env("REMEDIATOR_REDIS_KEY_PREFIX", unique("test"))
            .env("REMEDIATOR_RUNBOOKS", "tests/data/seed-runbooks.yaml")
            .env("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("REMEDIATOR_KUBERNETES_CHECK_TIMEOUT", "30s")
            .env("REMEDIATOR_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start remediator run"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while get(&format!("{base}/readyz")).await.0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not ready: {:?}",
            get(&format!("{base}/readyz")).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(get(&format!("{base}/readyz")).await.1.contains("executor: ok"));

    let id = unique("INC");
    let json = format!(
        r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"api","context":{{"pod_name":"{victim}","namespace":"{ns}"}}}}"#
    );
    produce(&brokers, &topics.incidents, &[Msg::incident(&id, &json)]).await;
    let outcomes = read(&brokers, &topics.outcomes, 1, Duration::from_secs(60)).await;
    let o = outcomes[0].json();
    assert_eq!(
        (o["decision"].as_str(), o["success"].as_bool()),
        (Some("executed"), Some(true)),
        "{o:#}"
    );
    let pods = k8s_common::wait_ready_pods(&client, &ns, "app=api", 3, Duration::from_secs(30)).await;
    assert!(
        pods.iter()
            .all(|p| p.metadata.uid.as_deref() != Some(victim_uid.as_str())),
        "the old pod is gone"
    );
    k8s_common::delete_namespace(&client, &ns).await;
}

/// SIGTERM never cuts an execution off. A worker is in the middle of two
/// 32 s actions when it gets SIGTERM: an automatic one from the incidents topic, and one unlocked
/// by an approval over the HTTP API whose client has already given up waiting (so only the
/// worker's task tracker keeps it alive). It stops taking work, yet both run to their end: both
/// outcomes are published, the incident's offset is committed, and the process exits 0. A
/// second worker that reads the topic again from the start (a redelivery of both messages)
/// re-publishes the recorded outcomes and executes nothing. Before the fix the drain gave up
/// after a fixed 30 s (the automatic action's outcome was never published) and the process did
/// not wait for answer tasks at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_started_and_approved_executions_finish() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let topics = Topics::create(&brokers, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal.jsonl");
    let (prefix, group, run) = (unique("test"), unique("group"), unique("term"));
    let token = "approve-s3cret";
    let start = |group: &str, worker: &str| {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_remediator"))
            .arg("run")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("REMEDIATOR_KAFKA_BROKERS", &brokers)
            .env("REMEDIATOR_KAFKA_GROUP_ID", group)
            .env("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", &topics.incidents)
            .env("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", &topics.outcomes)
            .env("REMEDIATOR_KAFKA_DLQ_TOPIC", &topics.dlq)
            .env("REMEDIATOR_REDIS_URL", &redis)
            .env("REMEDIATOR_REDIS_KEY_PREFIX", &prefix)
            .env("REMEDIATOR_RUNBOOKS", "tests/data/seed-runbooks.yaml")
            .env("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("REMEDIATOR_WORKER_ID", worker)
            .env("REMEDIATOR_EXECUTOR", "simulated")
            .env("REMEDIATOR_SIMULATED_ACTION_DELAY", "32s")
            .env("REMEDIATOR_SIMULATED_JOURNAL", &journal)
            .env("REMEDIATOR_SHUTDOWN_GRACE", "90s")
            .env("REMEDIATOR_APPROVAL_TOKEN", token)
            .env("REMEDIATOR_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join(format!("{worker}.log"))).expect("log file"),
            ))
            .spawn()
            .expect("start remediator run");
        (Child(child), format!("http://127.0.0.1:{port}"))
    };
    let ready = |base: String| async move {
        let t0 = Instant::now();
        while get(&format!("{base}/readyz")).await.0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(30), "not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let journal_lines = || {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    };
    let wait_journal = |n: usize| {
        let t0 = Instant::now();
        while journal_lines() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "fewer than {n} actions started in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let (mut first, base) = start(&group, "term-1");
    ready(base.clone()).await;

    // A HIGH-risk incident waits for approval.
    let approved_id = format!("{run}-INC-A");
    let approved = format!(
        r#"{{"id":"{approved_id}","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"{run}-checkout","context":{{"deployment":"checkout","namespace":"production"}}}}"#
    );
    produce(&brokers, &topics.incidents, &[Msg::incident(&approved_id, &approved)]).await;
    let outcomes = read(&brokers, &topics.outcomes, 1, Duration::from_secs(30)).await;
    assert_eq!(outcomes.len(), 1, "approval_required outcome");
    assert_eq!(
        outcomes[0].json()["decision"],
        "approval_required",
        "{}",
        outcomes[0].json()
    );
    let http = reqwest::Client::new();
    let pending: serde_json::Value = http
        .get(format!("{base}/v1/approvals"))
        .bearer_auth(token)
        .send()
        .await
        .expect("list approvals")
        .json()
        .await
        .expect("approvals JSON");
    let approval = pending
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["incident_id"] == approved_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no pending approval for {approved_id}: {pending}"));

    // An automatic incident starts executing (restart-pod, one 32 s action)...
    let auto_id = format!("{run}-INC-B");
    let auto = format!(
        r#"{{"id":"{auto_id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"{run}-api","context":{{"pod_name":"api-abc","namespace":"production"}}}}"#
    );
    produce(&brokers, &topics.incidents, &[Msg::incident(&auto_id, &auto)]).await;
    wait_journal(1);
    // ...and the approval unlocks the other (rollback-deployment, a 32 s action). Its client
    // gives up after 2 s: the execution must not depend on the request.
    let answer = {
        let (http, url) = (
            http.clone(),
            format!(
                "{base}/v1/approvals/{}/approve",
                approval["id"].as_str().unwrap_or_default()
            ),
        );
        let body = serde_json::json!({"approver": "alice", "action_hash": approval["action_hash"]});
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            match r {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            }
        })
    };
    wait_journal(2);

    // SIGTERM while both actions are running.
    let status = Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let t0 = Instant::now();
    let exit = loop {
        if let Some(s) = first.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "did not exit within 60 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = std::fs::read_to_string(dir.path().join("term-1.log")).unwrap_or_default();
    assert!(exit.success(), "exit {exit:?}; logs:\n{logs}");
    let (code, reply) = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the approval request ended")
        .expect("answer task");
    assert_eq!(code, 0, "the client gave up before the action ended: {code} {reply}");
    assert_eq!(journal_lines(), 2, "exactly actions A and B ran; logs:\n{logs}");
    let outcomes = read(&brokers, &topics.outcomes, 3, Duration::from_secs(10)).await;
    let of = |id: &str, decision: &str| {
        outcomes
            .iter()
            .map(|r| r.json())
            .find(|o| o["incident_id"] == id && o["decision"] == decision)
            .unwrap_or_else(|| panic!("no {decision} outcome for {id}; logs:\n{logs}"))
    };
    let b = of(&auto_id, "executed");
    assert_eq!(b["success"], true, "{b}");
    let a = of(&approved_id, "executed");
    assert_eq!(a["success"], true, "{a}");
    let hw = kafka_common::high_watermarks(&brokers, &topics.incidents, 1);
    assert_eq!(
        kafka_common::committed(&brokers, &group, &topics.incidents, 1),
        vec![Some(hw[0])],
        "both incidents committed before exit; logs:\n{logs}"
    );

    // Redelivery: a worker of another group reads both messages again; nothing runs twice.
    let (second, base) = start(&unique("group"), "term-2");
    ready(base).await;
    let all = read(&brokers, &topics.outcomes, 5, Duration::from_secs(30)).await;
    assert_eq!(
        all.len(),
        5,
        "both redeliveries answered: {:?}",
        all.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    for o in &all[3..] {
        let o = o.json();
        assert!(
            [approved_id.as_str(), auto_id.as_str()].contains(&o["incident_id"].as_str().unwrap_or_default()),
            "{o}"
        );
    }
    assert_eq!(journal_lines(), 2, "a redelivery executes nothing again");
    drop(second);
}
