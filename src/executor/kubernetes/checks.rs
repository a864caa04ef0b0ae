//! The checks of the Kubernetes executor: what a check looks at (its [`Target`]), the dispatch
//! of every check name, and the checks that look once.
//!
//! Checks observe; they never assume. A check that cannot observe its condition (API error,
//! missing object, no Prometheus) fails with the reason in its detail. Checks that verify an
//! effect (`pod_becomes_ready`, `deployment_rolled_out`, `metrics_improved`,
//! `error_rate_normalized`, and `prometheus_query` when it has a `timeout_seconds`) poll until
//! their condition holds or their timeout passes ([`super::waiting`]); the others look once.
//!
//! `metrics_improved` without a `query` falls back to the rollout: it passes when the target
//! Deployment is rolled out with every replica of the count the action set updated and
//! available (the reference catalogue's scale-up names the check bare and no Prometheus may exist).
//! `error_rate_normalized` without a `query` runs
//! [`KubeExecutorOptions::error_rate_query`](super::KubeExecutorOptions::error_rate_query) if
//! configured, and otherwise fails, as does `prometheus_query`: an unverifiable fix is not a fix.

use super::{check_names, spec_replicas, KubernetesExecutor, Owner, Target};
use crate::executor::{CheckResult, ExecContext};
use crate::runbook::{Action, CheckName, CheckSpec};
use chrono::Timelike;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::Api;
use std::time::Duration;

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

    pub(super) async fn run_check(&self, check: &CheckSpec, ctx: &ExecContext<'_>) -> CheckResult {
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
}
