//! Unit tests of the typed actions: kubectl parsing, rendering within a runbook's bounds and
//! scope, the replica target at every edge, and the outcome view.

use super::*;
use crate::runbook::template::{RenderError, Vars};

#[test]
fn seed_kubectl_strings_parse_into_typed_actions() {
    let a = ActionSpec::from_kubectl("kubectl delete pod {pod_name} -n {namespace}").unwrap();
    assert_eq!(a.kind(), "delete_pod");
    let a = ActionSpec::from_kubectl("kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}")
        .unwrap();
    assert!(matches!(
        a,
        ActionSpec::ScaleDeployment {
            replicas: ReplicaSpec::To {
                direction: Direction::Up,
                bounds: Bounds::DEFAULT,
                ..
            },
            ..
        }
    ));
    let a = ActionSpec::from_kubectl("kubectl rollout undo deployment {deployment} -n {namespace}").unwrap();
    assert_eq!(a.kind(), "rollout_undo");
    let a = ActionSpec::from_kubectl("kubectl scale deployment/web --replicas=+1 --namespace=prod").unwrap();
    assert!(matches!(
        a,
        ActionSpec::ScaleDeployment {
            replicas: ReplicaSpec::By(1, Bounds::DEFAULT),
            ..
        }
    ));
    let a = ActionSpec::from_kubectl("kubectl rollout restart deploy {deployment}").unwrap();
    assert_eq!(a.kind(), "rollout_restart");
}

#[test]
fn other_commands_are_refused() {
    for bad in [
        "kubectl exec -it {pod_name} -- sh",
        "rm -rf /tmp",
        "kubectl delete pod {pod_name} -n {namespace} --force",
        "kubectl delete namespace {namespace}",
        "kubectl scale deployment {deployment}",
        "kubectl delete pod {pod_name} -n",
    ] {
        assert!(ActionSpec::from_kubectl(bad).is_err(), "{bad}");
    }
}

fn scale_up(vars: &[(&str, &str)]) -> Result<Action, RenderError> {
    let a = ActionSpec::from_kubectl_capped(
        "kubectl scale deployment {deployment} --replicas={new_replicas} -n {namespace}",
        10,
    )
    .unwrap();
    let mut v = Vars::default();
    v.set("deployment", "web");
    v.set("namespace", "prod");
    for (k, x) in vars {
        v.set(k, *x);
    }
    a.render(&v, &[])
}

#[test]
fn a_scale_renders_only_within_its_runbooks_bounds() {
    let b = Bounds { min: 1, max: 10 };
    assert_eq!(
        scale_up(&[("new_replicas", "10")]).unwrap(),
        Action::ScaleDeployment {
            namespace: "prod".into(),
            deployment: "web".into(),
            replicas: Replicas::Up(10, b)
        },
        "the cap itself is allowed"
    );
    let e = scale_up(&[("new_replicas", "11")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "context.new_replicas: 11 replicas is above the runbook's max_replicas 10"
    );
    let e = scale_up(&[("new_replicas", "10000")]).unwrap_err();
    assert!(e.message.contains("above the runbook's max_replicas 10"), "{e}");
    let e = scale_up(&[("new_replicas", "0")]).unwrap_err();
    assert!(e.message.contains("only a scale_to_zero action (HIGH risk)"), "{e}");
    assert!(scale_up(&[("new_replicas", "1")]).is_ok());
    // An incident cannot raise the cap: there is no such variable to give.
    assert!(scale_up(&[("new_replicas", "50"), ("max_replicas", "100")]).is_err());
}

#[test]
fn a_restore_takes_only_a_captured_count() {
    let a = ActionSpec::from_kubectl("kubectl scale deployment web --replicas={old_replicas} -n prod").unwrap();
    let mut v = Vars::default();
    v.set("old_replicas", "0");
    let e = a.render(&v, &[]).unwrap_err();
    assert!(e.message.contains("was not captured from the cluster"), "{e}");
    v.capture("old_replicas", "3");
    let r = a.render(&v, &[]).unwrap();
    assert_eq!(r.view().display, "kubectl scale deployment web --replicas=3 -n prod");
    assert_eq!(r.view().params["direction"], "restore");
    v.set("old_replicas", "4");
    assert!(
        a.render(&v, &[]).is_err(),
        "overwritten by the incident: not captured any more"
    );
}

#[test]
fn a_stopped_deployment_is_never_scaled_back_up() {
    let b = Bounds { min: 1, max: 10 };
    let predictive = Replicas::Predictive {
        predicted_load: 900.0,
        current_load: 400.0,
        max_replicas: 8,
    };
    for r in [Replicas::Up(3, b), Replicas::By(2, b), Replicas::By(-1, b), predictive] {
        assert_eq!(r.target(0), Err(STOPPED_DELIBERATELY.to_string()), "{r:?}");
    }
    assert!(Replicas::Down(1, b).target(0).unwrap_err().contains("runs only 0"));
    assert_eq!(
        Replicas::Restore(3).target(0),
        Ok(3),
        "the stop's rollback brings it back"
    );
}

#[test]
fn the_live_count_decides_last() {
    let b = Bounds { min: 2, max: 10 };
    assert_eq!(Replicas::Up(5, b).target(3), Ok(5));
    assert_eq!(Replicas::Up(5, b).target(5), Ok(5), "already there: nothing to do");
    assert!(Replicas::Up(5, b).target(6).unwrap_err().contains("already runs 6"));
    assert!(
        Replicas::Up(11, b).target(3).is_err(),
        "bounds hold even if rendered in code"
    );
    assert!(Replicas::Up(0, b).target(3).is_err());
    assert_eq!(Replicas::Down(2, b).target(4), Ok(2));
    assert!(Replicas::Down(1, b).target(4).unwrap_err().contains("min_replicas 2"));
    assert!(Replicas::Down(4, b).target(3).unwrap_err().contains("runs only 3"));
    assert_eq!(Replicas::By(1, b).target(9), Ok(10));
    assert!(Replicas::By(1, b).target(10).unwrap_err().contains("max_replicas 10"));
    assert!(Replicas::By(-1, b).target(2).unwrap_err().contains("min_replicas 2"));
    let one = Bounds { min: 1, max: 10 };
    assert!(Replicas::By(-3, one).target(3).unwrap_err().contains("scale_to_zero"));
    assert_eq!(
        Replicas::Restore(0).target(5),
        Ok(0),
        "a restore puts back what was there"
    );
}

#[test]
fn a_pinned_undo_shows_its_revisions() {
    let a = ActionSpec::from_kubectl("kubectl rollout undo deployment web -n prod").unwrap();
    let unpinned = a.render(&Vars::default(), &[]).unwrap();
    assert_eq!(unpinned.view().display, "kubectl rollout undo deployment web -n prod");
    assert!(unpinned.view().params.is_empty());
    let Action::RolloutUndo {
        namespace, deployment, ..
    } = unpinned
    else {
        panic!("not an undo")
    };
    let pinned = |from, to| Action::RolloutUndo {
        namespace: namespace.clone(),
        deployment: deployment.clone(),
        pin: Some(RevisionPin { from, to }),
    };
    let v = pinned(3, 2).view();
    assert_eq!(v.display, "kubectl rollout undo deployment web --to-revision=2 -n prod");
    assert_eq!(v.params["undone_from_revision"], 3);
    assert_eq!(v.params["restored_revision"], 2);
    assert_ne!(pinned(4, 3).view(), v, "another revision is another view");
    assert_ne!(pinned(4, 2).view(), v, "the undone revision counts too");
}

#[test]
fn render_validates_and_scopes() {
    let a = ActionSpec::from_kubectl("kubectl delete pod {pod_name} -n {namespace}").unwrap();
    let mut v = Vars::default();
    v.set("pod_name", "api-1");
    v.set("namespace", "production");
    let r = a.render(&v, &[]).unwrap();
    assert_eq!(r.view().display, "kubectl delete pod api-1 -n production");
    let e = a.render(&v, &["staging".to_string()]).unwrap_err();
    assert_eq!(e.var, "namespace");
    v.set("pod_name", "x;reboot");
    assert_eq!(a.render(&v, &[]).unwrap_err().var, "pod_name");
}

/// The live count decides, at every edge of the runbook's bounds and the declared direction.
#[test]
fn scale_targets_hold_at_every_edge() {
    let b = Bounds { min: 2, max: 5 };
    let up = |n| Replicas::Up(n, b);
    let down = |n| Replicas::Down(n, b);
    assert_eq!(up(5).target(3), Ok(5));
    assert_eq!(up(4).target(4), Ok(4), "already there: nothing to do");
    assert_eq!(
        up(3).target(4),
        Err("a scale-up to 3 replicas is refused: the deployment already runs 4".into())
    );
    assert_eq!(
        up(6).target(3),
        Err("6 replicas is above the runbook's max_replicas 5".into())
    );
    assert_eq!(
        up(1).target(1),
        Err("1 replicas is below the runbook's min_replicas 2".into())
    );
    assert_eq!(
        up(0).target(1),
        Err("0 replicas is refused: only a scale_to_zero action (HIGH risk) may scale to zero".into())
    );
    assert_eq!(down(2).target(3), Ok(2));
    assert_eq!(down(2).target(2), Ok(2), "already there: nothing to do");
    assert_eq!(
        down(3).target(2),
        Err("a scale-down to 3 replicas is refused: the deployment runs only 2".into())
    );
    assert_eq!(
        down(1).target(3),
        Err("1 replicas is below the runbook's min_replicas 2".into())
    );
    assert_eq!(Replicas::By(2, b).target(3), Ok(5));
    assert_eq!(
        Replicas::By(2, b).target(4),
        Err("4 +2 = 6: 6 replicas is above the runbook's max_replicas 5".into())
    );
    assert_eq!(Replicas::By(-1, b).target(3), Ok(2));
    assert_eq!(
        Replicas::By(-2, b).target(3),
        Err("3 -2 = 1: 1 replicas is below the runbook's min_replicas 2".into())
    );
    // A deployment stopped at 0 stays stopped, whatever asks: only its restore brings it back
    // (and a scale-down has nothing to take away).
    let predictive = Replicas::Predictive {
        predicted_load: 10.0,
        current_load: 1.0,
        max_replicas: 5,
    };
    for r in [up(3), Replicas::By(1, b), predictive] {
        assert_eq!(r.target(0), Err(STOPPED_DELIBERATELY.to_string()), "{r:?}");
    }
    assert_eq!(
        down(2).target(0),
        Err("a scale-down to 2 replicas is refused: the deployment runs only 0".into())
    );
    assert_eq!(Replicas::Restore(3).target(0), Ok(3));
}

/// A kubectl string gets the safe direction and the runbook's cap; steps are bounded.
#[test]
fn kubectl_scales_get_safe_directions_and_bounded_steps() {
    let replicas = |cmd: &str| match ActionSpec::from_kubectl_capped(cmd, 8) {
        Ok(ActionSpec::ScaleDeployment { replicas, .. }) => Ok(replicas),
        Ok(other) => panic!("{cmd}: {other:?}"),
        Err(e) => Err(e),
    };
    let b = Bounds { min: 1, max: 8 };
    assert_eq!(
        replicas("kubectl scale deployment d --replicas=+1000"),
        Ok(ReplicaSpec::By(1000, b))
    );
    assert_eq!(
        replicas("kubectl scale deploy/d --replicas=-1"),
        Ok(ReplicaSpec::By(-1, b))
    );
    assert_eq!(
        replicas("kubectl scale deployment d --replicas=+1001"),
        Err("--replicas=+1001 must be a non-zero step of at most 1000".into())
    );
    assert_eq!(
        replicas("kubectl scale deployment d --replicas=-0"),
        Err("--replicas=-0 must be a non-zero step of at most 1000".into())
    );
    assert_eq!(
        replicas("kubectl scale deployment d --replicas=+0"),
        Err("--replicas=+0 must be a non-zero step of at most 1000".into())
    );
    assert_eq!(
        replicas("kubectl scale deployments d --replicas={old_replicas}"),
        Ok(ReplicaSpec::Restore)
    );
    assert!(matches!(
        replicas("kubectl scale deployment d --replicas=8"),
        Ok(ReplicaSpec::To { direction: Direction::Up, bounds, .. }) if bounds == b
    ));
    assert_eq!(
        replicas("kubectl scale deployment d --replicas=9"),
        Err("--replicas=9: 9 replicas is above the runbook's max_replicas 8".into())
    );
    assert_eq!(
        replicas("kubectl scale deployment d --replicas=x{new_replicas}"),
        Err("--replicas=x{new_replicas} must be a number or a single {variable}".into())
    );
    assert_eq!(
        replicas("kubectl scale deployment d"),
        Err("`kubectl scale` needs --replicas= in \"kubectl scale deployment d\"".into())
    );
    // Namespace flags, kind/name, and what is not a supported form.
    let ns = |cmd: &str| match ActionSpec::from_kubectl(cmd).unwrap() {
        ActionSpec::DeletePod { namespace, pod } => (namespace.to_string(), pod.to_string()),
        other => panic!("{cmd}: {other:?}"),
    };
    assert_eq!(ns("kubectl delete pod/p -n prod"), ("prod".into(), "p".into()));
    assert_eq!(
        ns("kubectl delete pods p --namespace prod"),
        ("prod".into(), "p".into())
    );
    assert_eq!(ns("kubectl delete pod p --namespace=prod"), ("prod".into(), "p".into()));
    assert_eq!(ns("kubectl delete pod p"), ("{namespace}".into(), "p".into()));
    for bad in [
        "kubectl delete pod p --replicas=2",
        "kubectl rollout restart deployment d --replicas=2",
        "kubectl rollout undo deployment d --replicas=2",
        "kubectl rollout restart statefulset d",
        "kubectl delete node n",
        "helm delete x",
        "kubectl delete service/s",
        // Only a deployment is scaled: another kind is never taken for one.
        "kubectl scale statefulset web --replicas=3",
        "kubectl scale statefulset/web --replicas=3",
        "kubectl scale rs web --replicas=2",
        // Only `<kind>/<name>` of a kind it acts on is split: a slash anywhere else is no
        // way to spell a verb.
        "kubectl delete/pod p",
        "kubectl rollout restart/deployment d",
        "kubectl rollout/undo deployment d",
    ] {
        assert!(
            ActionSpec::from_kubectl(bad)
                .unwrap_err()
                .starts_with("unsupported action"),
            "{bad}"
        );
    }
    assert_eq!(
        ActionSpec::from_kubectl("kubectl delete pod p -n").unwrap_err(),
        "-n needs a value in \"kubectl delete pod p -n\""
    );
    assert_eq!(
        ActionSpec::from_kubectl("kubectl delete pod p --force").unwrap_err(),
        "unsupported flag \"--force\" in \"kubectl delete pod p --force\""
    );
    assert_eq!(
        ActionSpec::from_kubectl("kubectl rollout undo deploy/d")
            .unwrap()
            .kind(),
        "rollout_undo"
    );
    assert_eq!(
        ActionSpec::from_kubectl("kubectl rollout restart deployments d")
            .unwrap()
            .kind(),
        "rollout_restart"
    );
}

/// A typed scale keeps its declared direction when rendered, and a step's view says which way
/// it goes.
#[test]
fn a_scale_renders_its_direction_and_a_step_shows_its_way() {
    let b = Bounds { min: 1, max: 8 };
    let spec = |direction| ActionSpec::ScaleDeployment {
        namespace: Template::parse("prod").unwrap(),
        deployment: Template::parse("web").unwrap(),
        replicas: ReplicaSpec::To {
            count: Template::parse("{new_replicas}").unwrap(),
            direction,
            bounds: b,
        },
    };
    let mut v = Vars::default();
    v.set("new_replicas", "3");
    let replicas = |direction| match spec(direction).render(&v, &[]).unwrap() {
        Action::ScaleDeployment { replicas, .. } => replicas,
        other => panic!("not a scale: {other:?}"),
    };
    assert_eq!(replicas(Direction::Down), Replicas::Down(3, b));
    assert_eq!(replicas(Direction::Up), Replicas::Up(3, b));
    let step = |n| {
        Action::ScaleDeployment {
            namespace: "prod".into(),
            deployment: "web".into(),
            replicas: Replicas::By(n, b),
        }
        .view()
    };
    for (n, way, flag) in [(2, "up", "+2"), (1, "up", "+1"), (-1, "down", "-1"), (-3, "down", "-3")] {
        let view = step(n);
        assert_eq!(view.params["direction"], way, "{n}");
        assert_eq!(view.params["replicas_delta"], n, "{n}");
        assert!(view.display.contains(&format!("--replicas={flag}")), "{}", view.display);
    }
}

/// The template strings inside a patch or a webhook body are rendered, at any depth; keys and
/// other values stay as written.
#[test]
fn json_templates_render_at_every_depth() {
    let mut v = Vars::default();
    v.set("container", "app-1");
    v.set("service", "checkout");
    let patch = ActionSpec::Patch {
        resource: PATCHABLE[0].to_string(),
        namespace: Template::parse("prod").unwrap(),
        name: Template::parse("{service}").unwrap(),
        patch: serde_json::json!({"spec": {"image": "{container}", "list": ["{service}", 3, true, null]}, "{literal}": 1}),
    };
    let Action::Patch { patch, name, .. } = patch.render(&v, &[]).unwrap() else {
        panic!("not a patch")
    };
    assert_eq!(name, "checkout");
    assert_eq!(
        patch,
        serde_json::json!({"spec": {"image": "app-1", "list": ["checkout", 3, true, null]}, "{literal}": 1})
    );
    let hook = ActionSpec::Webhook {
        url: Template::parse("https://hooks.example.com/{service}").unwrap(),
        method: "POST".into(),
        body: Some(serde_json::json!({"service": "{service}", "n": 1})),
        timeout_seconds: 5,
    };
    let Action::Webhook { url, body, .. } = hook.render(&v, &[]).unwrap() else {
        panic!("not a webhook")
    };
    assert_eq!(url, "https://hooks.example.com/checkout");
    assert_eq!(body, Some(serde_json::json!({"service": "checkout", "n": 1})));
}
