//! `remediator execute`: a human runs a runbook by hand, through the same rendering, checks,
//! guardrails, execution, verification and audit as an automatic run.

use super::automatic::Run;
use super::{render, runbook_facts, Engine, EngineError, Handled, Subject};
use crate::decision::{Facts, GuardrailFact, Intent, Seen};
use crate::incident;
use crate::runbook::template::Vars;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a manual run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    /// No runbook with that id.
    #[error("no runbook {0:?} in the catalogue")]
    UnknownRunbook(String),
    /// The service or a context value is invalid for the runbook.
    #[error("{0}")]
    Invalid(String),
    /// The store failed (nothing was executed).
    #[error(transparent)]
    Engine(EngineError),
}

impl Engine {
    /// Run a runbook by hand. The person running it is its approver, so an approval-mode
    /// runbook runs without asking again; the incident id is `manual-<uuid>`, its root cause the
    /// runbook's first trigger, its confidence 1.
    pub async fn execute_manual(
        &self,
        runbook: &str,
        service: &str,
        context: BTreeMap<String, String>,
        dry_run: bool,
        operator: &str,
    ) -> Result<Handled, ManualError> {
        let rb = self
            .catalogue
            .get(runbook)
            .ok_or_else(|| ManualError::UnknownRunbook(runbook.to_string()))?;
        let json = serde_json::json!({
            "id": format!("manual-{}", uuid::Uuid::new_v4()),
            "root_cause": rb.triggers.first().cloned().unwrap_or_default(),
            "confidence": 1.0,
            "services": [service],
            "context": context,
        });
        let incident =
            incident::parse(json.to_string().as_bytes()).map_err(|(r, _)| ManualError::Invalid(r.to_string()))?;
        let vars = Vars::from_incident(&incident);
        let action = render(rb, &incident, &vars).map_err(|e| ManualError::Invalid(e.to_string()))?;
        let intent = if dry_run || rb.dry_run || self.settings.dry_run {
            Intent::DryRun
        } else {
            Intent::Execute
        };
        let attempt = uuid::Uuid::new_v4().to_string();
        // A human asked: only the store's answers (a block) can still decide otherwise.
        let facts = Facts {
            invalid: None,
            seen: Seen::New,
            age: None,
            ahead: Duration::ZERO,
            max_age: self.settings.guardrails.max_incident_age,
            root_cause: incident.root_cause.clone(),
            runbook: Some(runbook_facts(rb)),
            confidence: incident.confidence,
            render_error: None,
            guardrail: GuardrailFact::Unknown,
            global_dry_run: self.settings.dry_run,
        };
        let run = Run {
            incident: &incident,
            rb,
            action: &action,
            vars: &vars,
            source: None,
            attempt: &attempt,
            subject: Subject {
                action: Some(action.view()),
                approver: Some(operator.to_string()),
                ..Subject::of(&incident, Some(rb))
            },
            decided_at: self.clock.now(),
            facts,
            operator: Some(operator),
        };
        let reason = format!("manual run of {} by {operator}", rb.id);
        let handled = self.proceed(run, intent, reason).await.map_err(ManualError::Engine)?;
        self.emit(&handled.outcomes);
        Ok(handled)
    }
}
