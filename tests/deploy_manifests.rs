//! The plain manifests in `deploy/`: least-privilege RBAC, a production-shaped Deployment, and a
//! ConfigMap whose runbooks and worker config the binary accepts. First checked as files, then
//! applied to the real API server of `scripts/k8s.sh` (in fresh namespaces), where the
//! ServiceAccount's permissions are probed by impersonation and SubjectAccessReviews: the Role
//! must allow exactly what the actions and checks need, and the API server must refuse the rest.

#[path = "common/k8s.rs"]
mod k8s_common;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, PodSpec, Probe, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::json;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every (apiGroup, resource, verbs) the Role may grant: exactly what the actions and checks need
/// (deploy/rbac.yaml's header says which action needs which). Changing this set is a security
/// review, not a test fix.
const EXPECTED_RULES: &[(&str, &str, &[&str])] = &[
    ("", "pods", &["get", "list", "delete"]),
    ("apps", "deployments", &["get", "list", "patch"]),
    ("apps", "deployments/scale", &["get", "patch"]),
    ("apps", "replicasets", &["get", "list"]),
    ("apps", "statefulsets", &["get", "patch"]),
    ("apps", "daemonsets", &["get", "patch"]),
    ("", "configmaps", &["get", "patch"]),
    ("autoscaling", "horizontalpodautoscalers", &["get", "patch"]),
];

/// Never granted, whatever the runbooks say: reading credentials, running code in pods, creating
/// workloads, changing RBAC. Checked against the live API server.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "pods", "create"),
    ("", "pods", "update"),
    ("", "pods", "patch"),
    ("", "pods", "deletecollection"),
    ("", "pods/exec", "create"),
    ("", "pods/exec", "get"),
    ("", "pods/attach", "create"),
    ("", "pods/portforward", "create"),
    ("", "pods/proxy", "get"),
    ("", "pods/ephemeralcontainers", "patch"),
    ("", "pods/eviction", "create"),
    ("", "serviceaccounts/token", "create"),
    ("", "configmaps", "create"),
    ("", "configmaps", "delete"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "update"),
    ("apps", "deployments", "delete"),
    ("apps", "replicasets", "patch"),
    ("apps", "replicasets", "delete"),
    ("apps", "statefulsets", "delete"),
    ("batch", "jobs", "create"),
    ("rbac.authorization.k8s.io", "roles", "create"),
    ("rbac.authorization.k8s.io", "roles", "escalate"),
    ("rbac.authorization.k8s.io", "rolebindings", "create"),
    ("rbac.authorization.k8s.io", "roles", "bind"),
];

/// Subresources that would let remediator run code or open channels into a pod.
const DANGEROUS_SUBRESOURCES: &[&str] = &["pods/exec", "pods/attach", "pods/portforward", "pods/proxy"];

const METRICS_PORT: i32 = 9464;
const IMAGE: &str = "ghcr.io/remediator/remediator:0.1.0";

/// One YAML document of a file in deploy/.
struct Doc {
    file: String,
    value: Value,
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every document of every deploy/*.yaml (deploy/helm is a chart, not plain manifests), in file order.
fn manifests() -> Vec<Doc> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("deploy"))
        .expect("read deploy/")
        .map(|e| e.expect("deploy/ entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let file = format!("deploy/{}", path.file_name().unwrap_or_default().to_string_lossy());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let values =
            serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}"));
        for value in values {
            if value.is_null() {
                continue; // an empty document (a trailing `---`)
            }
            assert!(
                value["apiVersion"].is_string() && value["kind"].is_string(),
                "{file}: every document needs apiVersion and kind"
            );
            docs.push(Doc {
                file: file.clone(),
                value,
            });
        }
    }
    assert!(!docs.is_empty(), "deploy/ has no manifests");
    docs
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn all_of<T: DeserializeOwned>(docs: &[Doc], k: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| kind(&d.value) == k)
        .map(|d| serde_json::from_value(d.value.clone()).unwrap_or_else(|e| panic!("{}: {k}: {e}", d.file)))
        .collect()
}

fn one<T: DeserializeOwned>(docs: &[Doc], k: &str) -> T {
    let mut all = all_of(docs, k);
    assert_eq!(all.len(), 1, "deploy/ should hold exactly one {k}");
    all.remove(0)
}

fn expected_rules() -> BTreeSet<(String, String, String)> {
    EXPECTED_RULES
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string())))
        .collect()
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("Deployment pod spec")
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn container(d: &Deployment) -> &Container {
    let pod = pod_spec(d);
    assert_eq!(pod.containers.len(), 1, "one container");
    &pod.containers[0]
}

/// A port reference (number or container port name) as a number.
fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("no container port named {name:?}")),
    }
}

fn http_probe(c: &Container, probe: Option<&Probe>, what: &str) -> (String, i32) {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("{what}: an httpGet probe"));
    (get.path.clone().unwrap_or_default(), port_number(c, &get.port))
}

#[test]
fn rbac_is_namespaced_least_privilege() {
    let docs = manifests();
    for d in &docs {
        assert!(
            !["ClusterRole", "ClusterRoleBinding"].contains(&kind(&d.value)),
            "{}: remediator gets no cluster-wide RBAC",
            d.file
        );
    }
    let role: Role = one(&docs, "Role");
    let role_ns = role.metadata.namespace.clone().expect("Role namespace");
    let mut granted = BTreeSet::new();
    for (i, rule) in role.rules.iter().flatten().enumerate() {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        assert!(rule.non_resource_urls.is_none(), "rule {i}: no nonResourceURLs");
        assert!(
            !groups.is_empty() && !resources.is_empty() && !rule.verbs.is_empty(),
            "rule {i}: empty list"
        );
        for x in groups.iter().chain(&resources).chain(&rule.verbs) {
            assert!(!x.contains('*'), "rule {i}: wildcard {x:?}");
        }
        for r in &resources {
            assert!(r != "secrets" && !r.starts_with("secrets/"), "rule {i}: grants {r}");
            assert!(!DANGEROUS_SUBRESOURCES.contains(&r.as_str()), "rule {i}: grants {r}");
            for g in &groups {
                for v in &rule.verbs {
                    granted.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    assert_eq!(
        granted,
        expected_rules(),
        "deploy/rbac.yaml grants more or less than the actions need"
    );
    // The generic merge-patch action may touch exactly these resources: each needs get + patch.
    for resource in remediator::runbook::action::PATCHABLE {
        for verb in ["get", "patch"] {
            assert!(
                granted.iter().any(|(_, r, v)| r == resource && v == verb),
                "the patch action supports {resource}, but the Role does not grant {verb} on it"
            );
        }
    }

    let binding: RoleBinding = one(&docs, "RoleBinding");
    assert_eq!(
        binding.metadata.namespace.as_deref(),
        Some(role_ns.as_str()),
        "RoleBinding beside its Role"
    );
    assert_eq!(
        binding.role_ref.kind, "Role",
        "bound to the namespaced Role, not a ClusterRole"
    );
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let sa: ServiceAccount = one(&docs, "ServiceAccount");
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "one subject: remediator's ServiceAccount");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);

    let deployment: Deployment = one(&docs, "Deployment");
    assert_eq!(
        pod_spec(&deployment).service_account_name,
        sa.metadata.name,
        "runs as that ServiceAccount"
    );
    assert_eq!(deployment.metadata.namespace, sa.metadata.namespace);
}

#[test]
fn deployment_is_production_shaped() {
    let docs = manifests();
    let d: Deployment = one(&docs, "Deployment");
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    let labels = pod_labels(&d);
    assert!(
        selects(&spec.selector.match_labels.clone().unwrap_or_default(), &labels),
        "selector matches its pods"
    );

    let pod = pod_spec(&d);
    assert!(
        pod.termination_grace_period_seconds.unwrap_or(30) >= 60,
        "time to drain in-flight actions"
    );
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("podAntiAffinity");
    let terms: Vec<_> = anti
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten()
        .map(|w| &w.pod_affinity_term)
        .chain(
            anti.required_during_scheduling_ignored_during_execution
                .iter()
                .flatten(),
        )
        .collect();
    assert!(
        terms.iter().any(|t| t.topology_key == "kubernetes.io/hostname"
            && t.label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|m| selects(m, &labels))),
        "replicas spread over nodes"
    );

    let c = container(&d);
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    let argv: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(String::as_str)
        .collect();
    assert_eq!(&argv[..2], ["remediator", "run"], "runs the worker: {argv:?}");
    assert!(
        c.ports.iter().flatten().any(|p| p.container_port == METRICS_PORT),
        "exposes {METRICS_PORT}"
    );
    assert_eq!(
        http_probe(c, c.readiness_probe.as_ref(), "readiness"),
        ("/readyz".into(), METRICS_PORT)
    );
    assert_eq!(
        http_probe(c, c.liveness_probe.as_ref(), "liveness"),
        ("/healthz".into(), METRICS_PORT)
    );
    let res = c.resources.as_ref().expect("resources");
    for (what, list) in [("requests", &res.requests), ("limits", &res.limits)] {
        let list = list.as_ref().unwrap_or_else(|| panic!("resources.{what}"));
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "{what}: cpu and memory"
        );
    }

    let psc = pod.security_context.as_ref();
    let csc = c.security_context.as_ref().expect("container securityContext");
    assert!(
        csc.run_as_non_root == Some(true) || psc.and_then(|s| s.run_as_non_root) == Some(true),
        "runAsNonRoot"
    );
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.privileged, None);
    let caps = csc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(caps.add.is_none(), "no capabilities added");

    let env: BTreeSet<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    for name in [
        "REMEDIATOR_KAFKA_BROKERS",
        "REMEDIATOR_REDIS_URL",
        "REMEDIATOR_WORKER_ID",
    ] {
        assert!(env.contains(name), "env {name}");
    }
}

#[test]
fn pdb_and_service_select_the_workers() {
    let docs = manifests();
    let d: Deployment = one(&docs, "Deployment");
    let labels = pod_labels(&d);

    let pdb: PodDisruptionBudget = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb.metadata.namespace, d.metadata.namespace);
    let spec = pdb.spec.as_ref().expect("PDB spec");
    assert!(
        spec.max_unavailable == Some(IntOrString::Int(1)) || spec.min_available == Some(IntOrString::Int(2)),
        "one replica at a time may be disrupted"
    );
    let sel = spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    assert!(selects(&sel, &labels), "PDB selects the workers");

    let svc: Service = one(&docs, "Service");
    assert_eq!(svc.metadata.namespace, d.metadata.namespace);
    let spec = svc.spec.as_ref().expect("Service spec");
    assert!(
        selects(&spec.selector.clone().unwrap_or_default(), &labels),
        "Service selects the workers"
    );
    let c = container(&d);
    assert!(
        spec.ports.iter().flatten().any(|p| p.port == METRICS_PORT
            && port_number(c, p.target_port.as_ref().unwrap_or(&IntOrString::Int(p.port))) == METRICS_PORT),
        "Service port {METRICS_PORT} reaches the metrics port"
    );
    let ann = svc.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(ann.get("prometheus.io/port").map(String::as_str), Some("9464"));
    assert_eq!(ann.get("prometheus.io/path").map(String::as_str), Some("/metrics"));
}

#[test]
fn configmap_runbooks_and_config_are_what_the_binary_loads() {
    let docs = manifests();
    let d: Deployment = one(&docs, "Deployment");
    let cm: ConfigMap = one(&docs, "ConfigMap");
    let data = cm.data.clone().unwrap_or_default();
    let c = container(&d);

    // The ConfigMap is what the pods mount, where the args and the config expect it.
    let volume = pod_spec(&d)
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|s| Some(&s.name) == cm.metadata.name.as_ref())
        })
        .expect("a volume of the ConfigMap");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("the ConfigMap volume is mounted");
    assert_eq!(mount.read_only, Some(true));
    let dir = mount.mount_path.trim_end_matches('/');
    let args = c.args.clone().unwrap_or_default();
    let config_path = format!("{dir}/remediator.yaml");
    assert!(
        args.windows(2).any(|w| w[0] == "--config" && w[1] == config_path),
        "--config {config_path}: {args:?}"
    );

    let runbooks = data.get("runbooks.yaml").expect("data.runbooks.yaml");
    let catalogue = remediator::runbook::Catalogue::from_yaml(runbooks, "deploy/configmap.yaml: runbooks.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!catalogue.is_empty());
    let shipped = std::fs::read_to_string(repo_path("config/runbooks.yaml")).expect("config/runbooks.yaml");
    assert!(
        *runbooks == shipped,
        "deploy/configmap.yaml embeds a stale copy of config/runbooks.yaml: re-embed it with the command in \
         deploy/configmap.yaml's header"
    );

    // The worker config loads as the binary loads it, with the Deployment's environment on top.
    let dir_tmp = tempfile::tempdir().expect("tempdir");
    let file = dir_tmp.path().join("remediator.yaml");
    std::fs::write(&file, data.get("remediator.yaml").expect("data.remediator.yaml")).expect("write config");
    let mut env: BTreeMap<String, String> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    env.insert("REMEDIATOR_WORKER_ID".into(), "remediator-7d9f-abcde".into()); // the pod name (fieldRef)
    let config = remediator::config::Config::load(Some(&file), &env, &[])
        .unwrap_or_else(|e| panic!("deploy/configmap.yaml: remediator.yaml: {e}"));
    assert_eq!(
        config.runbooks,
        format!("{dir}/runbooks.yaml"),
        "runbooks from the same mount"
    );
    assert!(
        config.http.listen.ends_with(&format!(":{METRICS_PORT}")),
        "{}",
        config.http.listen
    );
    assert_eq!(Some(&config.kafka.brokers), env.get("REMEDIATOR_KAFKA_BROKERS"));
    assert_eq!(Some(&config.redis.url), env.get("REMEDIATOR_REDIS_URL"));
    assert_eq!(config.worker_id, "remediator-7d9f-abcde");

    // SIGTERM lets in-flight work finish within shutdown.grace, which every
    // runbook of the mounted catalogue fits (the start-up check), and the kubelet waits longer
    // than that before SIGKILL (30 s for the commit and flush).
    remediator::worker::check_grace(&catalogue, &config).unwrap_or_else(|e| panic!("deploy/: {e}"));
    let grace = pod_spec(&d).termination_grace_period_seconds.unwrap_or(30);
    assert!(
        grace as u64 >= config.grace().as_secs() + 30,
        "terminationGracePeriodSeconds {grace} must be at least shutdown.grace {} s + 30 s",
        config.grace().as_secs()
    );
}

#[test]
fn only_loopback_clusters_are_used_by_default() {
    for url in [
        "https://127.0.0.1:26443",
        "https://localhost:6443/",
        "https://[::1]:443",
        "http://127.0.0.2",
    ] {
        assert!(k8s_common::is_loopback_url(url), "{url}");
    }
    for url in [
        "https://10.0.0.1:443",
        "https://prod.example.com",
        "https://127.0.0.1.example.com:443",
    ] {
        assert!(!k8s_common::is_loopback_url(url), "{url}");
    }
}

// --- against the real API server ------------------------------------------------------------------

/// Where each namespace of the manifests goes in this test run.
struct Rename(BTreeMap<String, String>);

impl Rename {
    fn ns(&self, ns: &str, file: &str) -> String {
        self.0
            .get(ns)
            .unwrap_or_else(|| {
                panic!(
                    "{file}: unexpected namespace {ns:?} (this test knows {:?})",
                    self.0.keys()
                )
            })
            .clone()
    }

    /// The object with its namespaces (and a RoleBinding's subjects') moved to this run's.
    fn apply_to(&self, doc: &Doc) -> Value {
        let mut v = doc.value.clone();
        let meta = &mut v["metadata"];
        if kind(&doc.value) == "Namespace" {
            let name = self.ns(meta["name"].as_str().unwrap_or(""), &doc.file);
            meta["name"] = name.into();
            meta["labels"]["remediator-test"] = "true".into();
        } else {
            let ns = meta["namespace"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: {} without metadata.namespace", doc.file, kind(&doc.value)));
            meta["namespace"] = self.ns(ns, &doc.file).into();
        }
        if let Some(subjects) = v.get_mut("subjects").and_then(Value::as_array_mut) {
            for s in subjects {
                if let Some(ns) = s["namespace"].as_str() {
                    s["namespace"] = self.ns(ns, &doc.file).into();
                }
            }
        }
        v
    }
}

/// Apply order: what others refer to first (pods need their ServiceAccount and ConfigMap).
fn apply_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Role",
        "RoleBinding",
        "Service",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// Server-side apply through the dynamic API: the API server validates every field.
async fn apply(client: &Client, file: &str, v: &Value) {
    let obj: DynamicObject = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let types = obj.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (ar, caps) = pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{file}: the API server does not serve {gvk:?}: {e}"));
    let name = obj.metadata.name.clone().expect("metadata.name");
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), &ns, &ar),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("remediator-deploy-test"),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("{file}: apply {} {ns}/{name}: {e}", gvk.kind));
}

/// Poll `probe` every 100 ms until it returns `Some`, or panic with `what` after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_code<T>(what: &str, code: u16, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == code => {}
        Err(e) => panic!("{what}: expected HTTP {code}, got {e}"),
        Ok(_) => panic!("{what}: expected HTTP {code}, but it succeeded"),
    }
}

/// What the API server's authorizer answers for `user` (with the ServiceAccount groups).
async fn access_review(
    client: &Client,
    user: &str,
    groups: &[String],
    ns: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                verb: Some(verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap_or_else(|e| panic!("SubjectAccessReview: {e}"));
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn manifests_apply_to_a_real_api_server_and_rbac_holds() {
    let Some(_) = k8s_common::kubeconfig() else { return };
    let admin = k8s_common::client().await;
    let docs = manifests();

    // deploy/ names two namespaces: remediator's own and the example target `production`. Each
    // run gets fresh ones; the target is created here (deploy/ does not own it).
    let home = format!("deploy-remediator-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let target = k8s_common::create_namespace(&admin, "deploy-production").await;
    let rename = Rename(BTreeMap::from([
        ("remediator".to_string(), home.clone()),
        ("production".to_string(), target.clone()),
    ]));
    let mut objects: Vec<(&Doc, Value)> = docs.iter().map(|d| (d, rename.apply_to(d))).collect();
    objects.sort_by_key(|(d, _)| apply_rank(kind(&d.value)));
    assert!(
        objects.iter().any(|(d, _)| kind(&d.value) == "Namespace"),
        "deploy/namespace.yaml creates remediator's namespace"
    );
    for (d, v) in &objects {
        apply(&admin, &d.file, v).await;
    }

    // The workers come up: all 3 pods admitted (the home namespace enforces the `restricted`
    // Pod Security Standard) and Ready, the Service has them as endpoints, the PDB counts them.
    let deployment: Deployment = one(&docs, "Deployment");
    let selector: Vec<String> = pod_labels(&deployment)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let selector = selector.join(",");
    let workers = &Api::<Deployment>::namespaced(admin.clone(), &home);
    let replica_sets = &Api::<ReplicaSet>::namespaced(admin.clone(), &home);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = workers
            .get("remediator")
            .await
            .ok()
            .and_then(|d| d.status?.ready_replicas);
        if ready == Some(3) {
            break;
        }
        if Instant::now() >= deadline {
            // Pods refused at admission (Pod Security, a missing ServiceAccount) show up here.
            let problems: Vec<String> = replica_sets
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .iter()
                .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
                .map(|c| format!("{}: {}", c.type_, c.message.as_deref().unwrap_or("")))
                .collect();
            panic!("{home}: the remediator Deployment has {ready:?} of 3 ready replicas; ReplicaSets: {problems:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    k8s_common::wait_ready_pods(&admin, &home, &selector, 3, Duration::from_secs(10)).await;
    let slices = &Api::<EndpointSlice>::namespaced(admin.clone(), &home);
    eventually(
        "3 ready endpoints on port 9464",
        Duration::from_secs(30),
        move || async move {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=remediator"))
                .await
                .ok()?;
            let ready: usize = list
                .items
                .iter()
                .filter(|s| s.ports.iter().flatten().any(|p| p.port == Some(METRICS_PORT)))
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            (ready == 3).then_some(())
        },
    )
    .await;
    let pdbs = &Api::<PodDisruptionBudget>::namespaced(admin.clone(), &home);
    eventually(
        "PDB: 3 healthy, 1 disruption allowed",
        Duration::from_secs(30),
        move || async move {
            let status = pdbs.get("remediator").await.ok()?.status?;
            (status.current_healthy == 3 && status.disruptions_allowed == 1).then_some(())
        },
    )
    .await;

    // The ServiceAccount, as the API server sees it (impersonated by the admin).
    let sa: ServiceAccount = one(&docs, "ServiceAccount");
    let sa_name = sa.metadata.name.clone().expect("ServiceAccount name");
    let user = format!("system:serviceaccount:{home}:{sa_name}");
    let groups = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{home}"),
        "system:authenticated".to_string(),
    ];
    let worker = k8s_common::client_as_service_account(&home, &sa_name).await;

    // What an action does, done as remediator in the target namespace.
    k8s_common::create_deployment(&admin, &target, "web", 2).await;
    let web = k8s_common::wait_ready_pods(&admin, &target, "app=web", 2, Duration::from_secs(30)).await;
    let pods = Api::<Pod>::namespaced(worker.clone(), &target);
    assert_eq!(
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .expect("list pods")
            .items
            .len(),
        2
    );
    let victim = web[0].metadata.name.clone().expect("pod name");
    let uid = pods.get(&victim).await.expect("get pod").metadata.uid.expect("pod uid");
    let stale = DeleteParams::default().preconditions(Preconditions {
        uid: Some("00000000-0000-0000-0000-000000000000".into()),
        resource_version: None,
    });
    assert_code("delete with a stale uid", 409, pods.delete(&victim, &stale).await);
    let fenced = DeleteParams::default().preconditions(Preconditions {
        uid: Some(uid),
        resource_version: None,
    });
    pods.delete(&victim, &fenced).await.expect("delete pod with its uid");
    let deployments = Api::<Deployment>::namespaced(worker.clone(), &target);
    deployments.get("web").await.expect("get deployment");
    assert_eq!(
        deployments
            .get_scale("web")
            .await
            .expect("get scale")
            .spec
            .and_then(|s| s.replicas),
        Some(2)
    );
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patch deployments/scale");
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"remediator/restarted-by": "test"}}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .expect("patch deployment (rollout restart)");
    Api::<ReplicaSet>::namespaced(worker.clone(), &target)
        .list(&ListParams::default())
        .await
        .expect("list replicasets (rollout undo)");
    k8s_common::wait_ready_pods(&admin, &target, "app=web", 3, Duration::from_secs(30)).await;

    let config_maps = Api::<ConfigMap>::namespaced(admin.clone(), &target);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "web-config"}, "data": {"mode": "a"}})).expect("configmap");
    config_maps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    let config_maps = Api::<ConfigMap>::namespaced(worker.clone(), &target);
    config_maps.get("web-config").await.expect("get configmap");
    config_maps
        .patch(
            "web-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"mode": "b"}})),
        )
        .await
        .expect("merge-patch configmap");

    // What it must never do.
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "db-password"}, "stringData": {"p": "x"}})).expect("secret");
    Api::<Secret>::namespaced(admin.clone(), &target)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let secrets = Api::<Secret>::namespaced(worker.clone(), &target);
    assert_code("get secret", 403, secrets.get("db-password").await);
    assert_code("list secrets", 403, secrets.list(&ListParams::default()).await);
    let alive = k8s_common::wait_ready_pods(&admin, &target, "app=web", 3, Duration::from_secs(30)).await;
    let alive = alive[0].metadata.name.clone().expect("pod name");
    for sub in ["exec", "attach", "portforward"] {
        assert_code(
            &format!("create pods/{sub}"),
            403,
            pods.create_subresource::<_, serde_json::Value>(sub, &alive, &PostParams::default(), &json!({}))
                .await,
        );
    }
    let intruder: Pod = serde_json::from_value(
        json!({"metadata": {"name": "intruder"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .expect("pod");
    assert_code("create pod", 403, pods.create(&PostParams::default(), &intruder).await);
    assert_code(
        "delete deployment",
        403,
        deployments.delete("web", &DeleteParams::default()).await,
    );
    assert_code(
        "list pods in its own namespace (no RoleBinding there)",
        403,
        Api::<Pod>::namespaced(worker.clone(), &home)
            .list(&ListParams::default())
            .await,
    );
    assert_code(
        "list pods cluster-wide",
        403,
        Api::<Pod>::all(worker.clone()).list(&ListParams::default()).await,
    );
    assert_code(
        "list nodes",
        403,
        Api::<Node>::all(worker.clone()).list(&ListParams::default()).await,
    );

    // The whole matrix, from the authorizer: every expected verb allowed in the target namespace
    // and nowhere else; every forbidden one refused.
    for (group, resource, verb) in expected_rules() {
        assert!(
            access_review(&admin, &user, &groups, &target, &group, &resource, &verb).await,
            "{verb} {group}/{resource} in {target} should be allowed"
        );
        assert!(
            !access_review(&admin, &user, &groups, &home, &group, &resource, &verb).await,
            "{verb} {group}/{resource} in {home} (no RoleBinding) should be refused"
        );
    }
    for (group, resource, verb) in FORBIDDEN {
        assert!(
            !access_review(&admin, &user, &groups, &target, group, resource, verb).await,
            "{verb} {group}/{resource} in {target} should be refused"
        );
    }

    k8s_common::delete_namespace(&admin, &target).await;
    k8s_common::delete_namespace(&admin, &home).await;
}
