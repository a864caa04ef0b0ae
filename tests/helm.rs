//! The Helm chart (`deploy/helm/remediator`) is the plain manifests (`deploy/`) in chart form.
//!
//! With the `helm` that `scripts/helm.sh install` builds from the Go module proxy: `helm lint
//! --strict`, then `helm template`, whose objects are compared with deploy/'s: the same kinds, the
//! same RBAC rules (one Role + RoleBinding per target namespace from the values), probes, security
//! contexts, ports, volumes, PDB and Service; a worker config that the binary loads and that equals
//! deploy/configmap.yaml's; the runbook catalogue of config/runbooks.yaml. The rendered chart is
//! then applied to the real API server of `scripts/k8s.sh` (when `KUBECONFIG` is set) and its three
//! replicas must become Ready in a namespace that enforces the `restricted` Pod Security Standard.
//!
//! Without helm the tests skip with a note; with `REMEDIATOR_TEST_REQUIRE_SERVICES` set they fail.

#[path = "common/k8s.rs"]
mod k8s_common;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use remediator::config::Config;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHART: &str = "deploy/helm/remediator";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The helm binary from `scripts/helm.sh` (`None` after a note when it is not built, unless
/// services are required).
fn helm() -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg(repo("scripts/helm.sh"))
        .arg("path")
        .output()
        .expect("run scripts/helm.sh path");
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if std::env::var_os("REMEDIATOR_TEST_REQUIRE_SERVICES").is_some() {
        panic!("helm is not built but REMEDIATOR_TEST_REQUIRE_SERVICES is set: run `scripts/helm.sh install`");
    }
    eprintln!("skipping: helm not built (run `scripts/helm.sh install`)");
    None
}

/// Run helm with its state kept out of the user's home; panics with helm's output on failure.
fn run_helm(helm: &Path, args: &[&str]) -> String {
    let home = std::env::temp_dir().join("remediator-helm-test");
    let out = Command::new(helm)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {}:\n{text}", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn documents(text: &str, origin: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{origin}: invalid YAML: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template <release> CHART -n <namespace> ARGS...` as objects.
fn render(helm: &Path, release: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["template", release, CHART, "--namespace", namespace];
    all.extend_from_slice(args);
    documents(&run_helm(helm, &all), "helm template")
}

/// Every object of deploy/*.yaml.
fn plain() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy"))
        .expect("deploy/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| documents(&std::fs::read_to_string(f).expect("read"), &f.display().to_string()))
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

fn of_kind<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind(o) == k).collect()
}

fn one<'a>(objs: &'a [Value], k: &str) -> &'a Value {
    let all = of_kind(objs, k);
    assert_eq!(all.len(), 1, "exactly one {k}");
    all[0]
}

fn kinds(objs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in objs {
        *m.entry(kind(o).to_string()).or_default() += 1;
    }
    m
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

fn namespace(v: &Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or("")
}

fn container(d: &Value) -> &Value {
    &d["spec"]["template"]["spec"]["containers"][0]
}

/// A Role's rules as (apiGroup, resource, verb) triples.
fn rules(role: &Value) -> BTreeSet<(String, String, String)> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for r in role["rules"].as_array().expect("rules") {
        for g in list(&r["apiGroups"]) {
            for res in list(&r["resources"]) {
                for verb in list(&r["verbs"]) {
                    out.insert((g.clone(), res.clone(), verb));
                }
            }
        }
    }
    out
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").into()))
        .collect()
}

fn selects(selector: &Value, pod_labels: &BTreeMap<String, String>) -> bool {
    let s = labels(selector);
    !s.is_empty() && s.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

/// The configuration a replica of this Deployment + ConfigMap runs with: remediator.yaml loaded by
/// the binary, with the container's literal env values applied (as `remediator run` does).
fn effective_config(objs: &[Value]) -> Config {
    let cm = one(objs, "ConfigMap");
    let text = cm["data"]["remediator.yaml"].as_str().expect("remediator.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("remediator.yaml");
    std::fs::write(&path, text).expect("write");
    let mut env = BTreeMap::from([("REMEDIATOR_WORKER_ID".to_string(), "pod-0".to_string())]);
    for e in container(one(objs, "Deployment"))["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let (Some(n), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
            env.insert(n.into(), v.into());
        }
    }
    Config::load(Some(&path), &env, &[]).unwrap_or_else(|e| panic!("remediator.yaml of the ConfigMap: {e}"))
}

#[test]
fn chart_lints_strictly() {
    let Some(helm) = helm() else { return };
    run_helm(&helm, &["lint", "--strict", CHART]);
    run_helm(
        &helm,
        &[
            "lint",
            "--strict",
            CHART,
            "--set",
            "namespace.create=true,redisUrlSecret.name=redis,alertmanagerTokenSecret.name=am",
            "--set",
            "config.alertmanager.enabled=true",
        ],
    );
}

#[test]
fn default_render_matches_the_plain_manifests() {
    let Some(helm) = helm() else { return };
    let chart = render(&helm, "remediator", "remediator", &["--set", "namespace.create=true"]);
    let plain = plain();
    assert_eq!(kinds(&chart), kinds(&plain), "the same objects as deploy/");

    // Names and namespaces: the release name `remediator` in namespace `remediator` gives deploy/'s.
    for o in &chart {
        let twin = plain
            .iter()
            .find(|p| kind(p) == kind(o) && name(p) == name(o) && namespace(p) == namespace(o));
        assert!(
            twin.is_some(),
            "{} {}/{} has no counterpart in deploy/",
            kind(o),
            namespace(o),
            name(o)
        );
    }

    // Namespace: Pod Security `restricted`.
    let ns = one(&chart, "Namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        one(&plain, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    );

    // RBAC: the same rules, bound to the same ServiceAccount.
    let (role, plain_role) = (one(&chart, "Role"), one(&plain, "Role"));
    assert_eq!(rules(role), rules(plain_role), "Role rules");
    let (rb, plain_rb) = (one(&chart, "RoleBinding"), one(&plain, "RoleBinding"));
    assert_eq!(rb["roleRef"], plain_rb["roleRef"]);
    assert_eq!(rb["subjects"], plain_rb["subjects"]);
    let sa = one(&chart, "ServiceAccount");
    assert_eq!(
        sa["automountServiceAccountToken"],
        one(&plain, "ServiceAccount")["automountServiceAccountToken"]
    );

    // Deployment: the same pod, probes, security, resources, volumes.
    let (d, pd) = (one(&chart, "Deployment"), one(&plain, "Deployment"));
    for key in ["replicas", "revisionHistoryLimit", "strategy"] {
        assert_eq!(d["spec"][key], pd["spec"][key], "Deployment spec.{key}");
    }
    let (pod, ppod) = (&d["spec"]["template"]["spec"], &pd["spec"]["template"]["spec"]);
    for key in [
        "serviceAccountName",
        "automountServiceAccountToken",
        "terminationGracePeriodSeconds",
        "securityContext",
        "volumes",
    ] {
        assert_eq!(pod[key], ppod[key], "pod spec.{key}");
    }
    let (c, pc) = (container(d), container(pd));
    for key in [
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "args",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    ] {
        assert_eq!(c[key], pc[key], "container {key}");
    }
    let worker_id = |c: &Value| {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "REMEDIATOR_WORKER_ID")
            .cloned()
    };
    assert_eq!(worker_id(c), worker_id(pc), "REMEDIATOR_WORKER_ID from the pod name");
    let term =
        |pod: &Value| pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0].clone();
    assert_eq!(term(pod)["weight"], term(ppod)["weight"]);
    assert_eq!(
        term(pod)["podAffinityTerm"]["topologyKey"],
        term(ppod)["podAffinityTerm"]["topologyKey"]
    );

    // Selectors: the Deployment's, the Service's, the PDB's and the anti-affinity's all select
    // the pods.
    let pod_labels = labels(&d["spec"]["template"]["metadata"]["labels"]);
    let svc = one(&chart, "Service");
    let pdb = one(&chart, "PodDisruptionBudget");
    for (what, selector) in [
        ("Deployment", &d["spec"]["selector"]["matchLabels"]),
        ("Service", &svc["spec"]["selector"]),
        ("PodDisruptionBudget", &pdb["spec"]["selector"]["matchLabels"]),
        (
            "anti-affinity",
            &term(pod)["podAffinityTerm"]["labelSelector"]["matchLabels"],
        ),
    ] {
        assert!(
            selects(selector, &pod_labels),
            "{what} selector {selector:?} misses the pods"
        );
    }
    let psvc = one(&plain, "Service");
    for key in ["type", "ports"] {
        assert_eq!(svc["spec"][key], psvc["spec"][key], "Service spec.{key}");
    }
    assert_eq!(svc["metadata"]["annotations"], psvc["metadata"]["annotations"]);
    let ppdb = one(&plain, "PodDisruptionBudget");
    for key in ["maxUnavailable", "unhealthyPodEvictionPolicy"] {
        assert_eq!(pdb["spec"][key], ppdb["spec"][key], "PDB spec.{key}");
    }

    // ConfigMap: the catalogue of config/runbooks.yaml, and the same effective worker config.
    let runbooks = std::fs::read_to_string(repo("config/runbooks.yaml")).expect("config/runbooks.yaml");
    let chart_file = std::fs::read_to_string(repo(&format!("{CHART}/files/runbooks.yaml"))).expect("chart file");
    assert_eq!(
        chart_file, runbooks,
        "{CHART}/files/runbooks.yaml drifted from config/runbooks.yaml: cp config/runbooks.yaml {CHART}/files/"
    );
    let cm = one(&chart, "ConfigMap");
    assert_eq!(
        cm["data"]["runbooks.yaml"].as_str(),
        Some(runbooks.as_str()),
        "embedded verbatim"
    );
    remediator::runbook::Catalogue::from_yaml(&runbooks, "ConfigMap runbooks.yaml").expect("catalogue loads");
    assert_eq!(
        effective_config(&chart),
        effective_config(&plain),
        "the chart's default worker config differs from deploy/configmap.yaml + deploy/deployment.yaml \
         (update values.yaml `config`)"
    );
}

#[test]
fn values_shape_the_objects() {
    let Some(helm) = helm() else { return };
    // Two target namespaces: a Role + RoleBinding in each, bound to the release's ServiceAccount.
    let objs = render(
        &helm,
        "ops",
        "platform",
        &[
            "--set-json",
            r#"rbac.targetNamespaces=["production","staging"]"#,
            "--set",
            "replicaCount=2,redisUrlSecret.name=redis-url,alertmanagerTokenSecret.name=am-token,\
             approvalTokenSecret.name=ap-token,approvalHmacKeySecret.name=ap-key",
            "--set",
            "config.alertmanager.enabled=true,config.kafka.brokers=kafka:9092",
            "--set-file",
            "runbooks=tests/data/seed-runbooks.yaml",
        ],
    );
    let plain_rules = rules(one(&plain(), "Role"));
    let roles = of_kind(&objs, "Role");
    let bindings = of_kind(&objs, "RoleBinding");
    let ns_of = |v: &[&Value]| v.iter().map(|o| namespace(o).to_string()).collect::<BTreeSet<_>>();
    let want = BTreeSet::from(["production".to_string(), "staging".to_string()]);
    assert_eq!(ns_of(&roles), want);
    assert_eq!(ns_of(&bindings), want);
    let sa = one(&objs, "ServiceAccount");
    assert_eq!(name(sa), "ops-remediator");
    for r in &roles {
        assert_eq!(rules(r), plain_rules);
    }
    for b in &bindings {
        assert_eq!(b["roleRef"]["name"].as_str(), Some(name(roles[0])));
        assert_eq!(b["subjects"][0]["name"].as_str(), Some(name(sa)));
        assert_eq!(b["subjects"][0]["namespace"], "platform");
    }
    assert!(
        of_kind(&objs, "Namespace").is_empty(),
        "namespace.create defaults to false"
    );

    let d = one(&objs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["serviceAccountName"].as_str(),
        Some(name(sa))
    );
    let cm = one(&objs, "ConfigMap");
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"].as_str(),
        Some(name(cm))
    );
    let env = &container(d)["env"];
    let secret_of = |var: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == var)
            .map(|e| {
                e["valueFrom"]["secretKeyRef"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
    };
    assert_eq!(secret_of("REMEDIATOR_REDIS_URL").as_deref(), Some("redis-url"));
    assert_eq!(
        secret_of(remediator::alertmanager::TOKEN_ENV).as_deref(),
        Some("am-token")
    );
    assert_eq!(secret_of(remediator::approval::TOKEN_ENV).as_deref(), Some("ap-token"));
    assert_eq!(secret_of(remediator::approval::HMAC_KEY_ENV).as_deref(), Some("ap-key"));
    assert_eq!(
        cm["data"]["runbooks.yaml"].as_str(),
        Some(
            std::fs::read_to_string(repo("tests/data/seed-runbooks.yaml"))
                .expect("seed")
                .as_str()
        )
    );
    let config = effective_config(&objs);
    assert!(config.alertmanager.enabled);
    assert_eq!(config.kafka.brokers, "kafka:9092");

    // Switches.
    let objs = render(
        &helm,
        "remediator",
        "remediator",
        &[
            "--set",
            "rbac.create=false,podDisruptionBudget.enabled=false,serviceAccount.create=false,serviceAccount.name=existing",
        ],
    );
    for k in ["Role", "RoleBinding", "PodDisruptionBudget", "ServiceAccount"] {
        assert!(of_kind(&objs, k).is_empty(), "{k} switched off");
    }
    assert_eq!(
        one(&objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "existing"
    );
}

/// Every REMEDIATOR_* variable the chart can set is a real config key (or a secret: the intake's
/// token, the approval API's token, the approvals topic's signing key).
#[test]
fn every_remediator_variable_is_a_config_key() {
    let Some(helm) = helm() else { return };
    let keys: BTreeSet<String> = Config::keys().into_iter().map(|(_, env)| env).collect();
    let objs = render(
        &helm,
        "remediator",
        "remediator",
        &[
            "--set",
            "redisUrlSecret.name=r,alertmanagerTokenSecret.name=t,approvalTokenSecret.name=a,\
             approvalHmacKeySecret.name=k",
        ],
    );
    let mut seen = 0;
    for e in container(one(&objs, "Deployment"))["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let var = e["name"].as_str().unwrap_or("");
        if var.starts_with("REMEDIATOR_") {
            seen += 1;
            assert!(
                keys.contains(var)
                    || [
                        remediator::alertmanager::TOKEN_ENV,
                        remediator::approval::TOKEN_ENV,
                        remediator::approval::HMAC_KEY_ENV
                    ]
                    .contains(&var),
                "{var} is not a config key"
            );
        }
    }
    assert_eq!(seen, 5);
}

/// Server-side apply through the dynamic API (strict field validation: a misspelt field fails).
async fn apply(client: &kube::Client, v: &Value) {
    let what = format!("{} {}/{}", kind(v), namespace(v), name(v));
    let obj: DynamicObject = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let types = obj.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (ar, caps) = pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{what}: not served: {e}"));
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace(v), &ar),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name(v),
        &PatchParams::apply("remediator-helm-test").validation_strict(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {what}: {e}"));
}

#[tokio::test]
async fn rendered_chart_runs_on_a_real_api_server() {
    let Some(helm) = helm() else { return };
    let Some(_) = k8s_common::kubeconfig() else { return };
    let admin = k8s_common::client().await;
    // The chart creates its own namespace (restricted Pod Security); the target exists already.
    let home = format!("helm-remediator-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let target = k8s_common::create_namespace(&admin, "helm-production").await;
    let objs = render(
        &helm,
        "remediator",
        &home,
        &[
            "--set",
            "namespace.create=true",
            "--set-json",
            &format!(r#"rbac.targetNamespaces=["{target}"]"#),
        ],
    );
    let rank = |k: &str| {
        ["Namespace", "ServiceAccount", "ConfigMap", "Role", "RoleBinding"]
            .iter()
            .position(|x| *x == k)
            .unwrap_or(9)
    };
    let mut ordered: Vec<&Value> = objs.iter().collect();
    ordered.sort_by_key(|o| rank(kind(o)));
    for o in ordered {
        apply(&admin, o).await;
    }
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &home);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = deployments
            .get("remediator")
            .await
            .ok()
            .and_then(|d| d.status?.ready_replicas);
        if ready == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{home}: {ready:?} of 3 replicas ready after 60 s (Pod Security admission or a missing object?)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    k8s_common::delete_namespace(&admin, &home).await;
    k8s_common::delete_namespace(&admin, &target).await;
}

/// The worker refuses an Alertmanager intake without a bearer token, so the
/// chart refuses to render one (instead of shipping pods that crash-loop), unless the token
/// comes from the Secret, `extraEnv`, or the intake is explicitly left open.
#[test]
fn an_alertmanager_intake_needs_a_token_or_the_explicit_switch() {
    let Some(helm) = helm() else { return };
    let home = std::env::temp_dir().join("remediator-helm-test");
    let out = Command::new(&helm)
        .args(["template", "r", CHART, "--set", "config.alertmanager.enabled=true"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rendered an open intake");
    assert!(
        err.contains("alertmanagerTokenSecret.name") && err.contains("config.alertmanager.allow_unauthenticated"),
        "{err}"
    );
    for args in [
        [
            "--set",
            "config.alertmanager.enabled=true,alertmanagerTokenSecret.name=am-token",
        ],
        [
            "--set",
            "config.alertmanager.enabled=true,config.alertmanager.allow_unauthenticated=true",
        ],
        [
            "--set-json",
            r#"config.alertmanager={"enabled":true},extraEnv=[{"name":"REMEDIATOR_ALERTMANAGER_TOKEN","value":"t"}]"#,
        ],
    ] {
        let objs = render(&helm, "r", "remediator", &args);
        assert_eq!(of_kind(&objs, "Deployment").len(), 1, "{args:?}");
    }
}

/// The worker needs `config.shutdown.grace` + 30 s after SIGTERM, so
/// the chart refuses to render a `terminationGracePeriodSeconds` shorter than that (the grace
/// read the worker's way: units, and `REMEDIATOR_SHUTDOWN_GRACE` in `extraEnv`).
#[test]
fn termination_grace_must_cover_the_shutdown_grace() {
    let Some(helm) = helm() else { return };
    let home = std::env::temp_dir().join("remediator-helm-test");
    let refused = |args: &[&str]| {
        let out = Command::new(&helm)
            .args(["template", "r", CHART])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .expect("run helm");
        assert!(!out.status.success(), "{args:?} rendered");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for (args, needed) in [
        (vec!["--set", "config.shutdown.grace=900s"], "at least 930"),
        (
            vec!["--set", "config.shutdown.grace=15m,terminationGracePeriodSeconds=929"],
            "at least 930",
        ),
        (vec!["--set", "terminationGracePeriodSeconds=629"], "at least 630"),
        (
            vec![
                "--set-json",
                r#"extraEnv=[{"name":"REMEDIATOR_SHUTDOWN_GRACE","value":"20m"}]"#,
            ],
            "at least 1230",
        ),
        (vec!["--set", "config.shutdown.grace=soon"], "is not a duration"),
    ] {
        let err = refused(&args);
        assert!(
            err.contains(needed)
                && (err.contains("terminationGracePeriodSeconds") || err.contains("config.shutdown.grace")),
            "{args:?}: {err}"
        );
    }
    for args in [
        ["--set", "config.shutdown.grace=900s,terminationGracePeriodSeconds=930"],
        ["--set", "config.shutdown.grace=15m,terminationGracePeriodSeconds=1000"],
        ["--set", "config.shutdown.grace=300s,terminationGracePeriodSeconds=330"],
    ] {
        let objs = render(&helm, "r", "remediator", &args);
        assert_eq!(of_kind(&objs, "Deployment").len(), 1, "{args:?}");
    }
}
