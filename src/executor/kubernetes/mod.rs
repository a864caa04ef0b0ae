//! The Kubernetes executor: runbook actions and checks through the API server (the `kube`
//! crate), never a `kubectl` subprocess.
//!
//! Where things live:
//!
//! * `mod.rs` (this file): the executor itself (client, settings, one bounded API call and its
//!   error classes, name checks), the vocabulary the others share (a pod's `Owner`, a
//!   check's `Target`) and the [`Executor`] implementation that dispatches to the others;
//! * `actions.rs`: the fenced actions (`delete_pod`, scale, `rollout_restart`, `rollout_undo`,
//!   merge-`patch`); `webhook` is one HTTP call ([`super::webhook`]);
//! * `checks.rs`: what a check looks at, the dispatch of every check name, the look-once checks;
//! * `waiting.rs`: the checks that poll until their condition holds or their timeout passes;
//! * `lookup.rs`: observations both actions and checks make (a pod's owner, revisions, ...);
//! * `memory.rs`: what an action saw before acting that its post-checks need.
//!
//! Names reach this module already validated (RFC 1123) by the template layer; they are checked
//! again here before any API call, because an [`Action`] can also be built in code, and every
//! URL is built by the `kube` and `reqwest` URL builders, never by splicing strings.

mod actions;
mod checks;
mod lookup;
mod memory;
mod waiting;

pub use actions::merge_diff;

use super::prometheus::{error_chain, Prometheus};
use super::{webhook, ActionReport, CheckResult, ExecContext, ExecError, Executor};
use crate::clock::{Clock, SystemClock};
use crate::runbook::template::{validate, Template, VarKind};
use crate::runbook::{Action, CheckName, CheckSpec, Replicas};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::{Client, Resource};
use memory::Memory;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::info;

/// Pod-template annotation stamped by `rollout_restart` (value: the action id).
pub const RESTARTED_BY: &str = "remediator.io/restarted-by";
/// Revision annotation the deployment controller keeps on Deployments and ReplicaSets.
const REVISION: &str = "deployment.kubernetes.io/revision";
/// Re-reads after a 409 Conflict before an action gives up.
const CONFLICT_RETRIES: u32 = 3;

/// The re-reads a fenced write gets when the API server refuses it as a conflict (someone
/// changed the object since it was read): at most [`CONFLICT_RETRIES`], waiting 50, 100, 200 ms.
struct Conflicts {
    retried: u32,
    backoff: crate::retry::Backoff,
}

impl Conflicts {
    fn new() -> Self {
        Conflicts {
            retried: 0,
            backoff: crate::retry::Backoff::new(
                std::time::Duration::from_millis(50),
                std::time::Duration::from_secs(1),
            ),
        }
    }

    /// Another re-read is allowed.
    fn left(&self) -> bool {
        self.retried < CONFLICT_RETRIES
    }

    /// Count and log the conflict of `what`, then wait before the re-read.
    async fn reread(&mut self, what: &str, message: &str) {
        self.retried += 1;
        tracing::info!(%message, attempt = self.retried, "{what} conflicted with a concurrent change; re-reading");
        tokio::time::sleep(self.backoff.next_wait()).await;
    }
}

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

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
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
    fn names_are_checked_before_any_call() {
        assert!(check_names("prod", "api-1").is_ok());
        assert!(check_names("prod", "api; kubectl delete ns x").is_err());
        assert!(check_names("prod", "../x").is_err());
        assert!(check_names("a/b", "x").is_err());
    }
}
