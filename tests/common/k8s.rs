//! The Kubernetes control plane under test (`scripts/k8s.sh start`: a real kube-apiserver, etcd,
//! controller-manager and scheduler, with kwok faking a node whose pods become Ready) and small
//! helpers that give each test its own namespace and workload.
//!
//! Tests that need the cluster start with `let Some(_) = k8s::kubeconfig() else { return };`, then
//! `k8s::client().await`. Everything a test creates lives in a namespace from
//! [`create_namespace`], so tests run in parallel and a start of `scripts/k8s.sh` wipes the rest.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use std::time::{Duration, Instant};

/// Set to let the tests use a cluster that is not on loopback (they create and delete workloads).
const ALLOW_REMOTE: &str = "REMEDIATOR_TEST_K8S_ALLOW_REMOTE";

/// The kubeconfig under test, from `KUBECONFIG` (`scripts/k8s.sh start` prints the line).
///
/// `None` (after a note on stderr) when it is unset, so `cargo test` works on a laptop without a
/// cluster; with `REMEDIATOR_TEST_REQUIRE_SERVICES` set (CI) a missing variable is a failure
/// instead, so a misconfigured pipeline cannot pass by skipping everything — the same rules as
/// `redis_url()`. A kubeconfig whose current cluster is not on loopback is refused the same way
/// unless `REMEDIATOR_TEST_K8S_ALLOW_REMOTE` is set: these tests delete pods and scale
/// deployments, and a `KUBECONFIG` left pointing at a real cluster must not receive them.
pub fn kubeconfig() -> Option<String> {
    let require = std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some();
    let path = match std::env::var("KUBECONFIG") {
        Ok(path) if !path.is_empty() => path,
        _ if require => panic!(
            "KUBECONFIG is not set but REMEDIATOR_TEST_REQUIRE_SERVICES is: start the control plane with \
             `out=$(scripts/k8s.sh start) && export \"$out\"`"
        ),
        _ => {
            eprintln!("skipping: KUBECONFIG not set (run `scripts/k8s.sh start` and export its output)");
            return None;
        }
    };
    if std::env::var_os(ALLOW_REMOTE).is_none() {
        let server = current_server().unwrap_or_else(|e| panic!("KUBECONFIG={path}: {e}"));
        if !is_loopback_url(&server) {
            let msg = format!(
                "KUBECONFIG={path} points at {server}, not a loopback test cluster; set {ALLOW_REMOTE}=1 \
                 to run these tests against it anyway"
            );
            if require {
                panic!("{msg}");
            }
            eprintln!("skipping: {msg}");
            return None;
        }
    }
    Some(path)
}

/// The server URL of the current context of the kubeconfig(s) named by `KUBECONFIG`.
fn current_server() -> Result<String, String> {
    let kc = Kubeconfig::from_env()
        .map_err(|e| e.to_string())?
        .ok_or("KUBECONFIG names no file")?;
    let context = kc.current_context.as_deref().ok_or("no current-context")?;
    let cluster = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| format!("context {context:?} not found"))?;
    kc.clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| format!("cluster {cluster:?} has no server"))
}

/// Whether a server URL's host is `localhost` or a loopback address (`127.0.0.0/8`, `::1`).
pub fn is_loopback_url(url: &str) -> bool {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

async fn config() -> Config {
    Config::from_kubeconfig(&KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot load KUBECONFIG: {e}"))
}

/// An admin client for the cluster under test (call [`kubeconfig`] first to skip or require).
pub async fn client() -> Client {
    Client::try_from(config().await).expect("kube client")
}

/// A client that acts as ServiceAccount `namespace`/`name`, by impersonation (the admin of the
/// test cluster is in `system:masters`, which may impersonate). Requests go through RBAC exactly
/// as they would with the ServiceAccount's own token in a pod, so tests prove what a Role allows.
pub async fn client_as_service_account(namespace: &str, name: &str) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).expect("impersonating kube client")
}

/// A fresh namespace `<prefix>-<8 hex>` (prefix cut to keep the name a valid RFC 1123 label),
/// labelled `remediator-test=true`; returns its name.
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let prefix: String = prefix.chars().take(50).collect();
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"remediator-test": "true"}},
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

/// Delete a namespace and everything in it, without waiting (the controller-manager finishes it).
pub async fn delete_namespace(client: &Client, name: &str) {
    if let Err(e) = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await
    {
        eprintln!("warning: deleting namespace {name}: {e}");
    }
}

/// Create Deployment `name` in `namespace` with `replicas` pods labelled `app=<name>`. The image is
/// never pulled: kwok's node "runs" any pod and marks it Ready.
pub async fn create_deployment(client: &Client, namespace: &str, name: &str, replicas: i32) -> Deployment {
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .expect("deployment object");
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|e| panic!("create deployment {namespace}/{name}: {e}"))
}

/// Whether the pod is Ready and not being deleted.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Wait until exactly `n` pods matching `label_selector` (e.g. `app=web`) in `namespace` are
/// Ready and no other matching pod exists (none pending or terminating), polling every 100 ms;
/// returns them. Panics with what it saw after `timeout`.
pub async fn wait_ready_pods(
    client: &Client,
    namespace: &str,
    label_selector: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let pods = api
            .list(&ListParams::default().labels(label_selector))
            .await
            .unwrap_or_else(|e| panic!("list pods {namespace} {label_selector}: {e}"))
            .items;
        let ready = pods.iter().filter(|p| pod_is_ready(p)).count();
        if ready == n && pods.len() == n {
            return pods;
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = pods
                .iter()
                .map(|p| {
                    let name = p.metadata.name.as_deref().unwrap_or("?");
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("?");
                    format!("{name} {phase} ready={}", pod_is_ready(p))
                })
                .collect();
            panic!("{namespace}: waited {timeout:?} for {n} Ready pods {label_selector}, saw {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
