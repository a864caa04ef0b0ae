//! The approvals console in a real browser (headless Chromium through ChromeDriver), against a
//! real `remediator run` process on real Redis and Kafka: a wrong token is refused; signed in,
//! the pending approval a real incident created is listed, its page shows the action, its hash,
//! the checks and the incident (hostile text shown as text); Approve runs it, and the executed
//! outcome, audited under the name given at sign-in, appears in the recent outcomes read from the
//! audit topic. Screenshots of every page go to `target/console-screenshots/` (README).

#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "common/live_worker.rs"]
mod live_worker;
#[path = "common/webdriver.rs"]
mod webdriver;

use kafka_common::{bootstrap, produce, read, redis_url, unique, Msg};
use live_worker::{free_port, ready, Setup};
use std::time::Duration;
use webdriver::Browser;

const TOKEN: &str = "s3cret-token";
const WAIT: Duration = Duration::from_secs(20);

/// A HIGH-risk incident (rollback-deployment asks for approval) carrying markup in a free
/// context field: the console must show it as text.
fn incident(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","root_cause":"error_rate_spike_after_deploy","confidence":0.95,"service":"checkout","context":{{"deployment":"checkout","namespace":"production","note":"<b id=\"injected\">bold</b><script>document.title='owned'</script>"}}}}"#
    )
}

fn shots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_approves_an_action_through_the_console() {
    let (Some(brokers), Some(redis), Some(driver)) = (bootstrap(), redis_url(), webdriver::driver_binary()) else {
        return;
    };
    let Setup { topics, url, env, .. } = Setup::new(&brokers, &redis).await;
    let _worker = env.spawn_run(&[]);
    ready(&url).await;

    let id = unique("CONSOLE");
    produce(&brokers, &topics.incidents, &[Msg::incident(&id, &incident(&id))]).await;
    let first = read(&brokers, &topics.outcomes, 1, Duration::from_secs(30)).await;
    let asked = first[0].json();
    assert_eq!(asked["decision"], "approval_required", "{asked}");
    let approval = asked["approval_id"].as_str().expect("approval id").to_string();
    let hash = reqwest::Client::new()
        .get(format!("{url}/v1/approvals"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json::<Vec<serde_json::Value>>()
        .await
        .expect("approvals")
        .into_iter()
        .find(|a| a["id"] == approval.as_str())
        .and_then(|a| a["action_hash"].as_str().map(str::to_string))
        .expect("the approval is pending");

    let profile = tempfile::tempdir().expect("profile dir");
    let b = Browser::start(&driver, free_port(), profile.path()).await;

    // A wrong token is refused, and nothing is shown.
    b.go(&format!("{url}/console")).await;
    let token = b.find("#token", WAIT).await;
    b.type_into(&token, "not-the-token").await;
    b.type_into(&b.find("#approver", WAIT).await, "alice-console").await;
    b.screenshot(&shots().join("console-login.png")).await;
    b.click(&b.find("#sign-in", WAIT).await).await;
    b.wait_text("#login-error", WAIT, |t| t.contains("wrong token")).await;
    assert!(
        b.all("a[data-approval]").await.is_empty(),
        "approvals shown without the token"
    );

    // The right token: the pending approval is listed.
    b.clear(&token).await;
    b.type_into(&token, TOKEN).await;
    b.click(&b.find("#sign-in", WAIT).await).await;
    let link = b.find(&format!("a[data-approval=\"{approval}\"]"), WAIT).await;
    b.wait_text("#approvals-table tbody", WAIT, |t| {
        t.contains(&id) && t.contains("rollback-deployment")
    })
    .await;
    b.screenshot(&shots().join("console-approvals.png")).await;

    // Its page: the action, the hash the API holds, the checks, the incident as text.
    b.click(&link).await;
    assert_eq!(b.wait_text("#a-hash", WAIT, |t| !t.is_empty()).await, hash);
    let action = b.wait_text("#a-action", WAIT, |t| !t.is_empty()).await;
    assert!(action.contains("checkout") && action.contains("production"), "{action}");
    let post = b.wait_text("#a-post", WAIT, |t| !t.is_empty()).await;
    assert!(post.contains("error_rate_normalized"), "{post}");
    let guardrails = b.wait_text("#a-guardrails", WAIT, |t| !t.is_empty()).await;
    assert!(guardrails.contains("circuit CLOSED"), "{guardrails}");
    let shown = b.wait_text("#a-incident", WAIT, |t| t.contains(&id)).await;
    assert!(
        shown.contains(r#"<b id=\"injected\">bold</b><script>"#),
        "markup not shown as text: {shown}"
    );
    assert!(
        b.all("#injected").await.is_empty(),
        "the incident's markup was rendered"
    );
    b.screenshot(&shots().join("console-approval.png")).await;

    // Approve: executed and verified, audited under the name given at sign-in.
    b.click(&b.find("#approve", WAIT).await).await;
    let verdict = b
        .wait_text("#answer-verdict", Duration::from_secs(60), |t| !t.is_empty())
        .await;
    assert!(verdict.starts_with("Approved"), "{verdict}");
    b.find("#answer-outcomes li[data-decision=\"executed\"]", WAIT).await;
    b.screenshot(&shots().join("console-approved.png")).await;
    let all = read(&brokers, &topics.outcomes, 2, Duration::from_secs(30)).await;
    let executed = all
        .iter()
        .map(|r| r.json())
        .find(|o| o["decision"] == "executed")
        .expect("an executed outcome on the audit topic");
    assert_eq!(executed["incident_id"], id.as_str());
    assert_eq!(executed["approval_id"], approval.as_str());
    assert_eq!(executed["approver"], "alice-console");
    assert_eq!(executed["success"], true);

    // The recent outcomes (from the audit topic) show it; filters narrow the list.
    b.go(&format!("{url}/console#outcomes")).await;
    b.find(
        &format!("#outcomes-table tr[data-incident=\"{id}\"][data-decision=\"executed\"]"),
        WAIT,
    )
    .await;
    b.find(
        &format!("#outcomes-table tr[data-incident=\"{id}\"][data-decision=\"approval_required\"]"),
        WAIT,
    )
    .await;
    b.screenshot(&shots().join("console-outcomes.png")).await;

    // Runbooks: stage, success rate and circuit; the executed run counts.
    b.go(&format!("{url}/console#runbooks")).await;
    let row = b
        .wait_text("#runbooks-table tr[data-runbook=\"rollback-deployment\"]", WAIT, |t| {
            t.contains("100%")
        })
        .await;
    assert!(row.contains("CLOSED") && row.contains("approval"), "{row}");
    b.screenshot(&shots().join("console-runbooks.png")).await;

    // The answer was single use: the approval is gone from the list, and someone else's
    // answer is refused.
    b.go(&format!("{url}/console#approvals")).await;
    b.wait_text("#approvals-empty", WAIT, |t| t.contains("Nothing waits"))
        .await;
    let again = reqwest::Client::new()
        .post(format!("{url}/v1/approvals/{approval}/approve"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "approver": "mallory", "action_hash": hash }))
        .send()
        .await
        .expect("answer again");
    assert_eq!(again.status().as_u16(), 409);
    let body: serde_json::Value = again.json().await.expect("reply");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already approved by alice-console")),
        "{body}"
    );
}

/// A runbook with a rollout policy in approval: one approved, verified execution makes it
/// eligible for auto (beyond `automatic_until`, so a human's step); the runbooks page shows its
/// stage, its evidence and a Promote button; clicking it moves it to auto, and the next incident
/// runs on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_promotes_a_rollout_runbook_through_the_console() {
    let (Some(brokers), Some(redis), Some(driver)) = (bootstrap(), redis_url(), webdriver::driver_binary()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let runbooks = dir.path().join("runbooks.yaml");
    std::fs::write(
        &runbooks,
        "runbooks:
  restart-rollout:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.5
    max_per_hour: 100
    cooldown_minutes: 0
    action: kubectl rollout restart deployment {deployment} -n {namespace}
    post_checks: [deployment_rolled_out]
    rollout: {start: approval, promote_after: 1}
",
    )
    .expect("write runbooks");
    let Setup { topics, url, env, .. } = Setup::new(&brokers, &redis).await;
    let _worker = env.spawn_run(&[("REMEDIATOR_RUNBOOKS", runbooks.to_str().expect("utf-8"))]);
    ready(&url).await;
    let crash = |id: &str, svc: &str| {
        format!(
            r#"{{"id":"{id}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"{svc}","context":{{"deployment":"{svc}","namespace":"production"}}}}"#
        )
    };
    let first = unique("ROLL");
    produce(
        &brokers,
        &topics.incidents,
        &[Msg::incident(&first, &crash(&first, "web"))],
    )
    .await;
    let asked = read(&brokers, &topics.outcomes, 1, Duration::from_secs(30)).await[0].json();
    assert_eq!(asked["decision"], "approval_required", "{asked}");
    assert_eq!(asked["rollout"]["stage"], "approval", "{asked}");
    let approval = asked["approval_id"].as_str().expect("approval id").to_string();
    let answered = reqwest::Client::new()
        .post(format!("{url}/v1/approvals/{approval}/approve"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "approver": "alice-console" }))
        .send()
        .await
        .expect("approve");
    assert_eq!(answered.status().as_u16(), 200);
    let executed = read(&brokers, &topics.outcomes, 2, Duration::from_secs(30)).await[1].json();
    assert_eq!(
        (&executed["decision"], &executed["success"]),
        (&"executed".into(), &true.into()),
        "{executed}"
    );
    assert_eq!(executed["rollout"]["evidence"], 1, "{executed}");

    let profile = tempfile::tempdir().expect("profile dir");
    let b = Browser::start(&driver, free_port(), profile.path()).await;
    b.go(&format!("{url}/console#runbooks")).await;
    b.type_into(&b.find("#token", WAIT).await, TOKEN).await;
    b.type_into(&b.find("#approver", WAIT).await, "alice-console").await;
    b.click(&b.find("#sign-in", WAIT).await).await;
    let row = "#runbooks-table tr[data-runbook=\"restart-rollout\"]";
    let shown = b.wait_text(row, WAIT, |t| t.contains("Promote to auto")).await;
    assert!(
        shown.contains("approval") && shown.contains("1/1 verified successes"),
        "{shown}"
    );
    b.screenshot(&shots().join("console-rollout.png")).await;
    b.click(&b.find("button.promote[data-runbook=\"restart-rollout\"]", WAIT).await)
        .await;
    let result = b.wait_text("#runbooks-result", WAIT, |t| !t.is_empty()).await;
    assert_eq!(result, "restart-rollout: promoted from approval to auto");
    b.find(&format!("{row}[data-stage=\"auto\"]"), WAIT).await;
    assert!(b.all("button.promote").await.is_empty(), "nothing left to promote");
    // The promotion is audited on the outcomes topic under the name given at sign-in.
    let audit = read(&brokers, &topics.outcomes, 3, Duration::from_secs(30)).await[2].json();
    assert_eq!(audit["decision"], "rollout_changed", "{audit}");
    assert_eq!(audit["approver"], "alice-console", "{audit}");
    assert_eq!(
        (&audit["rollout"]["change"]["from"], &audit["rollout"]["change"]["to"]),
        (&"approval".into(), &"auto".into()),
        "{audit}"
    );

    // Every replica decides in the new stage at once: the next incident runs on its own.
    let second = unique("ROLL");
    produce(
        &brokers,
        &topics.incidents,
        &[Msg::incident(&second, &crash(&second, "api"))],
    )
    .await;
    let third = read(&brokers, &topics.outcomes, 4, Duration::from_secs(30)).await[3].json();
    assert_eq!(third["incident_id"], second.as_str());
    assert_eq!(
        (&third["decision"], &third["rollout"]["stage"]),
        (&"executed".into(), &"auto".into()),
        "{third}"
    );
}
