//! One behaviour suite for every [`Executor`]: the simulated cluster and the Kubernetes executor
//! must agree on the basics the engine relies on (docs/design.md#kubernetes).
//!
//! * `delete_pod` succeeds on a pod of a multi-replica deployment and `pod_becomes_ready` then
//!   verifies it;
//! * `scale_deployment` to N captures `old_replicas` (the rollback renders it), by ±d is relative
//!   to the count the previous action left;
//! * a scale whose target breaks its direction or bounds against the live count (up to fewer
//!   replicas than run, a step past the cap or to zero) is refused with the reason and changes
//!   nothing (the next scale still sees the same count);
//! * a deployment that `scale_to_zero` stopped is not brought back by an `up`, `by` or
//!   predictive scale (refused, still 0); only the stop's `restore` does;
//! * an undo pinned for an approval ([`Executor::pin`]) carries the live revisions, runs only
//!   while they hold: after a new revision (a rollout restart standing for a deploy) it is
//!   refused with the reason, captures and changes nothing; pinned again, it runs; other actions
//!   pin to themselves;
//! * every named check answers with a non-empty detail, promptly, without panicking;
//! * the checks whose answer is fixed by the fixture (3 replicas, healthy pod) agree.
//!
//! The simulated executor has no world to observe: it cannot tell that a deployment is missing
//! or that no Prometheus is configured, so the cases that need observation run only for
//! executors with [`Fixture::observes`] set (it passes every check it is not told to fail).

use remediator::executor::{ExecContext, Executor};
use remediator::incident::{self, Incident};
use remediator::runbook::check::CHECK_NAMES;
use remediator::runbook::template::{Template, Vars};
use remediator::runbook::{Action, Bounds, CheckName, CheckSpec, Replicas, RevisionPin};
use std::time::Duration;

/// The world the suite acts on.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Namespace of everything below.
    pub namespace: String,
    /// A deployment running [`Fixture::replicas`] Ready pods.
    pub deployment: String,
    /// One pod of that deployment.
    pub pod: String,
    /// Its replica count (3).
    pub replicas: u32,
    /// The executor observes a real world (missing objects fail, no Prometheus fails).
    pub observes: bool,
}

/// An incident naming the fixture's objects.
pub fn incident(fx: &Fixture, id: &str) -> Incident {
    let json = serde_json::json!({
        "id": id,
        "root_cause": "suite",
        "confidence": 1.0,
        "service": fx.deployment,
        "context": {
            "namespace": fx.namespace,
            "deployment": fx.deployment,
            "pod_name": fx.pod,
            // The simulated cluster starts an unknown deployment here.
            "old_replicas": fx.replicas,
        },
    });
    match incident::parse(json.to_string().as_bytes()) {
        Ok(i) => i,
        Err((r, _)) => panic!("suite incident rejected: {r}"),
    }
}

/// An execution context for `action`.
pub fn ctx<'a>(incident: &'a Incident, action: &'a Action, vars: &'a Vars, action_id: &'a str) -> ExecContext<'a> {
    ExecContext {
        incident,
        runbook: "suite",
        action,
        vars,
        action_id,
        rollback: false,
    }
}

/// A check spec with a short timeout (and a query for the query checks).
pub fn spec(name: CheckName) -> CheckSpec {
    let mut s = CheckSpec::named(name);
    s.timeout = Some(Duration::from_secs(2));
    if name == CheckName::PrometheusQuery {
        s.query = Some(Template::parse("up").expect("template"));
        s.below = Some(1.0);
    }
    s
}

/// Run the suite.
pub async fn run(exec: &dyn Executor, fx: &Fixture) {
    delete_pod_is_verified(exec, fx).await;
    scale_captures_old_replicas_and_by_is_relative(exec, fx).await;
    scale_refuses_what_breaks_its_direction_or_bounds(exec, fx).await;
    every_check_answers(exec, fx).await;
    if fx.observes {
        missing_targets_fail(exec, fx).await;
    }
    a_stopped_deployment_stays_stopped(exec, fx).await;
    // Last: its restarts roll the deployment's pods, which the checks above must not see.
    a_pinned_undo_runs_only_at_its_revisions(exec, fx).await;
}

async fn pin_of(exec: &dyn Executor, undo: &Action) -> (Action, RevisionPin) {
    let pinned = exec
        .pin(undo)
        .await
        .unwrap_or_else(|e| panic!("{}: pin an undo: {e}", exec.name()));
    match &pinned {
        Action::RolloutUndo { pin: Some(p), .. } => {
            let p = *p;
            (pinned, p)
        }
        other => panic!("{}: an undo pins its revisions, got {other:?}", exec.name()),
    }
}

async fn a_pinned_undo_runs_only_at_its_revisions(exec: &dyn Executor, fx: &Fixture) {
    let inc = incident(fx, "suite-undo");
    let vars = Vars::from_incident(&inc);
    let restart = Action::RolloutRestart {
        namespace: fx.namespace.clone(),
        deployment: fx.deployment.clone(),
    };
    let restarted = |id: &'static str| {
        let (inc, restart, vars) = (&inc, &restart, &vars);
        async move {
            exec.execute(restart, &ctx(inc, restart, vars, id))
                .await
                .unwrap_or_else(|e| panic!("{}: rollout restart {id}: {e}", exec.name()))
        }
    };
    // A new template, so there is a revision to go back to.
    restarted("suite-undo-restart-1").await;
    assert_eq!(
        exec.pin(&restart).await.expect("pin a restart"),
        restart,
        "{}: only an undo is pinned",
        exec.name()
    );
    let undo = Action::RolloutUndo {
        namespace: fx.namespace.clone(),
        deployment: fx.deployment.clone(),
        pin: None,
    };
    let (pinned, p) = pin_of(exec, &undo).await;
    assert!(p.to < p.from, "{}: {p:?}", exec.name());
    assert!(
        pinned.view().display.contains(&format!("--to-revision={}", p.to)),
        "{}: {}",
        exec.name(),
        pinned.view().display
    );

    // A deploy between the pin and the run: a new revision.
    restarted("suite-undo-restart-2").await;
    let report = exec
        .execute(&pinned, &ctx(&inc, &pinned, &vars, "suite-undo-1"))
        .await
        .unwrap_or_else(|e| panic!("{}: pinned undo after a deploy: {e}", exec.name()));
    let why = report
        .refused
        .unwrap_or_else(|| panic!("{}: a stale pinned undo ran: {}", exec.name(), report.detail));
    assert!(
        why.contains(&format!("approved at revision {} to restore revision {}", p.from, p.to)),
        "{}: {why}",
        exec.name()
    );
    assert!(
        report.captured.is_empty(),
        "{}: a refused undo captures nothing",
        exec.name()
    );

    // Nothing changed: the deployment is one revision on, and an undo pinned there runs.
    let (pinned, q) = pin_of(exec, &undo).await;
    assert_eq!(q.from, p.from + 1, "{}: the refused undo made no revision", exec.name());
    let report = exec
        .execute(&pinned, &ctx(&inc, &pinned, &vars, "suite-undo-2"))
        .await
        .unwrap_or_else(|e| panic!("{}: pinned undo: {e}", exec.name()));
    assert_eq!(report.refused, None, "{}: {}", exec.name(), report.detail);
    assert_eq!(
        report.captured.get("undone_from_revision").map(String::as_str),
        Some(q.from.to_string().as_str()),
        "{}: {}",
        exec.name(),
        report.detail
    );
    assert_eq!(
        report.captured.get("restored_revision").map(String::as_str),
        Some(q.to.to_string().as_str()),
        "{}: {}",
        exec.name(),
        report.detail
    );
}

async fn delete_pod_is_verified(exec: &dyn Executor, fx: &Fixture) {
    let inc = incident(fx, "suite-delete");
    let vars = Vars::from_incident(&inc);
    let action = Action::DeletePod {
        namespace: fx.namespace.clone(),
        pod: fx.pod.clone(),
    };
    let c = ctx(&inc, &action, &vars, "suite-delete-1");
    let pre = exec
        .check(&CheckSpec::named(CheckName::ReplicasGreaterThanOne), &c)
        .await;
    assert!(pre.passed, "{}: replicas_greater_than_one: {}", exec.name(), pre.detail);
    let report = exec.execute(&action, &c).await.expect("delete_pod");
    assert!(
        !report.detail.is_empty(),
        "{}: delete_pod reports what it did",
        exec.name()
    );
    let mut post = CheckSpec::named(CheckName::PodBecomesReady);
    post.timeout = Some(Duration::from_secs(30));
    let r = exec.check(&post, &c).await;
    assert!(r.passed, "{}: pod_becomes_ready: {}", exec.name(), r.detail);
}

async fn scale_captures_old_replicas_and_by_is_relative(exec: &dyn Executor, fx: &Fixture) {
    let inc = incident(fx, "suite-scale");
    let vars = Vars::from_incident(&inc);
    let b = Bounds { min: 1, max: 100 };
    let steps = [
        (Replicas::Up(fx.replicas + 2, b), fx.replicas),
        (Replicas::By(-1, b), fx.replicas + 2),
        (Replicas::Down(fx.replicas, b), fx.replicas + 1),
    ];
    for (i, (replicas, old)) in steps.into_iter().enumerate() {
        let action = Action::ScaleDeployment {
            namespace: fx.namespace.clone(),
            deployment: fx.deployment.clone(),
            replicas,
        };
        let id = format!("suite-scale-{i}");
        let report = exec
            .execute(&action, &ctx(&inc, &action, &vars, &id))
            .await
            .unwrap_or_else(|e| panic!("{}: scale step {i}: {e}", exec.name()));
        assert_eq!(
            report.captured.get("old_replicas").map(String::as_str),
            Some(old.to_string().as_str()),
            "{}: step {i} captures the count before it ({})",
            exec.name(),
            report.detail
        );
    }
}

async fn scale_refuses_what_breaks_its_direction_or_bounds(exec: &dyn Executor, fx: &Fixture) {
    let inc = incident(fx, "suite-refuse");
    let vars = Vars::from_incident(&inc);
    // The previous steps left the deployment at fx.replicas.
    let tight = Bounds {
        min: 1,
        max: fx.replicas,
    };
    let refused = [
        (Replicas::Up(fx.replicas - 1, Bounds::DEFAULT), "already runs"),
        (
            Replicas::Down(fx.replicas + 1, Bounds { min: 1, max: 100 }),
            "runs only",
        ),
        (Replicas::By(1, tight), "above the runbook's max_replicas"),
        (
            Replicas::By(-(fx.replicas as i32), tight),
            "only a scale_to_zero action",
        ),
    ];
    for (i, (replicas, why)) in refused.into_iter().enumerate() {
        let action = Action::ScaleDeployment {
            namespace: fx.namespace.clone(),
            deployment: fx.deployment.clone(),
            replicas,
        };
        let id = format!("suite-refuse-{i}");
        let report = exec
            .execute(&action, &ctx(&inc, &action, &vars, &id))
            .await
            .unwrap_or_else(|e| panic!("{}: refused scale {i}: {e}", exec.name()));
        let reason = report
            .refused
            .unwrap_or_else(|| panic!("{}: scale {i} was not refused: {}", exec.name(), report.detail));
        assert!(reason.contains(why), "{}: step {i}: {reason}", exec.name());
        assert!(
            report.captured.is_empty(),
            "{}: a refused scale captures nothing",
            exec.name()
        );
    }
    // Nothing changed: the same count is still there to scale from.
    let action = Action::ScaleDeployment {
        namespace: fx.namespace.clone(),
        deployment: fx.deployment.clone(),
        replicas: Replicas::Up(fx.replicas, Bounds::DEFAULT),
    };
    let report = exec
        .execute(&action, &ctx(&inc, &action, &vars, "suite-refuse-after"))
        .await
        .unwrap_or_else(|e| panic!("{}: scale after the refusals: {e}", exec.name()));
    assert_eq!(report.refused, None, "{}: {}", exec.name(), report.detail);
    assert_eq!(
        report.captured.get("old_replicas").map(String::as_str),
        Some(fx.replicas.to_string().as_str()),
        "{}: refusals left the count alone ({})",
        exec.name(),
        report.detail
    );
}

async fn every_check_answers(exec: &dyn Executor, fx: &Fixture) {
    let inc = incident(fx, "suite-checks");
    let vars = Vars::from_incident(&inc);
    let on_pod = Action::DeletePod {
        namespace: fx.namespace.clone(),
        pod: "suite-never-deleted".into(),
    };
    let on_deployment = Action::RolloutRestart {
        namespace: fx.namespace.clone(),
        deployment: fx.deployment.clone(),
    };
    for (name, check) in CHECK_NAMES {
        let action = if *check == CheckName::RecentRestartsLessThanThree {
            &on_pod
        } else {
            &on_deployment
        };
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            exec.check(&spec(*check), &ctx(&inc, action, &vars, "suite-checks-1")),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: check {name} did not answer within 30 s", exec.name()));
        assert!(
            !r.detail.trim().is_empty(),
            "{}: check {name} explains itself",
            exec.name()
        );
    }
    // Checks whose answer the fixture fixes.
    for check in [
        CheckName::ReplicasGreaterThanOne,
        CheckName::DeploymentExists,
        CheckName::CurrentReplicasBelowMax,
        CheckName::DeploymentRolledOut,
    ] {
        // The scale steps above may still be settling: give waiting checks room.
        let mut s = spec(check);
        s.timeout = Some(Duration::from_secs(20));
        let r = exec
            .check(&s, &ctx(&inc, &on_deployment, &vars, "suite-checks-2"))
            .await;
        assert!(r.passed, "{}: {}: {}", exec.name(), check.as_str(), r.detail);
    }
}

async fn missing_targets_fail(exec: &dyn Executor, fx: &Fixture) {
    let inc = incident(fx, "suite-missing");
    let vars = Vars::from_incident(&inc);
    let ghost = Action::ScaleDeployment {
        namespace: fx.namespace.clone(),
        deployment: "suite-no-such-deployment".into(),
        replicas: Replicas::Up(2, Bounds::DEFAULT),
    };
    let c = ctx(&inc, &ghost, &vars, "suite-missing-1");
    let e = exec
        .execute(&ghost, &c)
        .await
        .expect_err("scaling a missing deployment");
    assert!(e.0.contains("not found"), "{}: {e}", exec.name());
    for check in [
        CheckName::DeploymentExists,
        CheckName::ReplicasGreaterThanOne,
        CheckName::PreviousRevisionAvailable,
    ] {
        let r = exec.check(&spec(check), &c).await;
        assert!(!r.passed, "{}: {} on a missing deployment", exec.name(), check.as_str());
        assert!(r.detail.contains("not found"), "{}: {}", check.as_str(), r.detail);
    }
    let ghost_pod = Action::DeletePod {
        namespace: fx.namespace.clone(),
        pod: "suite-no-such-pod".into(),
    };
    let c = ctx(&inc, &ghost_pod, &vars, "suite-missing-2");
    let e = exec.execute(&ghost_pod, &c).await.expect_err("deleting a missing pod");
    assert!(e.0.contains("not found"), "{e}");
    let r = exec.check(&spec(CheckName::RecentRestartsLessThanThree), &c).await;
    assert!(!r.passed && r.detail.contains("not found"), "{}", r.detail);
}

async fn a_stopped_deployment_stays_stopped(exec: &dyn Executor, fx: &Fixture) {
    let inc = incident(fx, "suite-stopped");
    let vars = Vars::from_incident(&inc);
    let run = |action: Action, id: &'static str| {
        let inc = &inc;
        let vars = &vars;
        async move {
            exec.execute(&action, &ctx(inc, &action, vars, id))
                .await
                .unwrap_or_else(|e| panic!("{}: {id}: {e}", exec.name()))
        }
    };
    let stop = Action::ScaleToZero {
        namespace: fx.namespace.clone(),
        deployment: fx.deployment.clone(),
    };
    let report = run(stop, "suite-stopped-stop").await;
    assert_eq!(report.refused, None, "{}: {}", exec.name(), report.detail);
    let scale = |replicas| Action::ScaleDeployment {
        namespace: fx.namespace.clone(),
        deployment: fx.deployment.clone(),
        replicas,
    };
    let b = Bounds { min: 1, max: 100 };
    let ups = [
        (Replicas::Up(fx.replicas, b), "suite-stopped-up"),
        (Replicas::By(2, b), "suite-stopped-by"),
        (
            Replicas::Predictive {
                predicted_load: 900.0,
                current_load: 400.0,
                max_replicas: 8,
            },
            "suite-stopped-predictive",
        ),
    ];
    for (replicas, id) in ups {
        let report = run(scale(replicas), id).await;
        let reason = report.refused.unwrap_or_else(|| {
            panic!(
                "{}: {id} brought a stopped deployment back: {}",
                exec.name(),
                report.detail
            )
        });
        assert!(
            reason.contains("stopped deliberately"),
            "{}: {id}: {reason}",
            exec.name()
        );
        assert!(report.captured.is_empty(), "{}: {id} captures nothing", exec.name());
        assert!(
            report.detail.contains("left at 0 replicas"),
            "{}: {}",
            exec.name(),
            report.detail
        );
    }
    // The stop's own rollback (a restore) brings it back.
    let report = run(scale(Replicas::Restore(fx.replicas)), "suite-stopped-restore").await;
    assert_eq!(report.refused, None, "{}: {}", exec.name(), report.detail);
    assert_eq!(
        report.captured.get("old_replicas").map(String::as_str),
        Some("0"),
        "{}: the up/by/predictive scales left it at 0 ({})",
        exec.name(),
        report.detail
    );
}
