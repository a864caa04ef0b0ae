//! The Kubernetes executor: runbook actions and checks through the API server (the `kube`
//! crate), never a `kubectl` subprocess.
//!
//! Actions fence themselves through the API server (docs/design.md#kubernetes):
//!
//! * `delete_pod` reads the pod first and deletes it with a `uid` precondition, so a pod that
//!   was recreated under the same name in between is never hit.
//! * `scale_deployment` / `scale_to_zero` patch the `scale` subresource carrying the
//!   `resourceVersion` they read (a concurrent change makes the API server answer 409; the
//!   executor re-reads and recomputes a few times), and capture `old_replicas` for the rollback.
//!   The target is judged against that same read ([`Replicas::target`]: the runbook's direction
//!   and bounds, never 0 but for `scale_to_zero`); a target that breaks them is refused with
//!   nothing patched ([`ActionReport::refused`]).
//! * `rollout_restart` stamps `remediator.io/restarted-by: <action id>` on the pod template:
//!   declarative, so running the same action twice changes nothing.
//! * `rollout_undo` does what `kubectl rollout undo` does, with the observed `resourceVersion`.
//!   An undo pinned for an approval ([`Executor::pin`]) is refused, nothing patched, unless that
//!   same read still shows the pinned revision and the pinned one to restore.
//! * `patch` is a JSON merge-patch of one of [`PATCHABLE`]'s resources, also fenced by
//!   `resourceVersion`; `webhook` is one HTTP call ([`super::webhook`]).
//!
//! Checks observe; they never assume. A check that cannot observe its condition (API error,
//! missing object, no Prometheus) fails with the reason in its detail. Checks that verify an
//! effect (`pod_becomes_ready`, `deployment_rolled_out`, `metrics_improved`,
//! `error_rate_normalized`, and `prometheus_query` when it has a `timeout_seconds`) poll until
//! their condition holds or their timeout passes; the others look once.
//!
//! Post-checks need what the action saw *before* acting: the deleted pod's uid and owning
//! Deployment (the pod and its owner references are gone afterwards), the replica count a scale
//! set. The executor remembers these per action id (and separately for its rollback), for the
//! last 1024 executions; they are also returned in [`ActionReport::captured`] for the audit and
//! the rollback's templates (`old_replicas`).
//!
//! `metrics_improved` without a `query` falls back to the rollout: it passes when the target
//! Deployment is rolled out with every replica of the count the action set updated and
//! available (the reference catalogue's scale-up names the check bare and no Prometheus may exist).
//! `error_rate_normalized` without a `query` runs [`KubeExecutorOptions::error_rate_query`] if
//! configured, and otherwise fails, as does `prometheus_query`: an unverifiable fix is not a fix.
//!
//! Names reach this module already validated (RFC 1123) by the template layer; they are checked
//! again here before any API call, because an [`Action`] can also be built in code, and every
//! URL is built by the `kube` and `reqwest` URL builders, never by splicing strings.

use super::prometheus::{error_chain, Prometheus};
use super::{webhook, ActionReport, CheckResult, ExecContext, ExecError, Executor};
use crate::clock::{Clock, SystemClock};
use crate::runbook::action::PATCHABLE;
use crate::runbook::template::{validate, Template, VarKind};
use crate::runbook::{Action, CheckName, CheckSpec, Replicas, RevisionPin};
use chrono::Timelike;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::Selector;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Pod-template annotation stamped by `rollout_restart` (value: the action id).
pub const RESTARTED_BY: &str = "remediator.io/restarted-by";
/// Revision annotation the deployment controller keeps on Deployments and ReplicaSets.
const REVISION: &str = "deployment.kubernetes.io/revision";
/// Label the deployment controller adds to each ReplicaSet's pod template.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Re-reads after a 409 Conflict before an action gives up.
const CONFLICT_RETRIES: u32 = 3;
/// Executions whose effects are remembered for their post-checks.
const MEMORY: usize = 1024;

/// Settings of the Kubernetes executor (from the worker config).
#[derive(Debug, Clone)]
pub struct KubeExecutorOptions {
    /// Base URL of the Prometheus HTTP API for query checks (`http://prometheus:9090`).
    /// `None`: query checks fail with "no Prometheus URL configured".
    pub prometheus_url: Option<String>,
    /// How long a waiting check polls when its runbook gives no `timeout_seconds` (60 s).
    pub default_check_timeout: Duration,
    /// Pause between two observations of a waiting check (250 ms).
    pub poll_interval: Duration,
    /// Upper bound of one API server or Prometheus call (10 s), so a hung connection cannot
    /// stall an execution.
    pub api_timeout: Duration,
    /// PromQL that `error_rate_normalized` runs when its runbook gives no `query` (the reference
    /// catalogue's `rollback-deployment` names the check bare). A template: it may use `{service}`,
    /// `{namespace}`, `{deployment}`, .... `None`: such a check fails ("no Prometheus query
    /// configured"), because an unverifiable rollback must not count as a success.
    pub error_rate_query: Option<String>,
    /// The default error-rate query passes when its value is below this (0.05 = 5 %).
    pub error_rate_below: f64,
    /// Time source of `off_peak_hours`.
    pub clock: Arc<dyn Clock>,
}

impl KubeExecutorOptions {
    /// How long a check waits for its condition; `None` for checks that look once.
    fn wait_of(&self, check: &CheckSpec) -> Option<Duration> {
        match check.name {
            CheckName::PodBecomesReady
            | CheckName::DeploymentRolledOut
            | CheckName::MetricsImproved
            | CheckName::ErrorRateNormalized => Some(check.timeout.unwrap_or(self.default_check_timeout)),
            // A query check is a pre-check (look once) unless the runbook gives it a timeout.
            CheckName::PrometheusQuery => check.timeout,
            _ => None,
        }
    }

    /// The longest one check can take: its own wait plus two API calls of slack (the hard
    /// ceiling [`KubernetesExecutor`] puts over every check). Used to fit executions into the
    /// shutdown grace.
    pub fn check_ceiling(&self, check: &CheckSpec) -> Duration {
        self.wait_of(check).unwrap_or(Duration::ZERO) + self.api_timeout * 2
    }
}

impl Default for KubeExecutorOptions {
    fn default() -> Self {
        Self {
            prometheus_url: None,
            default_check_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            api_timeout: Duration::from_secs(10),
            error_rate_query: None,
            error_rate_below: 0.05,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The executor could not be built from its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeExecutorError {
    /// `prometheus_url` is not an http(s) base URL.
    #[error("prometheus_url: {0}")]
    PrometheusUrl(String),
    /// `error_rate_query` is not a valid template.
    #[error("error_rate_query: {0}")]
    ErrorRateQuery(String),
    /// The HTTP client (webhooks, Prometheus) could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// No Kubernetes configuration (in-cluster service account or `KUBECONFIG`) was usable.
    #[error("Kubernetes client: {0}")]
    Kube(String),
}

/// What an execution did that its post-checks need to know (keyed by action id).
#[derive(Debug, Clone, Default)]
struct Remembered {
    deleted_pod: Option<DeletedPod>,
    scaled_to: Option<u32>,
}

#[derive(Debug, Clone)]
struct DeletedPod {
    namespace: String,
    name: String,
    uid: String,
    /// `None`: it could not be resolved before the delete.
    owner: Option<Owner>,
}

#[derive(Debug, Default)]
struct Memory {
    entries: HashMap<String, Remembered>,
    order: VecDeque<String>,
}

/// Carries out actions against a Kubernetes API server and runs checks against it.
pub struct KubernetesExecutor {
    client: Client,
    http: reqwest::Client,
    prometheus: Option<Prometheus>,
    /// `error_rate_normalized` for runbooks that give no query, from the options.
    error_rate: Option<CheckSpec>,
    opts: KubeExecutorOptions,
    memory: Mutex<Memory>,
}

impl fmt::Debug for KubernetesExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesExecutor")
            .field("prometheus", &self.prometheus.as_ref().map(Prometheus::base))
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl KubernetesExecutor {
    /// An executor acting through `client` (its default namespace is never used: every call
    /// names the namespace of its action).
    pub fn new(client: Client, opts: KubeExecutorOptions) -> Result<Self, KubeExecutorError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("remediator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.api_timeout)
            // A redirect would send a webhook's body (or a query) somewhere the runbook did
            // not name: 3xx is an answer like any other non-2xx.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KubeExecutorError::Http(error_chain(&e)))?;
        let prometheus = opts
            .prometheus_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .map(|u| Prometheus::new(u.trim(), http.clone()))
            .transpose()
            .map_err(KubeExecutorError::PrometheusUrl)?;
        let error_rate = opts
            .error_rate_query
            .as_deref()
            .filter(|q| !q.trim().is_empty())
            .map(|q| {
                let mut spec = CheckSpec::named(CheckName::ErrorRateNormalized);
                spec.query = Some(Template::parse(q).map_err(KubeExecutorError::ErrorRateQuery)?);
                spec.below = Some(opts.error_rate_below);
                Ok(spec)
            })
            .transpose()?;
        Ok(Self {
            client,
            http,
            prometheus,
            error_rate,
            opts,
            memory: Mutex::new(Memory::default()),
        })
    }

    /// An executor with the kube crate's usual configuration: the in-cluster service account,
    /// else `KUBECONFIG` / `~/.kube/config`.
    pub async fn try_default(opts: KubeExecutorOptions) -> Result<Self, KubeExecutorError> {
        let client = Client::try_default()
            .await
            .map_err(|e| KubeExecutorError::Kube(error_chain(&e)))?;
        Self::new(client, opts)
    }

    /// The API client (tests share it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// For `/readyz`: can the API server be reached and does it answer? `Ok` names its version.
    pub async fn ready(&self) -> Result<String, String> {
        match tokio::time::timeout(self.opts.api_timeout, self.client.apiserver_version()).await {
            Ok(Ok(v)) => Ok(format!("Kubernetes {}", v.git_version)),
            Ok(Err(e)) => Err(format!("Kubernetes API unreachable: {}", error_chain(&e))),
            Err(_) => Err(format!(
                "Kubernetes API did not answer within {}s",
                self.opts.api_timeout.as_secs_f64()
            )),
        }
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// One API call, bounded by `api_timeout`, its error classified and described by `what`.
    async fn call<T>(&self, what: String, fut: impl Future<Output = kube::Result<T>>) -> Result<T, KErr> {
        match tokio::time::timeout(self.opts.api_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(KErr::from_kube(&what, e)),
            Err(_) => Err(KErr::Other(format!(
                "{what}: no answer within {}s",
                self.opts.api_timeout.as_secs_f64()
            ))),
        }
    }

    /// [`Self::call`] for an object that must exist: a 404 becomes "`thing` not found".
    async fn call_existing<T>(
        &self,
        what: String,
        thing: &str,
        fut: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, ExecError> {
        self.call(what, fut).await.map_err(|e| match e {
            KErr::NotFound(_) => ExecError(format!("{thing} not found")),
            e => e.into(),
        })
    }

    /// Memory key of an execution phase: a rollback (and the checks verifying it) has its own
    /// record, so "the count the action set" means the rollback's count while verifying it.
    fn memory_key(ctx: &ExecContext<'_>) -> String {
        if ctx.rollback {
            format!("{}#rollback", ctx.action_id)
        } else {
            ctx.action_id.to_string()
        }
    }

    fn remember(&self, ctx: &ExecContext<'_>, update: impl FnOnce(&mut Remembered)) {
        let action_id = &Self::memory_key(ctx);
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if !m.entries.contains_key(action_id) {
            m.order.push_back(action_id.to_string());
            while m.order.len() > MEMORY {
                if let Some(old) = m.order.pop_front() {
                    m.entries.remove(&old);
                }
            }
        }
        update(m.entries.entry(action_id.to_string()).or_default());
    }

    fn recall(&self, ctx: &ExecContext<'_>) -> Remembered {
        let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        m.entries.get(&Self::memory_key(ctx)).cloned().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and small helpers

/// A failed API call, classified by what the callers treat differently.
#[derive(Debug, Clone)]
enum KErr {
    NotFound(String),
    Conflict(String),
    Other(String),
}

impl KErr {
    fn from_kube(what: &str, e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) => {
                let msg = format!("{what}: {} {} ({})", s.code, s.reason, s.message);
                match s.code {
                    404 => KErr::NotFound(msg),
                    409 => KErr::Conflict(msg),
                    _ => KErr::Other(msg),
                }
            }
            _ => KErr::Other(format!("{what}: {}", error_chain(&e))),
        }
    }
}

impl fmt::Display for KErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KErr::NotFound(m) | KErr::Conflict(m) | KErr::Other(m) => f.write_str(m),
        }
    }
}

impl From<KErr> for ExecError {
    fn from(e: KErr) -> Self {
        ExecError(e.to_string())
    }
}

/// Refuse names that are not RFC 1123 before they reach a request path.
fn check_names(namespace: &str, name: &str) -> Result<(), String> {
    validate(VarKind::Label, namespace).map_err(|m| format!("namespace {namespace:?} refused: {m}"))?;
    validate(VarKind::Subdomain, name).map_err(|m| format!("name {name:?} refused: {m}"))?;
    Ok(())
}

fn short_uid(uid: &str) -> &str {
    uid.get(..8).unwrap_or(uid)
}

fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|r| r.controller == Some(true))
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn revision_of(meta: &kube::core::ObjectMeta) -> Option<i64> {
    meta.annotations.as_ref()?.get(REVISION)?.parse().ok()
}

fn spec_replicas(d: &Deployment) -> i32 {
    // The API server defaults spec.replicas to 1.
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A pod template as JSON, without the controller's `pod-template-hash` label.
fn template_json(t: &PodTemplateSpec) -> Result<Value, ExecError> {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    serde_json::to_value(&t).map_err(|e| ExecError(format!("pod template not serializable: {e}")))
}

/// The JSON merge-patch (RFC 7386) that turns `from` into `to`: changed keys get their new
/// value, removed keys get `null`, lists are replaced whole. Applying it to `from` gives `to`
/// exactly, which a plain merge of `to` would not (keys only in `from` would survive).
pub fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut out = Map::new();
            for (k, tv) in t {
                match f.get(k) {
                    Some(fv) if fv == tv => {}
                    Some(fv) => {
                        out.insert(k.clone(), merge_diff(fv, tv));
                    }
                    None => {
                        out.insert(k.clone(), tv.clone());
                    }
                }
            }
            for k in f.keys() {
                if !t.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => to.clone(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The controller of a pod, resolved through its ReplicaSet to the Deployment when there is one.
#[derive(Debug, Clone, PartialEq)]
enum Owner {
    Deployment(String),
    ReplicaSet(String),
    /// Controlled by something else (StatefulSet, DaemonSet, Job, ...).
    Other {
        kind: String,
        name: String,
    },
    /// A bare pod: nothing recreates it.
    None,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Deployment(n) => write!(f, "deployment {n}"),
            Owner::ReplicaSet(n) => write!(f, "replicaset {n}"),
            Owner::Other { kind, name } => write!(f, "{kind} {name}"),
            Owner::None => f.write_str("no controller"),
        }
    }
}

/// What a check looks at, from the action (or, for actions without one, the context).
#[derive(Debug, Clone)]
enum Target {
    Pod { ns: String, name: String },
    Deployment { ns: String, name: String },
}

/// One observation of a waiting check.
enum Probe {
    /// The condition holds.
    Pass(String),
    /// Not yet; look again until the timeout.
    Wait(String),
    /// It cannot come true (or must not be waited for).
    Fail(String),
}

// ---------------------------------------------------------------------------------------------
// Actions

impl KubernetesExecutor {
    async fn delete_pod(&self, ns: &str, pod: &str, ctx: &ExecContext<'_>) -> Result<ActionReport, ExecError> {
        let pods: Api<Pod> = self.api(ns);
        let p = self
            .call_existing(format!("get pod {ns}/{pod}"), &format!("pod {ns}/{pod}"), pods.get(pod))
            .await?;
        let uid = p
            .metadata
            .uid
            .clone()
            .ok_or_else(|| ExecError(format!("pod {ns}/{pod} has no uid; refusing an unfenced delete")))?;
        // The owner is resolved before deleting: afterwards the pod (and its ownerReferences)
        // is gone, and pod_becomes_ready needs it to know what should replace the pod.
        let owner = match self.pod_owner(ns, &p).await {
            Ok(o) => Some(o),
            Err(e) => {
                warn!(error = %e, "could not resolve the owner of pod {ns}/{pod}");
                None
            }
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let detail = match self.call(format!("delete pod {ns}/{pod}"), pods.delete(pod, &dp)).await {
            Ok(_) => format!("deleted pod {ns}/{pod} (uid {})", short_uid(&uid)),
            Err(KErr::NotFound(_)) => format!("pod {ns}/{pod} (uid {}) was already gone", short_uid(&uid)),
            Err(KErr::Conflict(m)) => {
                return Err(ExecError(format!(
                    "pod {ns}/{pod} was replaced after it was read (uid precondition {uid} failed); the new pod was \
                     not touched: {m}"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let mut report = ActionReport {
            detail,
            ..ActionReport::default()
        };
        report.captured.insert("deleted_pod_uid".into(), uid.clone());
        if let Some(Owner::Deployment(d)) = &owner {
            report.captured.insert("deployment".into(), d.clone());
        }
        if let Some(o) = &owner {
            report.detail.push_str(&format!(", owned by {o}"));
        }
        let deleted = DeletedPod {
            namespace: ns.to_string(),
            name: pod.to_string(),
            uid,
            owner,
        };
        self.remember(ctx, |r| r.deleted_pod = Some(deleted));
        Ok(report)
    }

    async fn scale(
        &self,
        ns: &str,
        name: &str,
        replicas: &Replicas,
        ctx: &ExecContext<'_>,
    ) -> Result<ActionReport, ExecError> {
        let deployments: Api<Deployment> = self.api(ns);
        let mut attempt = 0;
        loop {
            let scale = self
                .call_existing(
                    format!("get deployment {ns}/{name} scale"),
                    &format!("deployment {ns}/{name}"),
                    deployments.get_scale(name),
                )
                .await?;
            let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
            let rv = scale
                .metadata
                .resource_version
                .clone()
                .ok_or_else(|| ExecError(format!("deployment {ns}/{name} scale has no resourceVersion")))?;
            let mut report = ActionReport::default();
            // The runbook's direction and bounds, judged on the count just read: the patch below
            // carries this read's resourceVersion, so the count cannot change in between.
            let target = match replicas.target(current) {
                Ok(t) => t,
                Err(why) => {
                    report.refused = Some(format!("deployment {ns}/{name}: {why}"));
                    report.detail = format!("deployment {ns}/{name} left at {current} replicas");
                    return Ok(report);
                }
            };
            report.captured.insert("old_replicas".into(), current.to_string());
            self.remember(ctx, |r| r.scaled_to = Some(target));
            if target == current {
                report.detail = format!("deployment {ns}/{name} already has {current} replicas; nothing changed");
                return Ok(report);
            }
            // Carrying the observed resourceVersion makes the API server refuse (409) a scale
            // computed from a count someone else changed meanwhile.
            let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": target}});
            match self
                .call(
                    format!("scale deployment {ns}/{name}"),
                    deployments.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await
            {
                Ok(_) => {
                    report.detail = format!("scaled deployment {ns}/{name} from {current} to {target} replicas");
                    return Ok(report);
                }
                Err(KErr::Conflict(m)) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    info!(%m, attempt, "scale conflicted with a concurrent change; re-reading");
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn rollout_restart(&self, ns: &str, name: &str, ctx: &ExecContext<'_>) -> Result<ActionReport, ExecError> {
        let deployments: Api<Deployment> = self.api(ns);
        let d = self
            .call_existing(
                format!("get deployment {ns}/{name}"),
                &format!("deployment {ns}/{name}"),
                deployments.get(name),
            )
            .await?;
        let stamped = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTARTED_BY))
            .is_some_and(|v| v == ctx.action_id);
        if stamped {
            return Ok(ActionReport {
                detail: format!(
                    "deployment {ns}/{name} was already restarted by this action ({RESTARTED_BY}={}); nothing changed",
                    ctx.action_id
                ),
                ..ActionReport::default()
            });
        }
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_BY: ctx.action_id}}}}});
        self.call(
            format!("restart deployment {ns}/{name}"),
            deployments.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
        Ok(ActionReport {
            detail: format!(
                "rollout restart of deployment {ns}/{name} ({RESTARTED_BY}={})",
                ctx.action_id
            ),
            ..ActionReport::default()
        })
    }

    /// ReplicaSets controlled by `d` with their revisions, highest first.
    async fn revisions(&self, ns: &str, d: &Deployment) -> Result<Vec<(i64, ReplicaSet)>, KErr> {
        let name = d.metadata.name.as_deref().unwrap_or("?");
        let uid = d.metadata.uid.as_deref().unwrap_or("");
        let mut lp = ListParams::default();
        if let Some(sel) = d.spec.as_ref().map(|s| s.selector.clone()) {
            if let Ok(s) = Selector::try_from(sel) {
                lp = lp.labels_from(&s);
            }
        }
        let rss: Api<ReplicaSet> = self.api(ns);
        let list = self
            .call(format!("list replicasets of deployment {ns}/{name}"), rss.list(&lp))
            .await?;
        // Ownership, not labels, decides: another deployment's ReplicaSets may match the selector.
        let mut out: Vec<(i64, ReplicaSet)> = list
            .items
            .into_iter()
            .filter(|rs| controller_of(rs.metadata.owner_references.as_ref()).is_some_and(|o| o.uid == uid))
            .filter_map(|rs| revision_of(&rs.metadata).map(|r| (r, rs)))
            .collect();
        out.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
        Ok(out)
    }

    /// Wait (briefly) until the deployment controller has processed the latest spec, so its
    /// revision bookkeeping describes the current template. Right after an undo the previous
    /// revision is still labelled with its old number until the controller renumbers it.
    async fn observed(&self, ns: &str, name: &str) -> Result<Deployment, ExecError> {
        let deployments: Api<Deployment> = self.api(ns);
        let started = Instant::now();
        loop {
            let d = self
                .call_existing(
                    format!("get deployment {ns}/{name}"),
                    &format!("deployment {ns}/{name}"),
                    deployments.get(name),
                )
                .await?;
            let generation = d.metadata.generation.unwrap_or(0);
            let observed = d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if observed >= generation {
                return Ok(d);
            }
            if started.elapsed() >= self.opts.api_timeout {
                return Err(ExecError(format!(
                    "deployment {ns}/{name}: the controller has not observed generation {generation} (observed \
                     {observed}) within {}; its revision history may be stale, not rolling back",
                    secs(self.opts.api_timeout)
                )));
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// The revision `d` is at and the revision (with its ReplicaSet) an undo restores: the
    /// highest one below it, as `kubectl rollout undo` picks it.
    fn undo_target<'r>(
        ns: &str,
        name: &str,
        d: &Deployment,
        revisions: &'r [(i64, ReplicaSet)],
    ) -> Result<(i64, &'r (i64, ReplicaSet)), ExecError> {
        let current = revision_of(&d.metadata).or_else(|| revisions.first().map(|(r, _)| *r));
        let Some(current) = current else {
            return Err(ExecError(format!("deployment {ns}/{name} has no revision history")));
        };
        let Some(previous) = revisions.iter().find(|(r, _)| *r < current) else {
            let known: Vec<String> = revisions.iter().map(|(r, _)| r.to_string()).collect();
            return Err(ExecError(format!(
                "deployment {ns}/{name} has no previous revision to roll back to (current revision {current}, \
                 revisions [{}])",
                known.join(", ")
            )));
        };
        Ok((current, previous))
    }

    /// The live revisions an undo of `ns/name` would go from and to, read as the undo reads them.
    async fn undo_pin(&self, ns: &str, name: &str) -> Result<RevisionPin, ExecError> {
        let d = self.observed(ns, name).await?;
        let revisions = self.revisions(ns, &d).await?;
        let (from, (to, _)) = Self::undo_target(ns, name, &d, &revisions)?;
        Ok(RevisionPin { from, to: *to })
    }

    async fn rollout_undo(&self, ns: &str, name: &str, pin: Option<RevisionPin>) -> Result<ActionReport, ExecError> {
        let deployments: Api<Deployment> = self.api(ns);
        let mut attempt = 0;
        loop {
            let d = self.observed(ns, name).await?;
            let revisions = self.revisions(ns, &d).await?;
            let (current, (previous, rs)) = Self::undo_target(ns, name, &d, &revisions)?;
            // Approved at other revisions: a deploy (or another undo) since the approval was asked
            // for changed what this undo would restore. The patch below carries this read's
            // resourceVersion, so a change after this comparison conflicts and is compared again.
            if let Some(p) = pin.filter(|p| (p.from, p.to) != (current, *previous)) {
                return Ok(ActionReport {
                    detail: format!("deployment {ns}/{name} left at revision {current}"),
                    refused: Some(format!(
                        "deployment {ns}/{name} is at revision {current} (an undo would restore revision {previous}), \
                         but this undo was approved at revision {} to restore revision {}: the deployment changed \
                         since the approval was asked for (ask again)",
                        p.from, p.to
                    )),
                    ..ActionReport::default()
                });
            }
            let Some(old) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
                return Err(ExecError(format!(
                    "replicaset of revision {previous} of deployment {ns}/{name} has no pod template"
                )));
            };
            let Some(now) = d.spec.as_ref().map(|s| &s.template) else {
                return Err(ExecError(format!("deployment {ns}/{name} has no spec")));
            };
            let (from, to) = (template_json(now)?, template_json(old)?);
            let mut report = ActionReport::default();
            report
                .captured
                .insert("undone_from_revision".into(), current.to_string());
            report.captured.insert("restored_revision".into(), previous.to_string());
            if from == to {
                report.detail = format!(
                    "deployment {ns}/{name}: the current template already matches revision {previous}; nothing changed"
                );
                return Ok(report);
            }
            let rv = d.metadata.resource_version.clone().unwrap_or_default();
            let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"template": merge_diff(&from, &to)}});
            match self
                .call(
                    format!("roll back deployment {ns}/{name}"),
                    deployments.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await
            {
                Ok(_) => {
                    report.detail = format!(
                        "rolled back deployment {ns}/{name} from revision {current} to the template of revision \
                         {previous}"
                    );
                    return Ok(report);
                }
                Err(KErr::Conflict(m)) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    info!(%m, attempt, "rollback conflicted with a concurrent change; re-reading");
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn patch(&self, resource: &str, ns: &str, name: &str, patch: &Value) -> Result<ActionReport, ExecError> {
        if !patch.is_object() {
            return Err(ExecError(format!(
                "the patch for {resource}/{name} must be a JSON object, got {patch}"
            )));
        }
        match resource {
            "deployments" => {
                self.merge_patch(self.api::<Deployment>(ns), resource, ns, name, patch)
                    .await
            }
            "statefulsets" => {
                self.merge_patch(self.api::<StatefulSet>(ns), resource, ns, name, patch)
                    .await
            }
            "daemonsets" => {
                self.merge_patch(self.api::<DaemonSet>(ns), resource, ns, name, patch)
                    .await
            }
            "configmaps" => {
                self.merge_patch(self.api::<ConfigMap>(ns), resource, ns, name, patch)
                    .await
            }
            "horizontalpodautoscalers" => {
                self.merge_patch(self.api::<HorizontalPodAutoscaler>(ns), resource, ns, name, patch)
                    .await
            }
            other => Err(ExecError(format!(
                "resource {other:?} cannot be patched (allowed: {})",
                PATCHABLE.join(", ")
            ))),
        }
    }

    async fn merge_patch<K>(
        &self,
        api: Api<K>,
        resource: &str,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<ActionReport, ExecError>
    where
        K: Resource + Clone + DeserializeOwned + fmt::Debug,
    {
        let mut attempt = 0;
        loop {
            let obj = self
                .call_existing(
                    format!("get {resource} {ns}/{name}"),
                    &format!("{resource} {ns}/{name}"),
                    api.get(name),
                )
                .await?;
            let before = obj.meta().resource_version.clone().unwrap_or_default();
            // Fence with the resourceVersion just read, unless the runbook pinned its own (then a
            // conflict is final: re-reading cannot make a pinned version current).
            let pinned = patch.pointer("/metadata/resourceVersion").is_some();
            let mut fenced = patch.clone();
            if !pinned {
                if let Some(o) = fenced.as_object_mut() {
                    let meta = o.entry("metadata").or_insert_with(|| json!({}));
                    if let Some(m) = meta.as_object_mut() {
                        m.insert("resourceVersion".into(), Value::from(before.clone()));
                    }
                }
            }
            match self
                .call(
                    format!("patch {resource} {ns}/{name}"),
                    api.patch(name, &PatchParams::default(), &Patch::Merge(&fenced)),
                )
                .await
            {
                Ok(after) => {
                    let after = after.meta().resource_version.clone().unwrap_or_default();
                    let detail = if after == before {
                        format!("merge-patched {resource} {ns}/{name}: already as requested, nothing changed")
                    } else {
                        format!("merge-patched {resource} {ns}/{name} (resourceVersion {before} -> {after})")
                    };
                    return Ok(ActionReport {
                        detail,
                        ..ActionReport::default()
                    });
                }
                Err(KErr::Conflict(m)) if attempt < CONFLICT_RETRIES && !pinned => {
                    attempt += 1;
                    info!(%m, attempt, "patch conflicted with a concurrent change; re-reading");
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Observations shared by checks

impl KubernetesExecutor {
    async fn pod_owner(&self, ns: &str, pod: &Pod) -> Result<Owner, KErr> {
        let Some(c) = controller_of(pod.metadata.owner_references.as_ref()) else {
            return Ok(Owner::None);
        };
        if c.kind != "ReplicaSet" {
            return Ok(Owner::Other {
                kind: c.kind.clone(),
                name: c.name.clone(),
            });
        }
        let rss: Api<ReplicaSet> = self.api(ns);
        let rs = self
            .call(format!("get replicaset {ns}/{}", c.name), rss.get(&c.name))
            .await?;
        Ok(match controller_of(rs.metadata.owner_references.as_ref()) {
            Some(d) if d.kind == "Deployment" => Owner::Deployment(d.name.clone()),
            Some(o) => Owner::Other {
                kind: o.kind.clone(),
                name: o.name.clone(),
            },
            None => Owner::ReplicaSet(c.name.clone()),
        })
    }

    async fn get_pod(&self, ns: &str, name: &str) -> Result<Pod, String> {
        let pods: Api<Pod> = self.api(ns);
        self.call(format!("get pod {ns}/{name}"), pods.get(name))
            .await
            .map_err(|e| match e {
                KErr::NotFound(_) => format!("pod {ns}/{name} not found"),
                e => e.to_string(),
            })
    }

    async fn get_deployment(&self, ns: &str, name: &str) -> Result<Deployment, KErr> {
        let deployments: Api<Deployment> = self.api(ns);
        self.call(format!("get deployment {ns}/{name}"), deployments.get(name))
            .await
            .map_err(|e| match e {
                KErr::NotFound(_) => KErr::NotFound(format!("deployment {ns}/{name} not found")),
                e => e,
            })
    }

    /// The deployment a check is about: the action's, or the one owning the action's pod (as
    /// resolved before this execution deleted it, when it did).
    async fn deployment_target(&self, target: &Target, ctx: &ExecContext<'_>) -> Result<(String, String), String> {
        if let Some(DeletedPod {
            namespace,
            owner: Some(Owner::Deployment(d)),
            ..
        }) = self.recall(ctx).deleted_pod
        {
            return Ok((namespace, d));
        }
        match target {
            Target::Deployment { ns, name } => Ok((ns.clone(), name.clone())),
            Target::Pod { ns, name } => {
                let p = self.get_pod(ns, name).await?;
                match self.pod_owner(ns, &p).await.map_err(|e| e.to_string())? {
                    Owner::Deployment(d) => Ok((ns.clone(), d)),
                    other => Err(format!("pod {ns}/{name} is not part of a deployment ({other})")),
                }
            }
        }
    }

    /// Ready, not-terminating pods matching a selector.
    async fn ready_pods(&self, ns: &str, selector: &LabelSelector) -> Result<(usize, Vec<String>), String> {
        let sel = Selector::try_from(selector.clone()).map_err(|e| format!("unusable selector: {e}"))?;
        if sel.selects_all() {
            return Err("refusing an empty selector (it would match every pod)".into());
        }
        let pods: Api<Pod> = self.api(ns);
        let list = self
            .call(
                format!("list pods in {ns}"),
                pods.list(&ListParams::default().labels_from(&sel)),
            )
            .await
            .map_err(|e| e.to_string())?;
        let uids = list.items.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        Ok((list.items.iter().filter(|p| is_ready(p)).count(), uids))
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

impl KubernetesExecutor {
    /// What a check looks at: the action's pod or deployment; for actions without one (patch of
    /// a non-deployment, webhook), the incident's `namespace` + `deployment` or `pod_name`.
    fn target(ctx: &ExecContext<'_>) -> Result<Target, String> {
        let t = match ctx.action {
            Action::DeletePod { namespace, pod } => Target::Pod {
                ns: namespace.clone(),
                name: pod.clone(),
            },
            Action::ScaleDeployment {
                namespace, deployment, ..
            }
            | Action::RolloutRestart { namespace, deployment }
            | Action::RolloutUndo {
                namespace, deployment, ..
            }
            | Action::ScaleToZero { namespace, deployment } => Target::Deployment {
                ns: namespace.clone(),
                name: deployment.clone(),
            },
            Action::Patch {
                resource,
                namespace,
                name,
                ..
            } if resource == "deployments" => Target::Deployment {
                ns: namespace.clone(),
                name: name.clone(),
            },
            other => {
                let ns = ctx.vars.get("namespace").ok();
                match (ns, ctx.vars.get("deployment").ok(), ctx.vars.get("pod_name").ok()) {
                    (Some(ns), Some(name), _) => Target::Deployment { ns, name },
                    (Some(ns), None, Some(name)) => Target::Pod { ns, name },
                    _ => {
                        return Err(format!(
                            "action {} has no pod or deployment target and the incident names none \
                             (context.namespace with context.deployment or context.pod_name)",
                            other.kind()
                        ))
                    }
                }
            }
        };
        let (Target::Pod { ns, name } | Target::Deployment { ns, name }) = &t;
        check_names(ns, name).map_err(|m| format!("refusing to call the API: {m}"))?;
        Ok(t)
    }

    /// How long a check waits for its condition; `None` for checks that look once.
    fn wait_of(&self, check: &CheckSpec) -> Option<Duration> {
        self.opts.wait_of(check)
    }

    /// Observe until the probe passes or fails, or `wait` runs out (`None`: observe once).
    async fn poll<F, Fut>(&self, wait: Option<Duration>, mut probe: F) -> CheckResult
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Probe>,
    {
        let started = Instant::now();
        loop {
            match probe().await {
                Probe::Pass(d) if wait.is_some() => {
                    return CheckResult::pass(format!("{d} (after {})", secs(started.elapsed())))
                }
                Probe::Pass(d) => return CheckResult::pass(d),
                Probe::Fail(d) => return CheckResult::fail(d),
                Probe::Wait(d) => {
                    let Some(w) = wait else {
                        return CheckResult::fail(d);
                    };
                    let elapsed = started.elapsed();
                    if elapsed >= w {
                        return CheckResult::fail(format!("{d} (timed out after {})", secs(w)));
                    }
                    // The last look happens at the deadline, not one interval before it.
                    tokio::time::sleep(self.opts.poll_interval.min(w - elapsed)).await;
                }
            }
        }
    }

    async fn run_check(&self, check: &CheckSpec, ctx: &ExecContext<'_>) -> CheckResult {
        let wait = self.wait_of(check);
        match check.name {
            CheckName::OffPeakHours => self.off_peak(check),
            CheckName::ErrorRateNormalized if check.query.is_none() => match &self.error_rate {
                Some(default) => {
                    let mut spec = default.clone();
                    spec.timeout = check.timeout;
                    let r = self.poll(wait, || self.probe_query(&spec, ctx)).await;
                    CheckResult {
                        passed: r.passed,
                        detail: format!("default error-rate query: {}", r.detail),
                    }
                }
                None => CheckResult::fail("no Prometheus query configured"),
            },
            CheckName::PrometheusQuery | CheckName::ErrorRateNormalized => {
                if check.query.is_none() {
                    return CheckResult::fail("no Prometheus query configured");
                }
                self.poll(wait, || self.probe_query(check, ctx)).await
            }
            CheckName::MetricsImproved if check.query.is_some() => {
                self.poll(wait, || self.probe_query(check, ctx)).await
            }
            _ => {
                let target = match Self::target(ctx) {
                    Ok(t) => t,
                    Err(m) => return CheckResult::fail(m),
                };
                match check.name {
                    CheckName::ReplicasGreaterThanOne => self.replicas_greater_than_one(&target).await,
                    CheckName::RecentRestartsLessThanThree => {
                        self.recent_restarts(&target, check.max_restarts.unwrap_or(3)).await
                    }
                    CheckName::CurrentReplicasBelowMax => {
                        self.replicas_below_max(&target, check.max_replicas.unwrap_or(10), ctx)
                            .await
                    }
                    CheckName::DeploymentExists => self.deployment_exists(&target, ctx).await,
                    CheckName::PreviousRevisionAvailable => self.previous_revision(&target, ctx).await,
                    CheckName::PodBecomesReady => self.pod_becomes_ready(&target, ctx, wait).await,
                    CheckName::DeploymentRolledOut | CheckName::MetricsImproved => {
                        let (ns, name) = match self.deployment_target(&target, ctx).await {
                            Ok(t) => t,
                            Err(m) => return CheckResult::fail(m),
                        };
                        let expect = self.recall(ctx).scaled_to;
                        let r = self.poll(wait, || self.probe_rolled_out(&ns, &name, expect)).await;
                        if check.name == CheckName::MetricsImproved {
                            // Documented fallback: without a query, "the metrics improved" is
                            // read as "the new replica count is rolled out and available".
                            CheckResult {
                                passed: r.passed,
                                detail: format!(
                                    "no Prometheus query configured; fell back to the rollout: {}",
                                    r.detail
                                ),
                            }
                        } else {
                            r
                        }
                    }
                    // Handled above; kept exhaustive so a new check name fails to compile here.
                    CheckName::OffPeakHours | CheckName::PrometheusQuery | CheckName::ErrorRateNormalized => {
                        CheckResult::fail(format!("check {} misrouted", check.name()))
                    }
                }
            }
        }
    }

    fn off_peak(&self, check: &CheckSpec) -> CheckResult {
        let (start, end) = (check.start_hour.unwrap_or(22), check.end_hour.unwrap_or(6));
        let now = self.opts.clock.now();
        let h = now.hour() as u8;
        // [start, end) in UTC hours, wrapping past midnight when start > end; start == end is an
        // empty window (use 0..24 for "always").
        let inside = match start.cmp(&end) {
            std::cmp::Ordering::Less => start <= h && h < end,
            std::cmp::Ordering::Greater => h >= start || h < end,
            std::cmp::Ordering::Equal => false,
        };
        let detail = format!(
            "{} UTC is {} the off-peak window {start:02}:00-{end:02}:00 UTC",
            now.format("%H:%M"),
            if inside { "inside" } else { "outside" }
        );
        CheckResult { passed: inside, detail }
    }

    async fn probe_query(&self, check: &CheckSpec, ctx: &ExecContext<'_>) -> Probe {
        let Some(template) = &check.query else {
            return Probe::Fail("no Prometheus query configured".into());
        };
        let query = match template.render(ctx.vars) {
            Ok(q) => q,
            Err(e) => return Probe::Fail(format!("query not rendered: {e}")),
        };
        let Some(prom) = &self.prometheus else {
            return Probe::Fail(format!(
                "no Prometheus URL configured (prometheus_url); cannot evaluate {query}"
            ));
        };
        if check.below.is_none() && check.above.is_none() {
            return Probe::Fail(format!("query {query} has no threshold (below/above)"));
        }
        let v = match prom.query(&query, self.opts.api_timeout).await {
            Ok(v) => v,
            Err(e) => return Probe::Wait(e.to_string()),
        };
        let mut reasons = Vec::new();
        let mut ok = true;
        if let Some(b) = check.below {
            ok &= v < b;
            reasons.push(format!("{} {b}", if v < b { "below" } else { "not below" }));
        }
        if let Some(a) = check.above {
            ok &= v > a;
            reasons.push(format!("{} {a}", if v > a { "above" } else { "not above" }));
        }
        let detail = format!("{query} = {v} ({})", reasons.join(", "));
        if ok {
            Probe::Pass(detail)
        } else {
            Probe::Wait(detail)
        }
    }

    async fn replicas_greater_than_one(&self, target: &Target) -> CheckResult {
        let (n, what) = match target {
            Target::Deployment { ns, name } => match self.get_deployment(ns, name).await {
                Ok(d) => (spec_replicas(&d), format!("deployment {ns}/{name}")),
                Err(e) => return CheckResult::fail(e.to_string()),
            },
            Target::Pod { ns, name } => {
                let p = match self.get_pod(ns, name).await {
                    Ok(p) => p,
                    Err(m) => return CheckResult::fail(m),
                };
                match self.pod_owner(ns, &p).await {
                    Err(e) => return CheckResult::fail(e.to_string()),
                    Ok(Owner::Deployment(d)) => match self.get_deployment(ns, &d).await {
                        Ok(dep) => (
                            spec_replicas(&dep),
                            format!("pod {name} belongs to deployment {d}, which"),
                        ),
                        Err(e) => return CheckResult::fail(e.to_string()),
                    },
                    Ok(Owner::ReplicaSet(rs)) => {
                        let api: Api<ReplicaSet> = self.api(ns);
                        match self.call(format!("get replicaset {ns}/{rs}"), api.get(&rs)).await {
                            Ok(r) => (
                                r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                                format!("pod {name} belongs to replicaset {rs}, which"),
                            ),
                            Err(e) => return CheckResult::fail(e.to_string()),
                        }
                    }
                    Ok(Owner::None) => {
                        return CheckResult::fail(format!(
                            "pod {ns}/{name} has no controller: a bare pod counts as 1 replica"
                        ))
                    }
                    Ok(Owner::Other { kind, name: o }) => {
                        return CheckResult::fail(format!(
                            "pod {ns}/{name} is controlled by {kind} {o}; only Deployments and ReplicaSets are \
                             counted"
                        ))
                    }
                }
            }
        };
        let detail = format!("{what} has {n} replica{}", if n == 1 { "" } else { "s" });
        if n > 1 {
            CheckResult::pass(detail)
        } else {
            CheckResult::fail(format!("{detail} (needs more than 1)"))
        }
    }

    async fn recent_restarts(&self, target: &Target, max: u32) -> CheckResult {
        let Target::Pod { ns, name } = target else {
            return CheckResult::fail("recent_restarts_less_than_three needs a pod target (context.pod_name)");
        };
        let p = match self.get_pod(ns, name).await {
            Ok(p) => p,
            Err(m) => return CheckResult::fail(m),
        };
        let restarts: i64 = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count.max(0) as i64).sum())
            .unwrap_or(0);
        let detail = format!(
            "pod {ns}/{name} restarted {restarts} time{}",
            if restarts == 1 { "" } else { "s" }
        );
        if restarts < max as i64 {
            CheckResult::pass(format!("{detail} (< {max})"))
        } else {
            CheckResult::fail(format!("{detail} (limit: fewer than {max})"))
        }
    }

    async fn replicas_below_max(&self, target: &Target, max: u32, ctx: &ExecContext<'_>) -> CheckResult {
        let (ns, name) = match self.deployment_target(target, ctx).await {
            Ok(t) => t,
            Err(m) => return CheckResult::fail(m),
        };
        match self.get_deployment(&ns, &name).await {
            Err(e) => CheckResult::fail(e.to_string()),
            Ok(d) => {
                let n = spec_replicas(&d);
                let detail = format!("deployment {ns}/{name} has {n} replicas");
                if (n as i64) < max as i64 {
                    CheckResult::pass(format!("{detail} (< max {max})"))
                } else {
                    CheckResult::fail(format!("{detail} (max {max})"))
                }
            }
        }
    }

    async fn deployment_exists(&self, target: &Target, ctx: &ExecContext<'_>) -> CheckResult {
        let (ns, name) = match self.deployment_target(target, ctx).await {
            Ok(t) => t,
            Err(m) => return CheckResult::fail(m),
        };
        match self.get_deployment(&ns, &name).await {
            Ok(d) => CheckResult::pass(format!(
                "deployment {ns}/{name} exists ({} replicas, generation {})",
                spec_replicas(&d),
                d.metadata.generation.unwrap_or(0)
            )),
            Err(e) => CheckResult::fail(e.to_string()),
        }
    }

    async fn previous_revision(&self, target: &Target, ctx: &ExecContext<'_>) -> CheckResult {
        let (ns, name) = match self.deployment_target(target, ctx).await {
            Ok(t) => t,
            Err(m) => return CheckResult::fail(m),
        };
        let d = match self.get_deployment(&ns, &name).await {
            Ok(d) => d,
            Err(e) => return CheckResult::fail(e.to_string()),
        };
        match self.revisions(&ns, &d).await {
            Err(e) => CheckResult::fail(e.to_string()),
            Ok(revs) => {
                let list: Vec<String> = revs.iter().map(|(r, _)| r.to_string()).collect();
                if revs.len() >= 2 {
                    CheckResult::pass(format!(
                        "deployment {ns}/{name} has revisions [{}]: revision {} can be restored",
                        list.join(", "),
                        revs[1].0
                    ))
                } else {
                    CheckResult::fail(format!(
                        "deployment {ns}/{name} has no previous revision (revisions [{}])",
                        list.join(", ")
                    ))
                }
            }
        }
    }

    async fn probe_rolled_out(&self, ns: &str, name: &str, expect: Option<u32>) -> Probe {
        let d = match self.get_deployment(ns, name).await {
            Ok(d) => d,
            Err(e @ KErr::NotFound(_)) => return Probe::Fail(e.to_string()),
            Err(e) => return Probe::Wait(e.to_string()),
        };
        let want = spec_replicas(&d);
        let generation = d.metadata.generation.unwrap_or(0);
        let st = d.status.clone().unwrap_or_default();
        let observed = st.observed_generation.unwrap_or(0);
        let (updated, total, available) = (
            st.updated_replicas.unwrap_or(0),
            st.replicas.unwrap_or(0),
            st.available_replicas.unwrap_or(0),
        );
        if let Some(c) = st
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
        {
            if c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
                return Probe::Fail(format!(
                    "deployment {ns}/{name} exceeded its progress deadline: {}",
                    c.message.as_deref().unwrap_or("")
                ));
            }
        }
        if let Some(e) = expect {
            if want as i64 != e as i64 {
                return Probe::Fail(format!(
                    "deployment {ns}/{name} wants {want} replicas, but the action set {e} (changed by someone else?)"
                ));
            }
        }
        let state = format!("deployment {ns}/{name}: {updated}/{want} updated, {available}/{want} available");
        if observed < generation {
            Probe::Wait(format!(
                "{state}; generation {generation} not yet observed (observed {observed})"
            ))
        } else if updated < want {
            Probe::Wait(state)
        } else if total > updated {
            Probe::Wait(format!("{state}; {} old replicas pending termination", total - updated))
        } else if available < updated {
            Probe::Wait(state)
        } else {
            Probe::Pass(format!(
                "deployment {ns}/{name} rolled out: {want}/{want} replicas updated and available"
            ))
        }
    }

    async fn pod_becomes_ready(&self, target: &Target, ctx: &ExecContext<'_>, wait: Option<Duration>) -> CheckResult {
        // After a delete_pod of this execution: the old uid must be gone and its controller
        // back to full strength. Otherwise: the pod (or every pod of the deployment) Ready.
        let deleted = self.recall(ctx).deleted_pod;
        let (ns, pod, uid, owner) = match (&deleted, target) {
            (Some(d), _) => {
                let owner = match (&d.owner, ctx.vars.get("deployment")) {
                    (Some(o), _) => o.clone(),
                    (None, Ok(dep)) => Owner::Deployment(dep),
                    (None, Err(_)) => {
                        return CheckResult::fail(format!(
                            "the controller of deleted pod {}/{} could not be resolved, so its replacement cannot \
                             be verified",
                            d.namespace, d.name
                        ))
                    }
                };
                (d.namespace.clone(), Some(d.name.clone()), Some(d.uid.clone()), owner)
            }
            (None, Target::Deployment { ns, name }) => (ns.clone(), None, None, Owner::Deployment(name.clone())),
            (None, Target::Pod { ns, name }) => {
                let owner = match self.get_pod(ns, name).await {
                    Ok(p) => self.pod_owner(ns, &p).await.unwrap_or(Owner::None),
                    Err(_) => match ctx.vars.get("deployment") {
                        Ok(d) => Owner::Deployment(d),
                        Err(_) => Owner::None,
                    },
                };
                (ns.clone(), Some(name.clone()), None, owner)
            }
        };
        if uid.is_some() && owner == Owner::None {
            return CheckResult::fail(format!(
                "pod {ns}/{} had no controller: nothing will replace it",
                pod.as_deref().unwrap_or("?")
            ));
        }
        self.poll(wait, || {
            self.probe_pod_ready(&ns, pod.as_deref(), uid.as_deref(), &owner)
        })
        .await
    }

    async fn probe_pod_ready(&self, ns: &str, pod: Option<&str>, uid: Option<&str>, owner: &Owner) -> Probe {
        let mut parts = Vec::new();
        if let Some(name) = pod {
            let pods: Api<Pod> = self.api(ns);
            match self.call(format!("get pod {ns}/{name}"), pods.get(name)).await {
                Err(KErr::NotFound(_)) => match uid {
                    Some(u) => parts.push(format!("old pod {name} (uid {}) is gone", short_uid(u))),
                    None if matches!(owner, Owner::Deployment(_) | Owner::ReplicaSet(_)) => {
                        parts.push(format!("pod {name} is gone"))
                    }
                    None => return Probe::Wait(format!("pod {ns}/{name} not found")),
                },
                Err(e) => return Probe::Wait(e.to_string()),
                Ok(p) => {
                    let same = uid.is_some() && p.metadata.uid.as_deref() == uid;
                    if same {
                        return Probe::Wait(format!(
                            "old pod {ns}/{name} (uid {}) still present{}",
                            short_uid(uid.unwrap_or("")),
                            if p.metadata.deletion_timestamp.is_some() {
                                " (terminating)"
                            } else {
                                ""
                            }
                        ));
                    }
                    // A replacement under the same name (StatefulSet) or the pod itself.
                    let replaced = if uid.is_some() { "replacement " } else { "" };
                    if !is_ready(&p) {
                        return Probe::Wait(format!("{replaced}pod {ns}/{name} not Ready yet"));
                    }
                    if matches!(owner, Owner::Other { .. } | Owner::None) {
                        return Probe::Pass(format!("{replaced}pod {ns}/{name} is Ready"));
                    }
                    parts.push(format!("{replaced}pod {name} is Ready"));
                }
            }
        }
        let (what, want, selector, status_ready) = match owner {
            Owner::Deployment(d) => match self.get_deployment(ns, d).await {
                Ok(dep) => (
                    format!("deployment {d}"),
                    spec_replicas(&dep),
                    dep.spec.as_ref().map(|s| s.selector.clone()),
                    dep.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
                ),
                Err(e @ KErr::NotFound(_)) => return Probe::Fail(e.to_string()),
                Err(e) => return Probe::Wait(e.to_string()),
            },
            Owner::ReplicaSet(r) => {
                let api: Api<ReplicaSet> = self.api(ns);
                match self.call(format!("get replicaset {ns}/{r}"), api.get(r)).await {
                    Ok(rs) => (
                        format!("replicaset {r}"),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        rs.spec.as_ref().map(|s| s.selector.clone()),
                        rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
                    ),
                    Err(e @ KErr::NotFound(_)) => return Probe::Fail(e.to_string()),
                    Err(e) => return Probe::Wait(e.to_string()),
                }
            }
            Owner::Other { .. } | Owner::None => {
                return Probe::Fail(format!(
                    "cannot tell whether pod {ns}/{} became Ready ({owner})",
                    pod.unwrap_or("?")
                ))
            }
        };
        let Some(selector) = selector else {
            return Probe::Fail(format!("{what} has no selector"));
        };
        // Pods counted directly, because the controller's status lags behind a deletion: it may
        // still say "3 ready" while the replacement is being created.
        let (ready, uids) = match self.ready_pods(ns, &selector).await {
            Ok(r) => r,
            Err(m) => return Probe::Wait(m),
        };
        if let Some(u) = uid {
            if uids.iter().any(|x| x == u) {
                return Probe::Wait(format!("old pod (uid {}) still listed", short_uid(u)));
            }
        }
        parts.push(format!(
            "{what} has {ready}/{want} pods Ready (status: {status_ready} ready)"
        ));
        let detail = parts.join("; ");
        if ready as i64 >= want as i64 && status_ready >= want {
            Probe::Pass(detail)
        } else {
            Probe::Wait(detail)
        }
    }
}

#[async_trait::async_trait]
impl Executor for KubernetesExecutor {
    async fn check(&self, check: &CheckSpec, ctx: &ExecContext<'_>) -> CheckResult {
        // A hard ceiling over the whole check: its own wait plus one more API call of slack.
        let limit = self.opts.check_ceiling(check);
        match tokio::time::timeout(limit, self.run_check(check, ctx)).await {
            Ok(r) => r,
            Err(_) => CheckResult::fail(format!("{}: no result within {}", check.name(), secs(limit))),
        }
    }

    async fn execute(&self, action: &Action, ctx: &ExecContext<'_>) -> Result<ActionReport, ExecError> {
        let names = match action {
            Action::DeletePod { namespace, pod } => Some((namespace, pod)),
            Action::ScaleDeployment {
                namespace, deployment, ..
            }
            | Action::RolloutRestart { namespace, deployment }
            | Action::RolloutUndo {
                namespace, deployment, ..
            }
            | Action::ScaleToZero { namespace, deployment } => Some((namespace, deployment)),
            Action::Patch { namespace, name, .. } => Some((namespace, name)),
            Action::Webhook { .. } => None,
        };
        if let Some((ns, name)) = names {
            check_names(ns, name).map_err(|m| ExecError(format!("refusing to call the API: {m}")))?;
        }
        let report = match action {
            Action::DeletePod { namespace, pod } => self.delete_pod(namespace, pod, ctx).await,
            Action::ScaleDeployment {
                namespace,
                deployment,
                replicas,
            } => self.scale(namespace, deployment, replicas, ctx).await,
            // Zero replicas is the one count a scale never sets; scale_to_zero (HIGH risk only,
            // enforced at load) reaches it by "restoring" zero.
            Action::ScaleToZero { namespace, deployment } => {
                self.scale(namespace, deployment, &Replicas::Restore(0), ctx).await
            }
            Action::RolloutRestart { namespace, deployment } => self.rollout_restart(namespace, deployment, ctx).await,
            Action::RolloutUndo {
                namespace,
                deployment,
                pin,
            } => self.rollout_undo(namespace, deployment, *pin).await,
            Action::Patch {
                resource,
                namespace,
                name,
                patch,
            } => self.patch(resource, namespace, name, patch).await,
            Action::Webhook {
                url,
                method,
                body,
                timeout_seconds,
            } => webhook::call(
                &self.http,
                url,
                method,
                body.as_ref(),
                Duration::from_secs(*timeout_seconds),
                ctx.action_id,
            )
            .await
            .map(|r| ActionReport {
                detail: match r.unread {
                    None => format!("{method} {url} answered HTTP {}", r.status),
                    Some(why) => format!("{method} {url} answered HTTP {} (body not read: {why})", r.status),
                },
                ..ActionReport::default()
            }),
        }?;
        info!(kind = action.kind(), detail = %report.detail, rollback = ctx.rollback, "kubernetes action done");
        Ok(report)
    }

    async fn pin(&self, action: &Action) -> Result<Action, ExecError> {
        match action {
            Action::RolloutUndo {
                namespace, deployment, ..
            } => {
                check_names(namespace, deployment).map_err(|m| ExecError(format!("refusing to call the API: {m}")))?;
                Ok(Action::RolloutUndo {
                    namespace: namespace.clone(),
                    deployment: deployment.clone(),
                    pin: Some(self.undo_pin(namespace, deployment).await?),
                })
            }
            other => Ok(other.clone()),
        }
    }

    fn name(&self) -> &'static str {
        "kubernetes"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_diff_turns_one_template_into_the_other() {
        let from = json!({"metadata": {"labels": {"app": "web"}, "annotations": {"restarted": "x"}},
                          "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        let to = json!({"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        let d = merge_diff(&from, &to);
        assert_eq!(
            d,
            json!({"metadata": {"annotations": null}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}})
        );
        assert_eq!(merge_diff(&to, &to), json!({}));
    }

    #[test]
    fn names_are_checked_before_any_call() {
        assert!(check_names("prod", "api-1").is_ok());
        assert!(check_names("prod", "api; kubectl delete ns x").is_err());
        assert!(check_names("prod", "../x").is_err());
        assert!(check_names("a/b", "x").is_err());
    }
}
