//! The Kubernetes executor against a real control plane (kube-apiserver, controller-manager,
//! scheduler, etcd, kwok: `scripts/k8s.sh start`, then export its `KUBECONFIG=…` line), driven through the real engine where it matters: incidents
//! in, outcomes out, the cluster checked afterwards. Each test works in its own namespace.
//!
//! The webhook and Prometheus tests need no cluster: they talk to small HTTP servers written
//! here (hand-rolled HTTP/1.1 on a tokio listener), and run everywhere.
//!
//! Without `KUBECONFIG` the cluster tests are skipped with a note; with
//! `REMEDIATOR_TEST_REQUIRE_SERVICES` set a missing `KUBECONFIG` fails them instead
//! (`common::k8s::kubeconfig`, which also refuses a kubeconfig that is not on loopback).

mod common;
#[path = "common/executor_suite.rs"]
mod executor_suite;

use axum::body::Body as AxumBody;
use axum::extract::{Request as AxumRequest, State};
use axum::response::{IntoResponse, Response as AxumResponse};
use chrono::{TimeZone, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use remediator::clock::{Clock, ManualClock, SystemClock};
use remediator::engine::{Engine, EventIds, Settings};
use remediator::executor::kubernetes::{KubeExecutorOptions, KubernetesExecutor};
use remediator::executor::simulated::SimulatedExecutor;
use remediator::executor::{ExecContext, Executor};
use remediator::guardrails::memory::MemoryStore;
use remediator::guardrails::Answer;
use remediator::metrics::Metrics;
use remediator::outcome::{Decision, Outcome};
use remediator::runbook::template::{Template, Vars};
use remediator::runbook::{Action, Catalogue, CheckName, CheckSpec, Replicas};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// Cluster access

/// A client for the test cluster, or `None` (skip, after a note) when `KUBECONFIG` is unset;
/// `common::k8s` also refuses a kubeconfig that does not point at a loopback test cluster.
async fn cluster() -> Option<Client> {
    common::k8s::kubeconfig()?;
    Some(common::k8s::client().await)
}

/// A fresh namespace of one test, deleted in the background by [`Ns::cleanup`].
struct Ns {
    client: Client,
    name: String,
}

impl Ns {
    async fn new(client: &Client, prefix: &str) -> Self {
        Self {
            client: client.clone(),
            name: common::k8s::create_namespace(client, prefix).await,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    async fn cleanup(self) {
        common::k8s::delete_namespace(&self.client, &self.name).await;
    }
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]}
            }
        }
    }))
    .unwrap()
}

/// Poll `f` every 100 ms until it returns `Some`, or panic after `secs`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Create a deployment and wait until all its replicas are available.
async fn running(ns: &Ns, name: &str, replicas: i32, image: &str) -> Deployment {
    let api: Api<Deployment> = ns.api();
    api.create(&PostParams::default(), &deployment(name, replicas, image))
        .await
        .expect("create deployment");
    rolled_out(ns, name).await
}

async fn rolled_out(ns: &Ns, name: &str) -> Deployment {
    let api: Api<Deployment> = ns.api();
    eventually(&format!("deployment {name} rolled out"), 30, || async {
        let d = api.get(name).await.ok()?;
        let want = d.spec.as_ref()?.replicas.unwrap_or(1);
        let s = d.status.as_ref()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas.unwrap_or(0) == want
            && s.replicas.unwrap_or(0) == want
            && s.available_replicas.unwrap_or(0) == want
            && s.ready_replicas.unwrap_or(0) == want;
        done.then_some(d)
    })
    .await
}

async fn pods_of(ns: &Ns, app: &str) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn options() -> KubeExecutorOptions {
    KubeExecutorOptions {
        default_check_timeout: Duration::from_secs(30),
        ..KubeExecutorOptions::default()
    }
}

/// An executor whose client never reaches a cluster: for webhook, Prometheus and clock tests.
fn detached(opts: KubeExecutorOptions) -> KubernetesExecutor {
    let cfg = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    KubernetesExecutor::new(Client::try_from(cfg).unwrap(), opts).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The engine

struct Rig {
    engine: Engine,
    n: AtomicU64,
}

fn rig(runbooks: &str, executor: Arc<dyn Executor>) -> Rig {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine = Engine::new(
        Arc::new(Catalogue::from_yaml(runbooks, "test").expect("runbooks load")),
        Arc::new(MemoryStore::new(Arc::clone(&clock))),
        executor,
        clock,
        Settings::default(),
        Metrics::new(),
        EventIds::Random,
    );
    Rig {
        engine,
        n: AtomicU64::new(0),
    }
}

impl Rig {
    async fn send(&self, incident: Value) -> Outcome {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let h = self
            .engine
            .handle(incident.to_string().as_bytes(), None, &format!("attempt-{n}"))
            .await
            .expect("handled");
        assert_eq!(h.outcomes.len(), 1, "one outcome per incident");
        let o = h.outcomes.into_iter().next().unwrap();
        common::schema::assert_valid_outcome(&serde_json::to_value(&o).unwrap());
        o
    }
}

fn incident(id: &str, root_cause: &str, service: &str, context: Value) -> Value {
    json!({"id": id, "root_cause": root_cause, "confidence": 0.95, "service": service, "context": context})
}

fn check<'a>(o: &'a Outcome, name: &str) -> &'a remediator::outcome::CheckOutcome {
    o.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {:?}", o.checks))
}

const RESTART_POD: &str = r#"
runbooks:
  restart-pod:
    risk: LOW
    triggers: [CrashLoopBackOff]
    min_confidence: 0.8
    pre_checks:
      - replicas_greater_than_one
      - recent_restarts_less_than_three
    action: kubectl delete pod {pod_name} -n {namespace}
    post_checks:
      - {name: pod_becomes_ready, timeout_seconds: 30}
    rollback: null
"#;

// ---------------------------------------------------------------------------------------------
// A hand-rolled HTTP/1.1 server: webhook receiver and fake Prometheus

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn query_param(&self, key: &str) -> Option<String> {
        let u = reqwest::Url::parse(&format!("http://x{}", self.target)).ok()?;
        u.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> (u16, String) + Send + Sync>;

struct FakeHttp {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHttp {
    async fn start(handler: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let rec = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, Arc::clone(&handler), Arc::clone(&rec)));
            }
        });
        Self { addr, requests, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, handler: Handler, rec: Arc<Mutex<Vec<Recorded>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, target) = (
            first.next().unwrap_or("").to_string(),
            first.next().unwrap_or("").to_string(),
        );
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = buf[head_end + 4..head_end + 4 + len].to_vec();
        buf.drain(..head_end + 4 + len);
        let req = Recorded {
            method,
            target,
            headers,
            body,
        };
        let (status, text) = handler(&req);
        rec.lock().unwrap().push(req);
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A Prometheus instant-query answer with one vector sample.
fn prom_vector(v: f64) -> String {
    json!({"status": "success", "data": {"resultType": "vector",
        "result": [{"metric": {"service": "x"}, "value": [1.7e9, v.to_string()]}]}})
    .to_string()
}

/// A fake Prometheus answering every query with the current value of `value` (f64 bits).
async fn fake_prometheus(value: Arc<AtomicU64>) -> FakeHttp {
    FakeHttp::start(move |r| {
        if r.target.starts_with("/api/v1/query?") {
            (200, prom_vector(f64::from_bits(value.load(Ordering::Relaxed))))
        } else {
            (404, "{}".into())
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// A transport that counts requests

/// Every request of a [`kube::Client`] built by [`counting_client`] passes through this Router
/// (a tower `Service`), which counts it and forwards it to the real API server.
#[derive(Clone)]
struct Forward {
    inner: Client,
    count: Arc<AtomicUsize>,
}

async fn forward(State(f): State<Forward>, req: AxumRequest) -> AxumResponse {
    f.count.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let req = axum::http::Request::from_parts(parts, kube::client::Body::from(bytes));
    match f.inner.send(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            AxumResponse::from_parts(parts, AxumBody::new(body))
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn counting_client(inner: Client) -> (Client, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new().fallback(forward).with_state(Forward {
        inner,
        count: Arc::clone(&count),
    });
    (Client::new(router, "default"), count)
}

// ---------------------------------------------------------------------------------------------
// Cluster tests through the engine

#[tokio::test]
async fn crash_looping_pod_is_deleted_by_uid_and_its_replacement_verified() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "crash").await;
    running(&ns, "api", 3, "registry.example/api:1").await;
    let victim = pods_of(&ns, "api").await.remove(0);
    let (name, old_uid) = (victim.metadata.name.clone().unwrap(), uid(&victim));
    ns.api::<Pod>()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"chaos": "crashloop"}}})),
        )
        .await
        .unwrap();
    // kwok's crashloop stage: CrashLoopBackOff with restartCount rising every 2-7 s.
    eventually("the pod to crash-loop", 30, || async {
        let p = ns.api::<Pod>().get(&name).await.ok()?;
        let restarts: i32 = p.status?.container_statuses?.iter().map(|c| c.restart_count).sum();
        (restarts >= 1).then_some(())
    })
    .await;

    let executor = Arc::new(KubernetesExecutor::new(client.clone(), options()).unwrap());
    // The restart ceiling is read from the cluster: one restart is over a limit of one.
    let strict = {
        let mut s = CheckSpec::named(CheckName::RecentRestartsLessThanThree);
        s.max_restarts = Some(1);
        s
    };
    let inc = remediator::incident::parse(
        incident("probe", "x", "api", json!({"namespace": ns.name, "pod_name": name}))
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let vars = Vars::from_incident(&inc);
    let action = Action::DeletePod {
        namespace: ns.name.clone(),
        pod: name.clone(),
    };
    let r = executor
        .check(&strict, &executor_suite::ctx(&inc, &action, &vars, "probe"))
        .await;
    assert!(!r.passed && r.detail.contains("restarted"), "{}", r.detail);

    let rig = rig(RESTART_POD, executor.clone());
    let o = rig
        .send(incident(
            "crash-1",
            "CrashLoopBackOff",
            "api",
            json!({"namespace": ns.name, "pod_name": name}),
        ))
        .await;
    assert_eq!(o.decision, Decision::Executed, "{}", o.reason);
    assert_eq!(o.success, Some(true), "{} {:?}", o.reason, o.checks);
    assert!(o.checks.iter().all(|c| c.passed), "{:?}", o.checks);
    assert!(
        check(&o, "pod_becomes_ready").detail.contains("is gone"),
        "{:?}",
        o.checks
    );
    // The old pod (by uid) is gone and the deployment is back to 3 Ready pods, none crashing.
    let pods = pods_of(&ns, "api").await;
    assert!(pods.iter().all(|p| uid(p) != old_uid), "old pod still there");
    assert_eq!(pods.len(), 3);
    let d = rolled_out(&ns, "api").await;
    assert_eq!(d.status.unwrap().ready_replicas, Some(3));
    ns.cleanup().await;
}

#[tokio::test]
async fn the_only_replica_is_never_restarted() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "solo").await;
    running(&ns, "solo", 1, "registry.example/solo:1").await;
    let pod = pods_of(&ns, "solo").await.remove(0);
    let executor = Arc::new(KubernetesExecutor::new(client.clone(), options()).unwrap());
    let rig = rig(RESTART_POD, executor);
    let o = rig
        .send(incident(
            "solo-1",
            "CrashLoopBackOff",
            "solo",
            json!({"namespace": ns.name, "pod_name": pod.metadata.name}),
        ))
        .await;
    assert_eq!(o.decision, Decision::Aborted, "{}", o.reason);
    assert!(o.reason.contains("replicas_greater_than_one"), "{}", o.reason);
    let c = check(&o, "replicas_greater_than_one");
    assert!(!c.passed && c.detail.contains("has 1 replica"), "{}", c.detail);
    let after = pods_of(&ns, "solo").await;
    assert_eq!(after.len(), 1);
    assert_eq!(uid(&after[0]), uid(&pod), "the pod was not touched");
    ns.cleanup().await;
}

#[tokio::test]
async fn scale_up_is_verified_and_a_failed_scale_up_is_rolled_back() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "scale").await;
    running(&ns, "web", 3, "registry.example/web:1").await;
    running(&ns, "worker", 3, "registry.example/worker:1").await;
    // The error rate stays high whatever we do: the second runbook's verification fails.
    let value = Arc::new(AtomicU64::new(0.9f64.to_bits()));
    let prom = fake_prometheus(Arc::clone(&value)).await;
    let executor = Arc::new(
        KubernetesExecutor::new(
            client.clone(),
            KubeExecutorOptions {
                prometheus_url: Some(prom.url()),
                ..options()
            },
        )
        .unwrap(),
    );
    let runbooks = r#"
runbooks:
  scale-up:
    risk: LOW
    triggers: [high_cpu]
    min_confidence: 0.7
    pre_checks:
      - {name: current_replicas_below_max, max_replicas: 10}
    action: kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}
    post_checks:
      - {name: deployment_rolled_out, timeout_seconds: 30}
      - metrics_improved
    rollback: kubectl scale deployment {deployment} --replicas={old_replicas} -n {namespace}
  scale-up-verified-by-prometheus:
    risk: LOW
    triggers: [queue_backlog]
    min_confidence: 0.7
    action: {kind: scale_deployment, namespace: "{namespace}", deployment: "{deployment}", replicas: "{new_replicas}"}
    post_checks:
      - {name: prometheus_query, query: 'sum(rate(errors{service="{service}"}[5m]))', below: 0.5, timeout_seconds: 1}
    rollback: {kind: scale_deployment, namespace: "{namespace}", deployment: "{deployment}", replicas: "{old_replicas}"}
"#;
    let rig = rig(runbooks, executor);

    let o = rig
        .send(incident(
            "scale-1",
            "high_cpu",
            "web",
            json!({"namespace": ns.name, "deployment": "web", "new_replicas": 5}),
        ))
        .await;
    assert_eq!(o.decision, Decision::Executed, "{}", o.reason);
    assert_eq!(o.success, Some(true), "{} {:?}", o.reason, o.checks);
    assert!(o.reason.contains("from 3 to 5"), "{}", o.reason);
    let fallback = check(&o, "metrics_improved");
    assert!(
        fallback.detail.contains("no Prometheus query configured; fell back"),
        "{}",
        fallback.detail
    );
    let d = rolled_out(&ns, "web").await;
    assert_eq!(d.status.unwrap().available_replicas, Some(5));

    let o = rig
        .send(incident(
            "scale-2",
            "queue_backlog",
            "worker",
            json!({"namespace": ns.name, "deployment": "worker", "new_replicas": 5, "old_replicas": 9}),
        ))
        .await;
    assert_eq!(o.decision, Decision::Executed, "{}", o.reason);
    assert_eq!(o.success, Some(false));
    assert!(o.rolled_back, "{}", o.reason);
    let c = check(&o, "prometheus_query");
    assert!(!c.passed && c.detail.contains("= 0.9 (not below 0.5)"), "{}", c.detail);
    // The rollback used the count read from the cluster (3), not the incident's stale 9.
    assert!(o.reason.contains("from 5 to 3"), "{}", o.reason);
    let d = rolled_out(&ns, "worker").await;
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    let queries: Vec<String> = prom.requests().iter().filter_map(|r| r.query_param("query")).collect();
    assert!(
        queries.contains(&r#"sum(rate(errors{service="worker"}[5m]))"#.to_string()),
        "{queries:?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn rollout_undo_restores_the_previous_template() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "undo").await;
    running(&ns, "api", 2, "registry.example/api:1").await;
    let executor = Arc::new(KubernetesExecutor::new(client.clone(), options()).unwrap());
    // With one revision there is nothing to roll back to.
    let inc = remediator::incident::parse(
        incident("probe", "x", "api", json!({"namespace": ns.name, "deployment": "api"}))
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let vars = Vars::from_incident(&inc);
    let undo = Action::RolloutUndo {
        namespace: ns.name.clone(),
        deployment: "api".into(),
        pin: None,
    };
    let c = executor_suite::ctx(&inc, &undo, &vars, "probe");
    let r = executor
        .check(&CheckSpec::named(CheckName::PreviousRevisionAvailable), &c)
        .await;
    assert!(!r.passed && r.detail.contains("no previous revision"), "{}", r.detail);
    let e = executor.execute(&undo, &c).await.expect_err("nothing to undo");
    assert!(e.0.contains("no previous revision"), "{e}");

    ns.api::<Deployment>()
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "main", "image": "registry.example/api:2"}]}}}})),
        )
        .await
        .unwrap();
    let d = rolled_out(&ns, "api").await;
    assert_eq!(image_of(&d), "registry.example/api:2");

    let runbooks = r#"
runbooks:
  rollback-deployment:
    risk: HIGH
    mode: auto
    triggers: [error_rate_spike_after_deploy]
    min_confidence: 0.9
    pre_checks:
      - deployment_exists
      - previous_revision_available
    action: kubectl rollout undo deployment {deployment} -n {namespace}
    post_checks:
      - {name: deployment_rolled_out, timeout_seconds: 30}
    rollback: kubectl rollout undo deployment {deployment} -n {namespace}
"#;
    let rig = rig(runbooks, executor);
    let o = rig
        .send(incident(
            "undo-1",
            "error_rate_spike_after_deploy",
            "api",
            json!({"namespace": ns.name, "deployment": "api"}),
        ))
        .await;
    assert_eq!(o.decision, Decision::Executed, "{}", o.reason);
    assert_eq!(o.success, Some(true), "{} {:?}", o.reason, o.checks);
    assert!(o.reason.contains("from revision 2"), "{}", o.reason);
    let d = rolled_out(&ns, "api").await;
    assert_eq!(image_of(&d), "registry.example/api:1");
    // The controller re-labels the old ReplicaSet as revision 3; no fourth one was created.
    let rss = ns.api::<ReplicaSet>().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rss.len(), 2, "the old ReplicaSet was reused");
    ns.cleanup().await;
}

/// Deploy `image` as the new template of `name` and wait for the rollout.
async fn deploy(ns: &Ns, name: &str, image: &str) -> Deployment {
    ns.api::<Deployment>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "main", "image": image}]}}}})),
        )
        .await
        .expect("deploy");
    let d = rolled_out(ns, name).await;
    assert_eq!(image_of(&d), image);
    d
}

fn revision(d: &Deployment) -> Option<String> {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned()
}

/// An approval of `rollout undo` is bound to the revisions it would undo and
/// restore. Asked for at revision 2 (restoring 1), then a deploy makes revision 3: the approved
/// undo would now restore revision 2, so it is refused ("ask again") and the deployment is left
/// as deployed. Asked again and approved with nothing in between, it runs and restores.
#[tokio::test]
async fn an_approved_undo_is_refused_after_a_deploy_and_runs_without_one() {
    let Some(client) = cluster().await else { return };
    tokio::time::timeout(Duration::from_secs(240), async {
        let ns = Ns::new(&client, "undo-pin").await;
        running(&ns, "api", 2, "registry.example/api:1").await;
        deploy(&ns, "api", "registry.example/api:2").await;
        let executor = Arc::new(KubernetesExecutor::new(client.clone(), options()).unwrap());
        let runbooks = r#"
runbooks:
  rollback-deployment:
    risk: HIGH
    mode: approval
    triggers: [error_rate_spike_after_deploy]
    min_confidence: 0.9
    pre_checks:
      - deployment_exists
      - previous_revision_available
    action: kubectl rollout undo deployment {deployment} -n {namespace}
    post_checks:
      - {name: deployment_rolled_out, timeout_seconds: 30}
"#;
        let rig = rig(runbooks, executor);
        let ask = |id: &str| {
            incident(
                id,
                "error_rate_spike_after_deploy",
                "api",
                json!({"namespace": ns.name, "deployment": "api"}),
            )
        };
        let approve = |id: String| {
            let engine = &rig.engine;
            async move {
                let pending = engine.store().pending_approvals().await.expect("pending approvals");
                let hash = pending
                    .iter()
                    .find(|a| a.id == id)
                    .map(|a| a.action_hash.clone())
                    .expect("the approval is pending");
                let answer = Answer {
                    approve: true,
                    approver: "alice".into(),
                    action_hash: Some(hash),
                };
                let res = engine.answer(&id, &answer).await.expect("answered");
                assert!(res.accepted, "{}", res.reason);
                assert_eq!(res.outcomes.len(), 1);
                res.outcomes.into_iter().next().unwrap()
            }
        };

        let o = rig.send(ask("pin-1")).await;
        assert_eq!(o.decision, Decision::ApprovalRequired, "{}", o.reason);
        let view = o.action.clone().expect("the approval shows its action");
        let first = o.approval_id.clone().expect("approval id");

        // A deploy before the answer: revision 3, an undo would now restore revision 2.
        let deployed = deploy(&ns, "api", "registry.example/api:3").await;
        assert_eq!(revision(&deployed).as_deref(), Some("3"));
        let o = approve(first).await;
        assert_eq!(o.decision, Decision::Aborted, "{}", o.reason);
        assert!(o.reason.contains("now renders a different action"), "{}", o.reason);
        assert!(o.reason.contains("--to-revision=2"), "{}", o.reason);
        assert!(o.reason.contains("not executed (ask again)"), "{}", o.reason);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = rolled_out(&ns, "api").await;
        assert_eq!(image_of(&d), "registry.example/api:3", "the deployment is as deployed");
        assert_eq!(revision(&d).as_deref(), Some("3"));
        // What was asked for showed (and hashed) the revisions it would undo and restore.
        assert_eq!(
            view.display,
            format!("kubectl rollout undo deployment api --to-revision=1 -n {}", ns.name)
        );
        assert_eq!(view.params["undone_from_revision"], 2);

        // Asked again and approved with nothing in between: it runs, restoring revision 2.
        let o = rig.send(ask("pin-2")).await;
        assert_eq!(o.decision, Decision::ApprovalRequired, "{}", o.reason);
        let second = o.approval_id.clone().expect("approval id");
        let o = approve(second).await;
        assert_eq!(o.decision, Decision::Executed, "{}", o.reason);
        assert_eq!(o.success, Some(true), "{} {:?}", o.reason, o.checks);
        assert!(
            o.reason.contains("from revision 3 to the template of revision 2"),
            "{}",
            o.reason
        );
        assert_eq!(o.action.as_ref().unwrap().params["restored_revision"], 2);
        let d = rolled_out(&ns, "api").await;
        assert_eq!(image_of(&d), "registry.example/api:2");
        ns.cleanup().await;
    })
    .await
    .expect("the test finished within 240 s");
}

#[tokio::test]
async fn name_injection_is_aborted_without_a_single_api_call() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "inject").await;
    running(&ns, "api", 2, "registry.example/api:1").await;
    let (counted, count) = counting_client(client.clone());
    let executor = Arc::new(KubernetesExecutor::new(counted, options()).unwrap());
    let rig = rig(RESTART_POD, executor.clone());
    let before = count.load(Ordering::SeqCst);
    for (i, hostile) in ["api; kubectl delete ns x", "../x", "api/../../namespaces/kube-system"]
        .iter()
        .enumerate()
    {
        let o = rig
            .send(incident(
                &format!("inject-{i}"),
                "CrashLoopBackOff",
                "api",
                json!({"namespace": ns.name, "pod_name": hostile}),
            ))
            .await;
        assert_eq!(o.decision, Decision::Aborted, "{}", o.reason);
        assert!(o.reason.contains("context.pod_name"), "{}", o.reason);
        assert!(o.checks.is_empty(), "no check ran: {:?}", o.checks);
    }
    let hostile_ns = rig
        .send(incident(
            "inject-ns",
            "CrashLoopBackOff",
            "api",
            json!({"namespace": "kube-system/../x", "pod_name": "api-1"}),
        ))
        .await;
    assert_eq!(hostile_ns.decision, Decision::Aborted, "{}", hostile_ns.reason);
    assert_eq!(
        count.load(Ordering::SeqCst),
        before,
        "the executor's transport saw no request"
    );
    // Built in code, past the template layer: the executor refuses before calling, too.
    let inc = remediator::incident::parse(incident("probe", "x", "api", json!({})).to_string().as_bytes()).unwrap();
    let vars = Vars::from_incident(&inc);
    let bad = Action::DeletePod {
        namespace: ns.name.clone(),
        pod: "../x".into(),
    };
    let e = executor
        .execute(&bad, &executor_suite::ctx(&inc, &bad, &vars, "probe"))
        .await
        .expect_err("refused");
    assert!(e.0.contains("refusing to call the API"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), before);
    // The counter does see traffic: a legitimate check goes through it.
    let ok = Action::RolloutRestart {
        namespace: ns.name.clone(),
        deployment: "api".into(),
    };
    let r = executor
        .check(
            &CheckSpec::named(CheckName::DeploymentExists),
            &executor_suite::ctx(&inc, &ok, &vars, "probe"),
        )
        .await;
    assert!(r.passed, "{}", r.detail);
    assert!(
        count.load(Ordering::SeqCst) > before,
        "the counting transport is in the path"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn rollout_restart_is_declarative_and_patch_is_fenced() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "restart").await;
    running(&ns, "api", 2, "registry.example/api:1").await;
    let executor = KubernetesExecutor::new(client.clone(), options()).unwrap();
    let inc = remediator::incident::parse(incident("probe", "x", "api", json!({})).to_string().as_bytes()).unwrap();
    let vars = Vars::from_incident(&inc);
    let restart = Action::RolloutRestart {
        namespace: ns.name.clone(),
        deployment: "api".into(),
    };
    let c = executor_suite::ctx(&inc, &restart, &vars, "restart-pod-attempt-1");
    let r = executor.execute(&restart, &c).await.unwrap();
    assert!(r.detail.contains("rollout restart"), "{}", r.detail);
    let generation = ns.api::<Deployment>().get("api").await.unwrap().metadata.generation;
    let again = executor.execute(&restart, &c).await.unwrap();
    assert!(again.detail.contains("nothing changed"), "{}", again.detail);
    let d = ns.api::<Deployment>().get("api").await.unwrap();
    assert_eq!(d.metadata.generation, generation, "running it twice changed nothing");
    let stamped = d.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(
        stamped.get("remediator.io/restarted-by").map(String::as_str),
        Some("restart-pod-attempt-1")
    );
    let r = executor
        .check(&CheckSpec::named(CheckName::DeploymentRolledOut), &c)
        .await;
    assert!(r.passed, "{}", r.detail);

    let patch = Action::Patch {
        resource: "deployments".into(),
        namespace: ns.name.clone(),
        name: "api".into(),
        patch: json!({"metadata": {"labels": {"team": "platform"}}}),
    };
    let r = executor
        .execute(&patch, &executor_suite::ctx(&inc, &patch, &vars, "p"))
        .await
        .unwrap();
    assert!(r.detail.contains("merge-patched deployments"), "{}", r.detail);
    let d = ns.api::<Deployment>().get("api").await.unwrap();
    assert_eq!(
        d.metadata.labels.unwrap().get("team").map(String::as_str),
        Some("platform")
    );
    let stale = Action::Patch {
        resource: "deployments".into(),
        namespace: ns.name.clone(),
        name: "api".into(),
        patch: json!({"metadata": {"resourceVersion": "1", "labels": {"team": "other"}}}),
    };
    let e = executor
        .execute(&stale, &executor_suite::ctx(&inc, &stale, &vars, "p2"))
        .await
        .expect_err("a stale resourceVersion conflicts");
    assert!(e.0.contains("409"), "{e}");
    ns.cleanup().await;
}

#[tokio::test]
async fn executor_suite_on_kubernetes() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "suite").await;
    running(&ns, "web", 3, "registry.example/web:1").await;
    let pod = pods_of(&ns, "web").await.remove(0);
    let executor = KubernetesExecutor::new(client.clone(), options()).unwrap();
    let fx = executor_suite::Fixture {
        namespace: ns.name.clone(),
        deployment: "web".into(),
        pod: pod.metadata.name.clone().unwrap(),
        replicas: 3,
        observes: true,
    };
    executor_suite::run(&executor, &fx).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn executor_suite_on_the_simulated_cluster() {
    let fx = executor_suite::Fixture {
        namespace: "production".into(),
        deployment: "web".into(),
        pod: "web-1".into(),
        replicas: 3,
        observes: false,
    };
    executor_suite::run(&SimulatedExecutor::new(), &fx).await;
}

// ---------------------------------------------------------------------------------------------
// Webhook and Prometheus (no cluster)

#[tokio::test]
async fn webhook_action_posts_json_and_a_non_2xx_answer_fails_the_action() {
    let server = FakeHttp::start(|r| {
        if r.target == "/v1/clean/huge" {
            // Applied, but the answer is over the 1 MiB cap.
            (200, "x".repeat(1024 * 1024 + 1))
        } else if r.target.starts_with("/v1/clean/") {
            (200, r#"{"cleaned": true}"#.into())
        } else if r.target.starts_with("/api/v1/query?") {
            (200, prom_vector(42.0))
        } else {
            (500, r#"{"error": "boom"}"#.into())
        }
    })
    .await;
    let executor = Arc::new(detached(KubeExecutorOptions {
        prometheus_url: Some(server.url()),
        ..options()
    }));
    let runbooks = format!(
        r#"
runbooks:
  clear-disk-cache:
    risk: LOW
    triggers: [disk_usage_high]
    min_confidence: 0.8
    action:
      kind: webhook
      url: "{}/v1/clean/{{service}}"
      body: {{directories: [tmp, logs], incident: "{{incident_id}}"}}
    post_checks:
      - {{name: prometheus_query, query: 'max(disk_usage_percent{{service="{{service}}"}})', below: 70, timeout_seconds: 5}}
    rollback: null
"#,
        server.url()
    );
    let rig = rig(&runbooks, executor.clone());
    let o = rig.send(incident("disk-1", "disk_usage_high", "api", json!({}))).await;
    assert_eq!(o.decision, Decision::Executed, "{}", o.reason);
    assert_eq!(o.success, Some(true), "{} {:?}", o.reason, o.checks);
    let reqs = server.requests();
    let hook = reqs
        .iter()
        .find(|r| r.target == "/v1/clean/api")
        .expect("webhook called");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.header("content-type"), Some("application/json"));
    assert!(hook
        .header("idempotency-key")
        .is_some_and(|k| k.starts_with("clear-disk-cache-")));
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body, json!({"directories": ["tmp", "logs"], "incident": "disk-1"}));
    assert!(check(&o, "prometheus_query").detail.contains("= 42 (below 70)"));
    // A 2xx with a body over the cap: the change was applied, so the engine goes on to the
    // post-checks (not a failure of the action), and the outcome notes the unread body.
    let o = tokio::time::timeout(
        Duration::from_secs(30),
        rig.send(incident("disk-2", "disk_usage_high", "huge", json!({}))),
    )
    .await
    .expect("bounded");
    assert_eq!(
        (o.decision, o.success),
        (Decision::Executed, Some(true)),
        "{} {:?}",
        o.reason,
        o.checks
    );
    assert!(
        o.reason
            .contains("answered HTTP 200 (body not read: response body larger than 1048576 bytes"),
        "{}",
        o.reason
    );
    assert!(check(&o, "prometheus_query").passed);

    let inc = remediator::incident::parse(incident("probe", "x", "api", json!({})).to_string().as_bytes()).unwrap();
    let vars = Vars::from_incident(&inc);
    let failing = Action::Webhook {
        url: format!("{}/v1/failover/db", server.url()),
        method: "PUT".into(),
        body: None,
        timeout_seconds: 2,
    };
    let e = executor
        .execute(&failing, &executor_suite::ctx(&inc, &failing, &vars, "w"))
        .await
        .expect_err("HTTP 500 is a failure");
    assert!(e.0.contains("500") && e.0.contains("boom"), "{e}");
    // Nobody listening: an error naming the cause, quickly.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/x", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = Action::Webhook {
        url: dead,
        method: "POST".into(),
        body: Some(json!({})),
        timeout_seconds: 2,
    };
    let e = executor
        .execute(&unreachable, &executor_suite::ctx(&inc, &unreachable, &vars, "w2"))
        .await
        .expect_err("unreachable");
    assert!(e.0.contains("failed"), "{e}");
}

fn query_check(name: CheckName, query: Option<&str>, below: Option<f64>, above: Option<f64>) -> CheckSpec {
    let mut s = CheckSpec::named(name);
    s.query = query.map(|q| Template::parse(q).unwrap());
    s.below = below;
    s.above = above;
    s
}

async fn run_check(executor: &KubernetesExecutor, spec: &CheckSpec) -> remediator::executor::CheckResult {
    let inc =
        remediator::incident::parse(incident("probe", "x", "checkout", json!({})).to_string().as_bytes()).unwrap();
    let vars = Vars::from_incident(&inc);
    let action = Action::Webhook {
        url: "http://127.0.0.1:9/x".into(),
        method: "POST".into(),
        body: None,
        timeout_seconds: 1,
    };
    let ctx = ExecContext {
        incident: &inc,
        runbook: "test",
        action: &action,
        vars: &vars,
        action_id: "probe",
        rollback: false,
    };
    executor.check(spec, &ctx).await
}

#[tokio::test]
async fn prometheus_checks_compare_thresholds_and_fail_when_they_cannot_observe() {
    let value = Arc::new(AtomicU64::new(0.2f64.to_bits()));
    let prom = fake_prometheus(Arc::clone(&value)).await;
    let executor = detached(KubeExecutorOptions {
        prometheus_url: Some(prom.url()),
        poll_interval: Duration::from_millis(50),
        ..options()
    });
    let q = r#"sum(rate(http_errors{service="{service}"}[5m]))"#;

    let r = run_check(
        &executor,
        &query_check(CheckName::PrometheusQuery, Some(q), Some(0.5), None),
    )
    .await;
    assert!(r.passed, "{}", r.detail);
    assert!(
        r.detail
            .contains(r#"sum(rate(http_errors{service="checkout"}[5m])) = 0.2 (below 0.5)"#),
        "{}",
        r.detail
    );
    let mut above = query_check(CheckName::ErrorRateNormalized, Some(q), None, Some(0.5));
    above.timeout = Some(Duration::from_millis(300));
    let r = run_check(&executor, &above).await;
    assert!(!r.passed && r.detail.contains("not above 0.5"), "{}", r.detail);
    let r = run_check(
        &executor,
        &query_check(CheckName::MetricsImproved, Some(q), None, Some(0.1)),
    )
    .await;
    assert!(r.passed, "{}", r.detail);

    // A pre-check looks once; with a timeout it polls until the value comes right.
    value.store(0.9f64.to_bits(), Ordering::Relaxed);
    let once = query_check(CheckName::PrometheusQuery, Some(q), Some(0.5), None);
    let r = run_check(&executor, &once).await;
    assert!(!r.passed && r.detail.contains("= 0.9 (not below 0.5)"), "{}", r.detail);
    let mut waiting = once.clone();
    waiting.timeout = Some(Duration::from_secs(5));
    let flip = {
        let value = Arc::clone(&value);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            value.store(0.1f64.to_bits(), Ordering::Relaxed);
        })
    };
    let r = run_check(&executor, &waiting).await;
    flip.await.unwrap();
    assert!(r.passed && r.detail.contains("after"), "{}", r.detail);

    // A bare error_rate_normalized (as the reference catalogue writes it) runs the executor's
    // default query.
    let with_default = detached(KubeExecutorOptions {
        prometheus_url: Some(prom.url()),
        error_rate_query: Some(r#"sum(rate(http_errors{service="{service}"}[5m]))"#.into()),
        ..options()
    });
    value.store(0.01f64.to_bits(), Ordering::Relaxed);
    let r = run_check(&with_default, &CheckSpec::named(CheckName::ErrorRateNormalized)).await;
    assert!(r.passed, "{}", r.detail);
    assert!(
        r.detail.starts_with(
            r#"default error-rate query: sum(rate(http_errors{service="checkout"}[5m])) = 0.01 (below 0.05)"#
        ),
        "{}",
        r.detail
    );
    let cfg = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let bad_template = KubernetesExecutor::new(
        Client::try_from(cfg.clone()).unwrap(),
        KubeExecutorOptions {
            error_rate_query: Some("rate(x{service=\"{svc}\"}[5m])".into()),
            ..options()
        },
    );
    assert!(bad_template
        .unwrap_err()
        .to_string()
        .contains("unknown template variable {svc}"));
    let bad_url = KubernetesExecutor::new(
        Client::try_from(cfg).unwrap(),
        KubeExecutorOptions {
            prometheus_url: Some("prometheus:9090".into()),
            ..options()
        },
    );
    assert!(bad_url.unwrap_err().to_string().starts_with("prometheus_url: "));

    // No query, no URL, no server, no samples: fail, each saying why.
    let r = run_check(
        &executor,
        &query_check(CheckName::ErrorRateNormalized, None, None, None),
    )
    .await;
    assert!(!r.passed);
    assert_eq!(r.detail, "no Prometheus query configured");
    let r = run_check(&executor, &query_check(CheckName::PrometheusQuery, None, None, None)).await;
    assert_eq!((r.passed, r.detail.as_str()), (false, "no Prometheus query configured"));
    let no_url = detached(options());
    let r = run_check(
        &no_url,
        &query_check(CheckName::PrometheusQuery, Some(q), Some(1.0), None),
    )
    .await;
    assert!(
        !r.passed && r.detail.contains("no Prometheus URL configured"),
        "{}",
        r.detail
    );
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = detached(KubeExecutorOptions {
        prometheus_url: Some(dead),
        ..options()
    });
    let r = run_check(
        &unreachable,
        &query_check(CheckName::PrometheusQuery, Some(q), Some(1.0), None),
    )
    .await;
    assert!(!r.passed && r.detail.contains("unreachable"), "{}", r.detail);
    let empty = FakeHttp::start(|_| {
        (
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into(),
        )
    })
    .await;
    let e = detached(KubeExecutorOptions {
        prometheus_url: Some(empty.url()),
        ..options()
    });
    let r = run_check(&e, &query_check(CheckName::PrometheusQuery, Some(q), Some(1.0), None)).await;
    assert!(!r.passed && r.detail.contains("no samples"), "{}", r.detail);
    let bad = FakeHttp::start(|_| {
        (
            400,
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#.into(),
        )
    })
    .await;
    let e = detached(KubeExecutorOptions {
        prometheus_url: Some(bad.url()),
        ..options()
    });
    let r = run_check(&e, &query_check(CheckName::PrometheusQuery, Some(q), Some(1.0), None)).await;
    assert!(!r.passed && r.detail.contains("bad_data: parse error"), "{}", r.detail);
}

#[tokio::test]
async fn off_peak_window_is_utc_and_wraps_past_midnight() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap());
    let executor = detached(KubeExecutorOptions {
        clock: Arc::new(clock.clone()),
        ..options()
    });
    let window = |start: Option<u8>, end: Option<u8>| {
        let mut s = CheckSpec::named(CheckName::OffPeakHours);
        s.start_hour = start;
        s.end_hour = end;
        s
    };
    let r = run_check(&executor, &window(None, None)).await;
    assert!(r.passed, "03:00 is inside 22-06: {}", r.detail);
    assert!(
        r.detail
            .contains("03:00 UTC is inside the off-peak window 22:00-06:00 UTC"),
        "{}",
        r.detail
    );
    clock.set(Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap());
    assert!(
        !run_check(&executor, &window(None, None)).await.passed,
        "the end hour is excluded"
    );
    clock.set(Utc.with_ymd_and_hms(2026, 11, 25, 22, 0, 0).unwrap());
    assert!(
        run_check(&executor, &window(None, None)).await.passed,
        "the start hour is included"
    );
    clock.set(Utc.with_ymd_and_hms(2026, 11, 25, 14, 30, 0).unwrap());
    assert!(!run_check(&executor, &window(None, None)).await.passed);
    assert!(run_check(&executor, &window(Some(12), Some(18))).await.passed);
    assert!(!run_check(&executor, &window(Some(15), Some(18))).await.passed);
}

#[tokio::test]
async fn scale_replicas_by_and_predictive_are_computed_from_the_cluster() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "predict").await;
    running(&ns, "api", 4, "registry.example/api:1").await;
    let executor = KubernetesExecutor::new(client.clone(), options()).unwrap();
    let inc = remediator::incident::parse(incident("probe", "x", "api", json!({})).to_string().as_bytes()).unwrap();
    let vars = Vars::from_incident(&inc);
    let scale = |replicas| Action::ScaleDeployment {
        namespace: ns.name.clone(),
        deployment: "api".into(),
        replicas,
    };
    // The predictive scaler (docs/design.md#scaling): 4 replicas at load 400, predicted 900 -> 10,
    // capped at 8.
    let a = scale(Replicas::Predictive {
        predicted_load: 900.0,
        current_load: 400.0,
        max_replicas: 8,
    });
    let r = executor
        .execute(&a, &executor_suite::ctx(&inc, &a, &vars, "s1"))
        .await
        .unwrap();
    assert!(r.detail.contains("from 4 to 8"), "{}", r.detail);
    // Scale up only: a lower prediction changes nothing.
    let a = scale(Replicas::Predictive {
        predicted_load: 100.0,
        current_load: 800.0,
        max_replicas: 20,
    });
    let r = executor
        .execute(&a, &executor_suite::ctx(&inc, &a, &vars, "s2"))
        .await
        .unwrap();
    assert!(r.detail.contains("already has 8"), "{}", r.detail);
    let a = Action::ScaleToZero {
        namespace: ns.name.clone(),
        deployment: "api".into(),
    };
    let r = executor
        .execute(&a, &executor_suite::ctx(&inc, &a, &vars, "s3"))
        .await
        .unwrap();
    assert_eq!(r.captured.get("old_replicas").map(String::as_str), Some("8"));
    let r = executor
        .check(
            &CheckSpec::named(CheckName::DeploymentRolledOut),
            &executor_suite::ctx(&inc, &a, &vars, "s3"),
        )
        .await;
    assert!(r.passed, "{}", r.detail);
    eventually("every pod gone", 30, || async {
        pods_of(&ns, "api").await.is_empty().then_some(())
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_scale_incident_asking_for_zero_or_past_the_cap_never_changes_the_deployment() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "scalecap").await;
    running(&ns, "web", 2, "registry.example/web:1").await;
    // The executor acts as deploy/'s ServiceAccount, granted deploy/rbac.yaml's Role in this
    // namespace only: the refusals below are remediator's own, not RBAC's.
    let (sa_namespace, sa_name) = grant_deploy_role(&client, &ns.name).await;
    let worker = common::k8s::client_as_service_account(&sa_namespace, &sa_name).await;
    // No Prometheus: the `rolled-back` runbook's query check cannot pass, so its rollback runs.
    let executor = Arc::new(KubernetesExecutor::new(worker, options()).unwrap());
    let runbooks = r#"
runbooks:
  scale-up:
    risk: LOW
    triggers: [high_cpu]
    min_confidence: 0.7
    max_per_hour: 100
    cooldown_minutes: 0
    pre_checks:
      - current_replicas_below_max
    action: kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}
    post_checks:
      - {name: deployment_rolled_out, timeout_seconds: 30}
    rollback: kubectl scale deployment {deployment} --replicas={old_replicas} -n {namespace}
  rolled-back:
    risk: LOW
    triggers: [queue_backlog]
    min_confidence: 0.7
    max_per_hour: 100
    cooldown_minutes: 0
    action: {kind: scale_deployment, replicas: "{new_replicas}", max_replicas: 4}
    post_checks:
      - {name: prometheus_query, query: 'up', below: 1}
    rollback: {kind: scale_deployment, replicas: "{old_replicas}"}
"#;
    let rig = rig(runbooks, executor);
    let deployments: Api<Deployment> = ns.api();
    let replicas = || async { deployments.get("web").await.unwrap().spec.unwrap().replicas };
    let send = |id: &str, root_cause: &str, n: u32| {
        rig.send(incident(
            id,
            root_cause,
            "web",
            // `max_replicas` in the context is not a cap anyone reads.
            json!({"namespace": ns.name, "deployment": "web", "new_replicas": n, "old_replicas": 9, "max_replicas": 10000}),
        ))
    };
    let bounded = |f| tokio::time::timeout(Duration::from_secs(60), f);

    for (id, n, why) in [
        (
            "zero",
            0,
            "0 replicas is refused: only a scale_to_zero action (HIGH risk) may scale to zero",
        ),
        ("cap-plus-one", 11, "11 replicas is above the runbook's max_replicas 10"),
        ("huge", 10000, "10000 replicas is above the runbook's max_replicas 10"),
    ] {
        let o = bounded(send(id, "high_cpu", n)).await.expect("bounded");
        assert_eq!(o.decision, Decision::Aborted, "{id}: {}", o.reason);
        assert!(o.reason.contains(why), "{id}: {}", o.reason);
        assert_eq!(replicas().await, Some(2), "{id}: the deployment was not touched");
    }
    // Within the runbook's bounds but below the live count: refused against the live object.
    let o = bounded(send("down", "high_cpu", 1)).await.expect("bounded");
    assert_eq!((o.decision, o.success), (Decision::Aborted, None), "{}", o.reason);
    assert!(
        o.reason.contains(&format!(
            "deployment {}/web: a scale-up to 1 replicas is refused: the deployment already runs 2; nothing changed",
            ns.name
        )),
        "{}",
        o.reason
    );
    assert_eq!(replicas().await, Some(2));

    // A valid scale-up works...
    let o = bounded(send("up", "high_cpu", 3)).await.expect("bounded");
    assert_eq!(
        (o.decision, o.success),
        (Decision::Executed, Some(true)),
        "{} {:?}",
        o.reason,
        o.checks
    );
    assert!(o.reason.contains("from 2 to 3"), "{}", o.reason);
    assert_eq!(replicas().await, Some(3));
    // ... and its rollback restores the count read from the cluster (3), not the incident's 9.
    let o = bounded(send("back", "queue_backlog", 4)).await.expect("bounded");
    assert_eq!((o.decision, o.rolled_back), (Decision::Executed, true), "{}", o.reason);
    assert!(o.reason.contains("from 4 to 3"), "{}", o.reason);
    assert_eq!(replicas().await, Some(3));
    // The native form's own cap (4).
    let o = bounded(send("native-cap", "queue_backlog", 5)).await.expect("bounded");
    assert_eq!(o.decision, Decision::Aborted, "{}", o.reason);
    assert!(o.reason.contains("above the runbook's max_replicas 4"), "{}", o.reason);
    assert_eq!(replicas().await, Some(3));
    ns.cleanup().await;
}

#[tokio::test]
async fn a_low_risk_scale_up_never_brings_back_a_stopped_deployment() {
    let Some(client) = cluster().await else { return };
    let ns = Ns::new(&client, "stopped").await;
    running(&ns, "payments", 2, "registry.example/payments:1").await;
    // Security stops a compromised deployment.
    let deployments: Api<Deployment> = ns.api();
    deployments
        .patch_scale(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let executor = Arc::new(KubernetesExecutor::new(client.clone(), options()).unwrap());
    let runbooks = r#"
runbooks:
  scale-up:
    risk: LOW
    triggers: [queue_backlog]
    min_confidence: 0.7
    max_per_hour: 100
    cooldown_minutes: 0
    action: {kind: scale_deployment, replicas: "{new_replicas}", max_replicas: 10}
  scale-by:
    risk: LOW
    triggers: [high_cpu]
    min_confidence: 0.7
    max_per_hour: 100
    cooldown_minutes: 0
    action: {kind: scale_deployment, by: 2, max_replicas: 10}
  predictive:
    risk: LOW
    triggers: [traffic_forecast]
    min_confidence: 0.7
    max_per_hour: 100
    cooldown_minutes: 0
    action: {kind: scale_deployment, predictive: {max_replicas: 10}}
"#;
    let rig = rig(runbooks, executor);
    let replicas = || async { deployments.get("payments").await.unwrap().spec.unwrap().replicas };
    for (id, root_cause) in [
        ("up", "queue_backlog"),
        ("by", "high_cpu"),
        ("predictive", "traffic_forecast"),
    ] {
        let o = tokio::time::timeout(
            Duration::from_secs(60),
            rig.send(incident(
                id,
                root_cause,
                "payments",
                json!({"namespace": ns.name, "deployment": "payments", "new_replicas": 3,
                       "predicted_load": 900.0, "current_load": 400.0}),
            )),
        )
        .await
        .expect("bounded");
        assert_eq!((o.decision, o.success), (Decision::Aborted, None), "{id}: {}", o.reason);
        assert!(o.reason.contains("stopped deliberately"), "{id}: {}", o.reason);
        assert!(o.reason.contains("nothing changed"), "{id}: {}", o.reason);
        assert_eq!(replicas().await, Some(0), "{id}: the stopped deployment stays stopped");
    }
    ns.cleanup().await;
}

/// Create deploy/rbac.yaml's Role and RoleBinding in `namespace` (as an operator does for each
/// namespace remediator may act in); returns the bound ServiceAccount's namespace and name.
async fn grant_deploy_role(client: &Client, namespace: &str) -> (String, String) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).expect("deploy/rbac.yaml");
    let mut subject = None;
    for mut v in serde_saphyr::from_multiple::<serde_json::Value>(&text).expect("YAML") {
        v["metadata"]["namespace"] = json!(namespace);
        match v["kind"].as_str() {
            Some("Role") => {
                let role: Role = serde_json::from_value(v).expect("Role");
                Api::<Role>::namespaced(client.clone(), namespace)
                    .create(&PostParams::default(), &role)
                    .await
                    .expect("create Role");
            }
            Some("RoleBinding") => {
                let binding: RoleBinding = serde_json::from_value(v).expect("RoleBinding");
                let sa = binding.subjects.as_ref().and_then(|s| s.first()).expect("a subject");
                subject = Some((sa.namespace.clone().expect("subject namespace"), sa.name.clone()));
                Api::<RoleBinding>::namespaced(client.clone(), namespace)
                    .create(&PostParams::default(), &binding)
                    .await
                    .expect("create RoleBinding");
            }
            other => panic!("deploy/rbac.yaml: unexpected {other:?}"),
        }
    }
    subject.expect("deploy/rbac.yaml binds a ServiceAccount")
}
