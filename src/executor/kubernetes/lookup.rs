//! Observations of the cluster shared by actions and checks: a pod's controller (resolved
//! through its ReplicaSet to its Deployment), pods and deployments by name, the deployment a
//! check is about, Ready pods of a selector, and a deployment's revisions.

use super::memory::DeletedPod;
use super::{controller_of, is_ready, revision_of, KErr, KubernetesExecutor, Owner, Target};
use crate::executor::ExecContext;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use kube::core::Selector;

impl KubernetesExecutor {
    pub(super) async fn pod_owner(&self, ns: &str, pod: &Pod) -> Result<Owner, KErr> {
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

    pub(super) async fn get_pod(&self, ns: &str, name: &str) -> Result<Pod, String> {
        let pods: Api<Pod> = self.api(ns);
        self.call(format!("get pod {ns}/{name}"), pods.get(name))
            .await
            .map_err(|e| match e {
                KErr::NotFound(_) => format!("pod {ns}/{name} not found"),
                e => e.to_string(),
            })
    }

    pub(super) async fn get_deployment(&self, ns: &str, name: &str) -> Result<Deployment, KErr> {
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
    pub(super) async fn deployment_target(
        &self,
        target: &Target,
        ctx: &ExecContext<'_>,
    ) -> Result<(String, String), String> {
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
    pub(super) async fn ready_pods(&self, ns: &str, selector: &LabelSelector) -> Result<(usize, Vec<String>), String> {
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

    /// ReplicaSets controlled by `d` with their revisions, highest first.
    pub(super) async fn revisions(&self, ns: &str, d: &Deployment) -> Result<Vec<(i64, ReplicaSet)>, KErr> {
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
}
