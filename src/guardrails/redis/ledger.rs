//! Approvals and the trust ladder on Redis: one script per approval step (`approval_create.lua`,
//! `approval_answer.lua`, `approval_pending.lua`, `approval_summary.lua`, `trust_record.lua`,
//! `rollout.lua`, in `src/guardrails/`), plain commands where one command is already atomic
//! (trust reads, demotions). Keys as in the key space of the parent module.

use super::reply::number;
use super::{escape, unescape, RedisStore};
use crate::guardrails::{
    Answer, AnswerResult, Approval, ApprovalState, LedgerStore, PendingSummary, StoreError, TrustStats,
};
use crate::rollout::{Position, PromoteRefusal, RolloutPolicy, RolloutRecord, Stage, Transition};

/// `rollout.lua`'s reply: the record, or a refused promotion.
pub(super) fn parse_rollout(reply: &[String]) -> Result<Result<RolloutRecord, PromoteRefusal>, StoreError> {
    const OP: &str = "rollout";
    let stage = |s: &str| Stage::parse(s).ok_or_else(|| StoreError::Protocol(format!("{OP}: stage {s:?}")));
    match reply {
        [refused, kind, have, need] if refused == "refused" => Ok(Err(match kind.as_str() {
            "end" => PromoteRefusal::AtTheEnd,
            "evidence" => PromoteRefusal::Evidence(number(OP, have)?, number(OP, need)?),
            other => return Err(StoreError::Protocol(format!("{OP}: refusal {other:?}"))),
        })),
        [s, step, version, evidence, from_stage, from_step] => Ok(Ok(RolloutRecord {
            position: Position {
                stage: stage(s)?,
                step: number(OP, step)?,
            },
            version: number(OP, version)?,
            evidence: number(OP, evidence)?,
            changed_from: if from_stage.is_empty() {
                None
            } else {
                Some(Position {
                    stage: stage(from_stage)?,
                    step: number(OP, from_step)?,
                })
            },
        })),
        other => Err(StoreError::Protocol(format!("{OP}: reply {other:?}"))),
    }
}

/// Rebuild an approval from its immutable JSON and its mutable fields.
fn approval_from(
    op: &str,
    json: &str,
    state: &str,
    approver: &str,
    created: &str,
    expires: &str,
) -> Result<Approval, StoreError> {
    let mut a: Approval =
        serde_json::from_str(json).map_err(|e| StoreError::Protocol(format!("{op}: approval json: {e}")))?;
    a.state = ApprovalState::parse(state).ok_or_else(|| StoreError::Protocol(format!("{op}: state {state:?}")))?;
    a.approver = (!approver.is_empty()).then(|| approver.to_string());
    a.created_at_ms = number(op, created)?;
    a.expires_at_ms = number(op, expires)?;
    Ok(a)
}

#[async_trait::async_trait]
impl LedgerStore for RedisStore {
    async fn create_approval(&self, approval: &Approval, ttl_ms: u64) -> Result<Approval, StoreError> {
        let mut a = approval.clone();
        a.state = ApprovalState::Pending;
        a.approver = None;
        let json = serde_json::to_string(&a).map_err(|e| StoreError::Protocol(format!("approval json: {e}")))?;
        let mut inv = self.scripts.approval_create.prepare_invoke();
        inv.key(self.key(&["appr", &a.id]))
            .key(self.key(&["approvals"]))
            .key(self.key(&["approvals_created"]))
            .key(self.key(&["apprg", &a.group]));
        inv.arg(escape(&a.id))
            .arg(&json)
            .arg(&a.action_hash)
            .arg(ttl_ms)
            .arg(if a.group.is_empty() { "" } else { "1" });
        let reply = self.run("create approval", &inv).await?;
        let [verdict, id, created, expires] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("create approval: reply {reply:?}")));
        };
        if verdict != "created" && verdict != "joined" {
            return Err(StoreError::Protocol(format!("create approval: verdict {verdict:?}")));
        }
        a.id = unescape(id);
        a.created_at_ms = number("create approval", created)?;
        a.expires_at_ms = number("create approval", expires)?;
        Ok(a)
    }

    async fn answer_approval(&self, id: &str, answer: &Answer) -> Result<AnswerResult, StoreError> {
        let op = "answer approval";
        let mut inv = self.scripts.approval_answer.prepare_invoke();
        inv.key(self.key(&["appr", id]))
            .key(self.key(&["approvals"]))
            .key(self.key(&["approvals_created"]));
        inv.arg(escape(id))
            .arg(if answer.approve { "approved" } else { "denied" })
            .arg(&answer.approver)
            .arg(answer.action_hash.as_deref().unwrap_or(""));
        let reply = self.run(op, &inv).await?;
        let [verdict, json, state, approver, created, expires] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("{op}: reply {reply:?}")));
        };
        if verdict == "not_found" {
            return Ok(AnswerResult::NotFound);
        }
        let a = approval_from(op, json, state, approver, created, expires)?;
        Ok(match verdict.as_str() {
            "ok" => AnswerResult::Accepted(a),
            "again" => AnswerResult::Repeated(a),
            "answered" => AnswerResult::AlreadyAnswered(a),
            "expired" => AnswerResult::Expired(a),
            "tampered" => AnswerResult::Tampered(a),
            other => return Err(StoreError::Protocol(format!("{op}: verdict {other:?}"))),
        })
    }

    async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let op = "pending approvals";
        // Read the index first, then let the script read exactly those hashes (declared keys;
        // the script re-checks each against the index and the clock).
        let ids: Vec<String> = self
            .command(op, redis::cmd("ZRANGE").arg(self.key(&["approvals"])).arg(0).arg(-1))
            .await?;
        let mut inv = self.scripts.approval_pending.prepare_invoke();
        inv.key(self.key(&["approvals"]));
        let prefix = self.key(&["appr", ""]);
        for id in &ids {
            inv.key(format!("{prefix}{id}")).arg(id);
        }
        let reply = self.run(op, &inv).await?;
        if reply.len() % 3 != 0 {
            return Err(StoreError::Protocol(format!("{op}: {} fields", reply.len())));
        }
        reply
            .chunks(3)
            .map(|c| approval_from(op, &c[0], "pending", "", &c[1], &c[2]))
            .collect()
    }

    async fn pending_summary(&self) -> Result<PendingSummary, StoreError> {
        let op = "pending summary";
        let mut inv = self.scripts.approval_summary.prepare_invoke();
        inv.key(self.key(&["approvals"])).key(self.key(&["approvals_created"]));
        let reply = self.run(op, &inv).await?;
        let [count, oldest] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("{op}: reply {reply:?}")));
        };
        let oldest_created_ms = if oldest.is_empty() {
            None
        } else {
            // A zset score comes back as a float's text.
            let ms: f64 = number(op, oldest)?;
            Some(ms as i64)
        };
        Ok(PendingSummary {
            count: number(op, count)?,
            oldest_created_ms,
        })
    }

    async fn record_trust(&self, runbook: &str, success: bool, window: u32) -> Result<TrustStats, StoreError> {
        let mut inv = self.scripts.trust_record.prepare_invoke();
        inv.key(self.key(&["trust", runbook]))
            .arg(if success { "1" } else { "0" })
            .arg(window.max(1));
        let reply = self.run("record trust", &inv).await?;
        let [ok, total] = reply.as_slice() else {
            return Err(StoreError::Protocol(format!("record trust: reply {reply:?}")));
        };
        Ok(TrustStats {
            successes: number("record trust", ok)?,
            total: number("record trust", total)?,
        })
    }

    async fn trust(&self, runbook: &str, window: u32) -> Result<TrustStats, StoreError> {
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.key(&["trust", runbook]))
            .arg(0)
            .arg(i64::from(window.max(1)) - 1);
        let all: Vec<String> = self.command("trust", &cmd).await?;
        Ok(TrustStats {
            successes: all.iter().filter(|v| *v == "1").count() as u32,
            total: all.len() as u32,
        })
    }

    async fn demote(&self, runbook: &str, reason: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&["demoted", runbook])).arg(reason).arg("NX");
        let set: Option<String> = self.command("demote", &cmd).await?;
        Ok(set.is_some())
    }

    async fn demotion(&self, runbook: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(&["demoted", runbook]));
        self.command("demotion", &cmd).await
    }

    async fn promote(&self, runbook: &str) -> Result<bool, StoreError> {
        // A promotion starts a fresh record: the evidence that demoted it is not held against it.
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(&["demoted", runbook]));
        let n: i64 = self.command("promote", &cmd).await?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(&["trust", runbook]));
        self.command::<i64>("promote", &cmd).await?;
        Ok(n > 0)
    }

    async fn rollout(&self, runbook: &str, policy: &RolloutPolicy) -> Result<RolloutRecord, StoreError> {
        match self.run_rollout(runbook, policy, "read", "").await? {
            Ok(r) => Ok(r),
            Err(refusal) => Err(StoreError::Protocol(format!("rollout read refused: {refusal}"))),
        }
    }

    async fn rollout_apply(
        &self,
        runbook: &str,
        policy: &RolloutPolicy,
        transition: Transition,
        evidence_id: &str,
    ) -> Result<Result<RolloutRecord, PromoteRefusal>, StoreError> {
        let op = match transition {
            Transition::Success => "success",
            Transition::Failure => "failure",
            Transition::Promote => "promote",
        };
        self.run_rollout(runbook, policy, op, evidence_id).await
    }
}

impl RedisStore {
    async fn run_rollout(
        &self,
        runbook: &str,
        policy: &RolloutPolicy,
        op: &str,
        evidence_id: &str,
    ) -> Result<Result<RolloutRecord, PromoteRefusal>, StoreError> {
        let mut inv = self.scripts.rollout.prepare_invoke();
        inv.key(self.rollout_key(runbook))
            .key(self.key(&["rollout", runbook, "ok"]))
            .arg(op)
            .arg(policy.start.as_str())
            .arg(policy.promote_after.max(1))
            .arg(policy.window.as_millis().max(1) as u64)
            .arg(policy.canary_shares.len())
            .arg(policy.automatic_until.as_str())
            .arg(evidence_id);
        let reply = self.run("rollout", &inv).await?;
        parse_rollout(&reply)
    }
}
