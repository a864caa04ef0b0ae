//! The kubectl-style action strings of the seed form (`kubectl scale deployment web
//! --replicas=+1 -n prod`) parsed into an [`ActionSpec`]. Parsed, never executed: only the
//! supported shapes are accepted, each gets the safe scale direction, and anything else is a load
//! error that points at the native `{kind: ...}` form.

use super::{ActionSpec, Bounds, Direction, ReplicaSpec, DEFAULT_MAX_REPLICAS};
use crate::runbook::template::Template;

impl ActionSpec {
    /// Parse a seed-style kubectl string, capping scales at [`DEFAULT_MAX_REPLICAS`].
    ///
    /// Supported: `kubectl delete pod P`, `kubectl scale deployment D --replicas=N|+N|-N`,
    /// `kubectl rollout restart|undo deployment D` (also `deployment/D`), each with an optional
    /// `-n NS` / `--namespace NS` / `--namespace=NS` (default `{namespace}` from the context).
    pub fn from_kubectl(cmd: &str) -> Result<Self, String> {
        Self::from_kubectl_capped(cmd, DEFAULT_MAX_REPLICAS)
    }

    /// [`ActionSpec::from_kubectl`] with the runbook's cap. A kubectl string cannot declare a
    /// direction, so it gets the safe one: `--replicas={old_replicas}` restores the captured count
    /// (a rollback), `-N` goes down (never below 1), and anything else goes up, within `1..=max`.
    pub fn from_kubectl_capped(cmd: &str, max_replicas: u32) -> Result<Self, String> {
        let bounds = Bounds {
            min: 1,
            max: max_replicas,
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let unsupported = || {
            format!(
                "unsupported action {cmd:?}: supported kubectl forms are `delete pod`, `scale deployment --replicas=`, \
                 `rollout restart deployment`, `rollout undo deployment`; use the native {{kind: ...}} form for others"
            )
        };
        if words.first() != Some(&"kubectl") {
            return Err(unsupported());
        }
        let mut namespace: Option<&str> = None;
        let mut replicas: Option<&str> = None;
        let mut positional = Vec::new();
        let mut i = 1;
        while i < words.len() {
            let w = words[i];
            if w == "-n" || w == "--namespace" {
                namespace = Some(
                    words
                        .get(i + 1)
                        .copied()
                        .ok_or_else(|| format!("{w} needs a value in {cmd:?}"))?,
                );
                i += 2;
                continue;
            }
            if let Some(v) = w.strip_prefix("--namespace=") {
                namespace = Some(v);
            } else if let Some(v) = w.strip_prefix("--replicas=") {
                replicas = Some(v);
            } else if w.starts_with('-') {
                return Err(format!("unsupported flag {w:?} in {cmd:?}"));
            } else {
                positional.push(w);
            }
            i += 1;
        }
        // `deployment/name` is the same as `deployment name`.
        let mut pos: Vec<&str> = Vec::new();
        for p in positional {
            match p.split_once('/') {
                Some((kind, name)) if matches!(kind, "deployment" | "deployments" | "deploy" | "pod" | "pods") => {
                    pos.push(kind);
                    pos.push(name);
                }
                _ => pos.push(p),
            }
        }
        let ns = Template::parse(namespace.unwrap_or("{namespace}"))?;
        let is_deploy = |k: &str| matches!(k, "deployment" | "deployments" | "deploy");
        let spec = match pos.as_slice() {
            ["delete", "pod" | "pods", name] if replicas.is_none() => ActionSpec::DeletePod {
                namespace: ns,
                pod: Template::parse(name)?,
            },
            ["scale", kind, name] if is_deploy(kind) => {
                let r = replicas.ok_or_else(|| format!("`kubectl scale` needs --replicas= in {cmd:?}"))?;
                let replicas = if let Some(step) = r.strip_prefix('+').or(r.strip_prefix('-').map(|_| r)) {
                    let n: i32 = step.parse().map_err(|_| format!("--replicas={r} is not a number"))?;
                    if n == 0 || n.abs() > 1000 {
                        return Err(format!("--replicas={r} must be a non-zero step of at most 1000"));
                    }
                    ReplicaSpec::By(n, bounds)
                } else {
                    let t = Template::parse(r)?;
                    if let Ok(n) = r.parse::<u32>() {
                        bounds.check(n).map_err(|m| format!("--replicas={r}: {m}"))?;
                    } else if t.single_var().is_none() {
                        return Err(format!("--replicas={r} must be a number or a single {{variable}}"));
                    }
                    if t.single_var() == Some("old_replicas") {
                        ReplicaSpec::Restore
                    } else {
                        ReplicaSpec::To {
                            count: t,
                            direction: Direction::Up,
                            bounds,
                        }
                    }
                };
                ActionSpec::ScaleDeployment {
                    namespace: ns,
                    deployment: Template::parse(name)?,
                    replicas,
                }
            }
            ["rollout", "restart", kind, name] if is_deploy(kind) && replicas.is_none() => ActionSpec::RolloutRestart {
                namespace: ns,
                deployment: Template::parse(name)?,
            },
            ["rollout", "undo", kind, name] if is_deploy(kind) && replicas.is_none() => ActionSpec::RolloutUndo {
                namespace: ns,
                deployment: Template::parse(name)?,
            },
            _ => return Err(unsupported()),
        };
        Ok(spec)
    }
}
