//! The checks of the Kubernetes executor that wait for an effect: one observation is a
//! [`Probe`], and [`KubernetesExecutor::poll`] repeats it every `poll_interval` until it passes,
//! fails for good, or the check's wait runs out. Prometheus queries, a rolled-out deployment,
//! a Ready pod (or the replacement of a deleted one).

use super::{is_ready, secs, short_uid, spec_replicas, KErr, KubernetesExecutor, Owner, Target};
use crate::executor::{CheckResult, ExecContext};
use crate::runbook::CheckSpec;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::future::Future;
use std::time::{Duration, Instant};

/// One observation of a waiting check.
pub(super) enum Probe {
    /// The condition holds.
    Pass(String),
    /// Not yet; look again until the timeout.
    Wait(String),
    /// It cannot come true (or must not be waited for).
    Fail(String),
}

impl KubernetesExecutor {
    /// Observe until the probe passes or fails, or `wait` runs out (`None`: observe once).
    pub(super) async fn poll<F, Fut>(&self, wait: Option<Duration>, mut probe: F) -> CheckResult
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

    pub(super) async fn probe_query(&self, check: &CheckSpec, ctx: &ExecContext<'_>) -> Probe {
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

    pub(super) async fn probe_rolled_out(&self, ns: &str, name: &str, expect: Option<u32>) -> Probe {
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

    pub(super) async fn pod_becomes_ready(
        &self,
        target: &Target,
        ctx: &ExecContext<'_>,
        wait: Option<Duration>,
    ) -> CheckResult {
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
