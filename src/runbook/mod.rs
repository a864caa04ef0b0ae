//! The runbook catalogue: load (kubectl-style and native forms, docs/design.md#runbooks), validate,
//! and match incidents.
//!
//! Matching goes through two hash indexes built at load time, root cause first, then symptoms,
//! so its cost does not grow with the number of runbooks. Triggers and symptoms are compared
//! case-insensitively; a trigger claimed by two runbooks is a load error, so a match is never
//! ambiguous.

pub mod action;
pub mod check;
mod load;
pub mod scaling;
pub mod template;

pub use action::{Action, ActionSpec, Bounds, Direction, ReplicaSpec, Replicas, RevisionPin, DEFAULT_MAX_REPLICAS};
pub use check::{CheckName, CheckSpec};
pub use load::{LoadError, LoadErrors};

use crate::incident::Incident;
use crate::outcome::Mode;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Risk level of a runbook: LOW / MEDIUM / HIGH (docs/design.md#runbooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Risk {
    /// Safe to auto-execute.
    Low,
    /// Auto with extra checks.
    Medium,
    /// Requires human approval unless the runbook says otherwise.
    High,
}

/// Namespaces and services a runbook may act on (empty = any).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunbookScope {
    /// Allowed namespaces.
    pub namespaces: Vec<String>,
    /// Allowed services.
    pub services: Vec<String>,
}

/// When a runbook loses its place on the automation spectrum (the trust ladder): once it has
/// run `min_runs` times, a verified success rate below `floor` over its last `window`
/// executions demotes it from `auto` to `approval`. Promotion stays a human decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustPolicy {
    /// Lowest acceptable verified success rate (0..1).
    pub floor: f64,
    /// Executions needed before the rate is judged.
    pub min_runs: u32,
    /// Executions the rate is computed over (the most recent ones).
    pub window: u32,
}

/// One validated runbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Runbook {
    /// Unique id (the YAML key).
    pub id: String,
    /// Risk level.
    pub risk: Risk,
    /// Effective mode: as written, else `approval` for HIGH risk and `auto` otherwise.
    pub mode: Mode,
    /// What it is for.
    pub description: Option<String>,
    /// Owning team.
    pub owner: Option<String>,
    /// Root causes it fixes.
    pub triggers: Vec<String>,
    /// Symptoms that also select it when no root cause matches.
    pub symptoms: Vec<String>,
    /// Minimum RCA confidence to act.
    pub min_confidence: f64,
    /// Rate limit per (runbook, service) per sliding hour.
    pub max_per_hour: u32,
    /// Quiet period per (runbook, service) after an execution.
    pub cooldown: Duration,
    /// At most this many distinct services touched by this runbook per blast-radius window.
    pub blast_radius_limit: Option<u32>,
    /// Where it may act.
    pub scope: RunbookScope,
    /// Checks before acting.
    pub pre_checks: Vec<CheckSpec>,
    /// The action.
    pub action: ActionSpec,
    /// Verification after acting.
    pub post_checks: Vec<CheckSpec>,
    /// Undo on failed verification; `None` means self-healing.
    pub rollback: Option<ActionSpec>,
    /// Verification after a rollback (default for deployment rollbacks: `deployment_rolled_out`).
    pub rollback_checks: Vec<CheckSpec>,
    /// Shadow mode for this runbook.
    pub dry_run: bool,
    /// Automatic demotion policy (`None`: the runbook is never demoted automatically).
    pub trust: Option<TrustPolicy>,
    /// Progressive rollout policy (`None`: the runbook is decided in its mode as written).
    pub rollout: Option<crate::rollout::RolloutPolicy>,
    /// `allow_irreversible_auto`: why a HIGH-risk runbook may act automatically without a
    /// rollback. Without it such a runbook does not load; with it, every execution's outcome and
    /// `remediator runbooks` say so.
    pub irreversible_override: Option<String>,
}

impl Runbook {
    /// Does it act without a human (its mode as written, before any demotion)?
    pub fn automatic(&self) -> bool {
        self.mode == Mode::Auto
    }

    /// Can a failed action be undone: it has a rollback, or it is self-healing (a controller
    /// recreates what `delete_pod` and `rollout_restart` replace).
    pub fn reversible(&self) -> bool {
        self.rollback.is_some()
            || matches!(
                self.action,
                ActionSpec::DeletePod { .. } | ActionSpec::RolloutRestart { .. }
            )
    }

    /// Problems that do not stop the catalogue from loading but that an operator should see
    /// (`remediator validate` prints them): `(key, message)`.
    pub fn warnings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.automatic() && !self.reversible() {
            let mut m = format!(
                "{} runs automatically but is neither reversible (no rollback) nor self-healing \
                 (delete_pod, rollout_restart): a failed verification leaves its change in place",
                self.action.kind()
            );
            if let Some(why) = &self.irreversible_override {
                m.push_str(&format!(" (allow_irreversible_auto: {why})"));
            }
            out.push(("rollback", m));
        }
        out
    }
}

/// How an incident matched a runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchedBy {
    /// Its root cause is a trigger.
    RootCause,
    /// One of its symptoms (this one) is a trigger or symptom.
    Symptom(String),
}

/// The loaded catalogue with its match indexes.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    runbooks: Vec<Runbook>,
    by_id: HashMap<String, usize>,
    by_root_cause: HashMap<Key, usize>,
    by_symptom: HashMap<Key, usize>,
}

impl Catalogue {
    /// Load and validate a runbook file; every problem found is reported, not just the first.
    pub fn load(path: &Path) -> Result<Self, LoadErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadErrors(vec![LoadError {
                file: path.display().to_string(),
                runbook: None,
                key: None,
                message: e.to_string(),
                at: None,
            }])
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Load from YAML text; `file` names the source in error messages.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, LoadErrors> {
        load::parse_catalogue(text, file)
    }

    fn build(runbooks: Vec<Runbook>, file: &str) -> Result<Self, LoadErrors> {
        let mut errors = Vec::new();
        let mut cat = Catalogue::default();
        for (i, rb) in runbooks.iter().enumerate() {
            cat.by_id.insert(rb.id.clone(), i);
            for t in &rb.triggers {
                if let Some(&other) = cat.by_root_cause.get(&key(t)) {
                    errors.push(LoadError::at(
                        file,
                        &rb.id,
                        "triggers",
                        format!("trigger {t:?} is already claimed by runbook {:?}", runbooks[other].id),
                    ));
                } else {
                    cat.by_root_cause.insert(key(t), i);
                }
            }
        }
        // Symptoms index: every trigger and symptom; a symptom may not point at two runbooks.
        // Each problem is reported once, under the key that has it: a trigger already reported
        // as claimed twice is skipped, and a trigger that is another runbook's symptom is a
        // `triggers` problem.
        for (i, rb) in runbooks.iter().enumerate() {
            let triggers = rb
                .triggers
                .iter()
                .filter(|t| cat.by_root_cause.get(&key(t)) == Some(&i))
                .map(|t| ("triggers", t));
            for (field, s) in triggers.chain(rb.symptoms.iter().map(|s| ("symptoms", s))) {
                match cat.by_symptom.get(&key(s)) {
                    Some(&other) if other != i => errors.push(LoadError::at(
                        file,
                        &rb.id,
                        field,
                        if field == "triggers" {
                            format!("trigger {s:?} is also a symptom of runbook {:?}", runbooks[other].id)
                        } else {
                            format!("symptom {s:?} already selects runbook {:?}", runbooks[other].id)
                        },
                    )),
                    _ => {
                        cat.by_symptom.insert(key(s), i);
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        cat.runbooks = runbooks;
        Ok(cat)
    }

    /// The runbook for an incident: by root cause, else by its first symptom that selects one.
    pub fn match_incident(&self, incident: &Incident) -> Option<(&Runbook, MatchedBy)> {
        if let Some(&i) = self.by_root_cause.get(&key(&incident.root_cause)) {
            return Some((&self.runbooks[i], MatchedBy::RootCause));
        }
        incident.symptoms.iter().find_map(|s| {
            self.by_symptom
                .get(&key(s))
                .map(|&i| (&self.runbooks[i], MatchedBy::Symptom(s.clone())))
        })
    }

    /// A runbook by id.
    pub fn get(&self, id: &str) -> Option<&Runbook> {
        self.by_id.get(id).map(|&i| &self.runbooks[i])
    }

    /// All runbooks, in file order.
    pub fn runbooks(&self) -> &[Runbook] {
        &self.runbooks
    }

    /// Number of runbooks.
    pub fn len(&self) -> usize {
        self.runbooks.len()
    }

    /// No runbooks at all.
    pub fn is_empty(&self) -> bool {
        self.runbooks.is_empty()
    }
}

/// Longest matching form kept inside the index's bucket (most triggers and symptoms are short
/// identifiers such as `CrashLoopBackOff` or `health_check_failure`).
const INLINE: usize = 30;

/// A trigger or symptom in its matching form: lowercase (matching is case-insensitive). Short
/// keys live inside the hash map's bucket, so a lookup in a large catalogue touches one bucket
/// instead of a bucket and a separately allocated string, and building a key to look up an
/// ASCII root cause allocates nothing. Inline exactly when the lowercase form fits, so equal
/// keys always have the same variant.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Inline(u8, [u8; INLINE]),
    Heap(Box<str>),
}

impl Key {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Inline(len, b) => &b[..usize::from(*len)],
            Self::Heap(s) => s.as_bytes(),
        }
    }
}

/// The used bytes only, as `str` hashes (the unused inline tail is zero and equal anyway).
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.bytes());
        state.write_u8(0xff);
    }
}

fn key(s: &str) -> Key {
    let inline = |bytes: &[u8]| {
        let mut b = [0u8; INLINE];
        b[..bytes.len()].copy_from_slice(bytes);
        Key::Inline(bytes.len() as u8, b)
    };
    if s.len() <= INLINE && s.is_ascii() {
        let mut b = [0u8; INLINE];
        for (d, c) in b.iter_mut().zip(s.bytes()) {
            *d = c.to_ascii_lowercase();
        }
        return Key::Inline(s.len() as u8, b);
    }
    let lower = s.to_lowercase();
    if lower.len() <= INLINE {
        inline(lower.as_bytes())
    } else {
        Key::Heap(lower.into_boxed_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_canonical_whatever_their_length_or_script() {
        // Same matching form, same key: case folds, and the variant depends only on the
        // lowercase form's length.
        assert_eq!(key("CrashLoopBackOff"), key("crashloopbackoff"));
        assert!(matches!(key("CrashLoopBackOff"), Key::Inline(16, _)));
        let long = "Health_Check_Failure_After_Deploy_Rollout";
        assert_eq!(key(long), key(&long.to_lowercase()));
        assert!(matches!(key(long), Key::Heap(_)));
        assert_eq!(key("STRASSE-Straße"), key("strasse-straße"));
        assert!(matches!(key("Straße"), Key::Inline(..)));
        // 15 × 'İ' is 30 bytes, but its lowercase form is 45: stored on the heap both ways.
        let dotted = "İ".repeat(15);
        assert_eq!(key(&dotted), key(&dotted.to_lowercase()));
        assert!(matches!(key(&dotted), Key::Heap(_)));
        assert_ne!(key("crash"), key("crash "));
        assert_ne!(key("a"), key("a\0"), "the zero padding never makes two keys equal");
    }

    /// A load problem as (runbook, key, message): what these tests assert, whatever the location.
    type Problem = (Option<String>, Option<String>, String);

    fn catalogue(yaml: &str) -> Result<Catalogue, Vec<Problem>> {
        Catalogue::from_yaml(yaml, "t.yaml")
            .map_err(|e| e.0.into_iter().map(|e| (e.runbook, e.key, e.message)).collect())
    }

    fn incident(root_cause: &str, symptoms: &[&str]) -> Incident {
        let symptoms: Vec<String> = symptoms.iter().map(|s| format!("{s:?}")).collect();
        crate::incident::parse(
            format!(
                r#"{{"id":"i","root_cause":"{root_cause}","confidence":0.9,"service":"api","symptoms":[{}]}}"#,
                symptoms.join(",")
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const TWO: &str = r#"
runbooks:
  restart:
    risk: LOW
    min_confidence: 0.8
    triggers: [CrashLoopBackOff]
    symptoms: [pod_restarts]
    action: {kind: delete_pod, namespace: "{namespace}", pod: "{pod_name}"}
    rollback: null
  scale:
    risk: MEDIUM
    min_confidence: 0.8
    mode: approval
    triggers: [high_cpu]
    symptoms: [slow_responses]
    action: {kind: scale_deployment, namespace: "{namespace}", deployment: "{deployment}", replicas: "{new_replicas}", max_replicas: 8}
    rollback: null
"#;

    /// Root cause first (any case), else the first symptom that selects a runbook.
    #[test]
    fn incidents_match_by_root_cause_then_by_their_first_selecting_symptom() {
        let c = catalogue(TWO).unwrap();
        assert_eq!((c.len(), c.is_empty()), (2, false));
        assert_eq!(
            c.runbooks().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["restart", "scale"]
        );
        assert_eq!(c.get("scale").map(|r| r.id.as_str()), Some("scale"));
        assert!(c.get("Scale").is_none());
        let m = |root: &str, symptoms: &[&str]| {
            let i = incident(root, symptoms);
            c.match_incident(&i).map(|(r, by)| (r.id.clone(), by))
        };
        assert_eq!(
            m("crashloopbackoff", &["slow_responses"]),
            Some(("restart".into(), MatchedBy::RootCause))
        );
        assert_eq!(
            m("unknown", &["nothing", "SLOW_RESPONSES", "pod_restarts"]),
            Some(("scale".into(), MatchedBy::Symptom("SLOW_RESPONSES".into())))
        );
        assert_eq!(
            m("unknown", &["high_cpu"]),
            Some(("scale".into(), MatchedBy::Symptom("high_cpu".into()))),
            "a trigger is also a symptom"
        );
        assert_eq!(m("unknown", &["nothing"]), None);
        assert!(Catalogue::default().is_empty());
    }

    /// A symptom may select one runbook only: the second claim is an error naming both.
    #[test]
    fn a_symptom_selects_one_runbook_only() {
        let yaml = TWO.replace("symptoms: [slow_responses]", "symptoms: [slow_responses, Pod_Restarts]");
        assert_eq!(
            catalogue(&yaml).unwrap_err(),
            vec![(
                Some("scale".to_string()),
                Some("symptoms".to_string()),
                r#"symptom "Pod_Restarts" already selects runbook "restart""#.to_string()
            )]
        );
    }

    /// Automatic or not, reversible or not, and the warning an irreversible automatic runbook
    /// gets (with the override's reason when it has one).
    #[test]
    fn irreversible_automatic_runbooks_are_warned_about() {
        let c = catalogue(TWO).unwrap();
        let (restart, scale) = (c.get("restart").unwrap(), c.get("scale").unwrap());
        assert!(restart.automatic() && restart.reversible(), "delete_pod heals itself");
        assert!(!scale.automatic() && !scale.reversible());
        assert!(
            restart.warnings().is_empty() && scale.warnings().is_empty(),
            "approval runbooks are not warned about"
        );
        let mut auto_scale = scale.clone();
        auto_scale.mode = Mode::Auto;
        let msg = "scale_deployment runs automatically but is neither reversible (no rollback) nor self-healing \
                   (delete_pod, rollout_restart): a failed verification leaves its change in place";
        assert_eq!(auto_scale.warnings(), vec![("rollback", msg.to_string())]);
        auto_scale.irreversible_override = Some("capacity only".into());
        assert_eq!(
            auto_scale.warnings(),
            vec![("rollback", format!("{msg} (allow_irreversible_auto: capacity only)"))]
        );
    }
}
