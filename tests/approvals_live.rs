//! Humans in the loop against real Redis and Kafka: approvals over the HTTP API (`remediator
//! approve`, `approvals`) and the approvals topic, refused answers, `remediator execute`, and
//! `remediator runbooks`, all through real `remediator` processes.

#[path = "common/kafka.rs"]
mod kafka_common;

use kafka_common::{bootstrap, produce, read, redis_url, unique, Msg, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_remediator"));
        c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run remediator")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn create_topic(brokers: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin
        .create_topics(&[NewTopic::new(name, 1, TopicReplication::Fixed(1))], &opts)
        .await
        .expect("create")
    {
        r.expect("topic created");
    }
}

fn incident(id: &str, svc: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"{svc}","context":{{"deployment":"{svc}","namespace":"production"}}}}"#
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_over_http_and_kafka_with_refusals_and_manual_runs() {
    let (Some(brokers), Some(redis)) = (bootstrap(), redis_url()) else {
        return;
    };
    let topics = Topics::create(&brokers, 1).await;
    let approvals_topic = unique("approvals");
    create_topic(&brokers, &approvals_topic).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let env = Env {
        vars: [
            ("REMEDIATOR_EXECUTOR", "simulated".to_string()),
            ("REMEDIATOR_KAFKA_BROKERS", brokers.clone()),
            ("REMEDIATOR_KAFKA_GROUP_ID", unique("group")),
            ("REMEDIATOR_KAFKA_INCIDENTS_TOPIC", topics.incidents.clone()),
            ("REMEDIATOR_KAFKA_OUTCOMES_TOPIC", topics.outcomes.clone()),
            ("REMEDIATOR_KAFKA_DLQ_TOPIC", topics.dlq.clone()),
            ("REMEDIATOR_KAFKA_APPROVALS_TOPIC", approvals_topic.clone()),
            ("REMEDIATOR_REDIS_URL", redis.clone()),
            ("REMEDIATOR_REDIS_KEY_PREFIX", unique("test")),
            ("REMEDIATOR_RUNBOOKS", "tests/data/seed-runbooks.yaml".to_string()),
            ("REMEDIATOR_HTTP_LISTEN", format!("127.0.0.1:{port}")),
            ("REMEDIATOR_APPROVAL_TOKEN", "s3cret-token".to_string()),
            ("REMEDIATOR_LOG_FORMAT", "text".to_string()),
            ("USER", "tester".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    let _worker = Child(
        env.command(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run"),
    );
    let t0 = Instant::now();
    while reqwest::get(format!("{url}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "worker not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
    let replay = env.run(&["approve", &a0, "--approver", "alice", "--url", &url]);
    assert!(!replay.status.success());
    assert!(text(&replay).contains("already approved by alice"), "{}", text(&replay));

    // Over Kafka: a denial, a tampered answer and a malformed message.
    let answers = [
        serde_json::json!({"approval_id": a1, "decision": "deny", "approver": "bob"}).to_string(),
        serde_json::json!({"approval_id": a2, "decision": "approve", "approver": "eve", "action_hash": "forged"})
            .to_string(),
        r#"{"approval_id": 42}"#.to_string(),
    ];
    let msgs: Vec<Msg> = answers.iter().map(|a| Msg::incident("answer", a)).collect();
    produce(&brokers, &approvals_topic, &msgs).await;

    // Outcomes: 3 approvals + executed (alice) + refused replay + denied + tampered + malformed.
    let all: Vec<serde_json::Value> = read(&brokers, &topics.outcomes, 8, Duration::from_secs(30))
        .await
        .iter()
        .map(|r| r.json())
        .collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| all.iter().find(|o| pred(o)).cloned();
    let executed = find(&|o| o["approval_id"] == a0.as_str() && o["decision"] == "executed").expect("executed");
    assert_eq!(executed["approver"], "alice");
    assert_eq!(executed["incident_id"], ids[0].as_str());
    let denied = find(&|o| o["approval_id"] == a1.as_str() && o["approver"] == "bob").expect("denied outcome");
    assert_eq!(denied["decision"], "manual");
    assert!(denied["reason"].as_str().unwrap().contains("denied by bob"));
    let tampered = find(&|o| o["approval_id"] == a2.as_str() && o["decision"] == "rejected").expect("tampered");
    assert!(
        tampered["reason"].as_str().unwrap().contains("action hash"),
        "{tampered}"
    );
    assert!(
        find(&|o| o["decision"] == "rejected" && o["approval_id"].is_null()).is_some(),
        "malformed answer audited"
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
            .any(|l| l.starts_with("rollback-deployment") && l.contains("1/20")),
        "{t}"
    );
}
