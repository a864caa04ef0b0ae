//! The actions of the Kubernetes executor, each fenced through the API server
//! (docs/design.md#kubernetes):
//!
//! * `delete_pod` reads the pod first and deletes it with a `uid` precondition, so a pod that
//!   was recreated under the same name in between is never hit.
//! * `scale_deployment` / `scale_to_zero` patch the `scale` subresource carrying the
//!   `resourceVersion` they read (a concurrent change makes the API server answer 409; the
//!   executor re-reads and recomputes a few times), and capture `old_replicas` for the rollback.
//!   The target is judged against that same read ([`Replicas::target`]: the runbook's direction
//!   and bounds, never 0 but for `scale_to_zero`); a target that breaks them is refused with
//!   nothing patched ([`ActionReport::refused`], worded by [`scaling::judged`] as the simulated
//!   executor words it).
//! * `rollout_restart` stamps `remediator.io/restarted-by: <action id>` on the pod template:
//!   declarative, so running the same action twice changes nothing.
//! * `rollout_undo` does what `kubectl rollout undo` does, with the observed `resourceVersion`.
//!   An undo pinned for an approval ([`Executor::pin`](crate::executor::Executor::pin)) is
//!   refused, nothing patched, unless that same read still shows the pinned revision and the
//!   pinned one to restore.
//! * `patch` is a JSON merge-patch of one of [`PATCHABLE`]'s resources, also fenced by
//!   `resourceVersion`. (`webhook` is one HTTP call, [`super::super::webhook`], dispatched in
//!   [`super`].)

use super::memory::DeletedPod;
use super::{revision_of, secs, short_uid, Conflicts, KErr, KubernetesExecutor, Owner, RESTARTED_BY};
use crate::executor::{ActionReport, ExecContext, ExecError};
use crate::runbook::action::PATCHABLE;
use crate::runbook::{scaling, Replicas, RevisionPin};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::fmt;
use std::time::Instant;
use tracing::warn;

/// Label the deployment controller adds to each ReplicaSet's pod template.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

impl KubernetesExecutor {
    pub(super) async fn delete_pod(
        &self,
        ns: &str,
        pod: &str,
        ctx: &ExecContext<'_>,
    ) -> Result<ActionReport, ExecError> {
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

    pub(super) async fn scale(
        &self,
        ns: &str,
        name: &str,
        replicas: &Replicas,
        ctx: &ExecContext<'_>,
    ) -> Result<ActionReport, ExecError> {
        let deployments: Api<Deployment> = self.api(ns);
        let mut conflicts = Conflicts::new();
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
            let target = match scaling::judged(ns, name, replicas.target(current)) {
                Ok(t) => t,
                Err(refused) => {
                    report.refused = Some(refused);
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
                Err(KErr::Conflict(m)) if conflicts.left() => conflicts.reread("scale", &m).await,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) async fn rollout_restart(
        &self,
        ns: &str,
        name: &str,
        ctx: &ExecContext<'_>,
    ) -> Result<ActionReport, ExecError> {
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
    pub(super) async fn undo_pin(&self, ns: &str, name: &str) -> Result<RevisionPin, ExecError> {
        let d = self.observed(ns, name).await?;
        let revisions = self.revisions(ns, &d).await?;
        let (from, (to, _)) = Self::undo_target(ns, name, &d, &revisions)?;
        Ok(RevisionPin { from, to: *to })
    }

    pub(super) async fn rollout_undo(
        &self,
        ns: &str,
        name: &str,
        pin: Option<RevisionPin>,
    ) -> Result<ActionReport, ExecError> {
        let deployments: Api<Deployment> = self.api(ns);
        let mut conflicts = Conflicts::new();
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
                Err(KErr::Conflict(m)) if conflicts.left() => conflicts.reread("rollback", &m).await,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) async fn patch(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<ActionReport, ExecError> {
        if !patch.is_object() {
            return Err(ExecError(format!(
                "the patch for {resource}/{name} must be a JSON object, got {patch}"
            )));
        }
        self.merge_patch_of(resource, ns, name, patch).await
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
        let mut conflicts = Conflicts::new();
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
                Err(KErr::Conflict(m)) if conflicts.left() && !pinned => conflicts.reread("patch", &m).await,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The resources a `patch` action may touch, each with its API type. One generic arm
/// ([`KubernetesExecutor::merge_patch`] over the resource's type) serves them all; the names
/// are kept in [`PATCH_KINDS`] too, which a test holds equal to [`PATCHABLE`] (the list the
/// catalogue validates against), so the two cannot drift apart.
macro_rules! patchable {
    ($($resource:literal => $kind:ty),+ $(,)?) => {
        /// The resource names `patch` dispatches, in the order of [`PATCHABLE`].
        #[cfg_attr(not(test), allow(dead_code))]
        const PATCH_KINDS: &[&str] = &[$($resource),+];

        impl KubernetesExecutor {
            /// A merge-patch of `resource` `ns/name`, through the API of its type; any other
            /// resource is refused before any call.
            async fn merge_patch_of(
                &self,
                resource: &str,
                ns: &str,
                name: &str,
                patch: &Value,
            ) -> Result<ActionReport, ExecError> {
                match resource {
                    $($resource => self.merge_patch(self.api::<$kind>(ns), resource, ns, name, patch).await,)+
                    other => Err(ExecError(format!(
                        "resource {other:?} cannot be patched (allowed: {})",
                        PATCHABLE.join(", ")
                    ))),
                }
            }
        }
    };
}

patchable! {
    "deployments" => Deployment,
    "statefulsets" => StatefulSet,
    "daemonsets" => DaemonSet,
    "configmaps" => ConfigMap,
    "horizontalpodautoscalers" => HorizontalPodAutoscaler,
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
    fn patch_dispatches_exactly_the_patchable_resources() {
        assert_eq!(PATCH_KINDS, PATCHABLE);
    }
}
