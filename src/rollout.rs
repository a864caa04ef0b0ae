//! Progressive rollout: a runbook "starts left and moves right as trust builds" (docs/rollout.md).
//!
//! A runbook with a `rollout:` policy is decided in the stage its shared record holds: `shadow`
//! (a dry run that says what it would have done), `approval`, `canary` (automatic for a share of
//! targets, approval for the rest, widened one share at a time) and `auto`. Verified successes
//! are its evidence; enough of them in the policy's window move it one stage right, up to the
//! stage the policy lets evidence alone reach; past that a human promotes. Any failed
//! verification steps it back one stage and clears the evidence.
//!
//! This module is the pure part: the stages, the policy, the transitions and canary membership.
//! The record lives in the guardrail store (`rollout.lua` and the memory store's mirror of it,
//! both built on [`Transition`]), so every replica decides in the same stage, and a decision
//! taken in a stage that changed meanwhile is refused by the store and taken again
//! ([`crate::guardrails::DecideAnswer::StageChanged`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// A stage of a runbook's rollout, left (least automatic) to right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Dry run: the outcome says what would have run; nothing changes.
    Shadow,
    /// Every execution needs a human's approval.
    Approval,
    /// Automatic for a share of targets, approval for the others.
    Canary,
    /// Automatic.
    Auto,
}

impl Stage {
    /// Every stage, left to right.
    pub const ALL: [Stage; 4] = [Stage::Shadow, Stage::Approval, Stage::Canary, Stage::Auto];

    /// Wire name (YAML, outcomes, the store, metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Shadow => "shadow",
            Stage::Approval => "approval",
            Stage::Canary => "canary",
            Stage::Auto => "auto",
        }
    }

    /// Parse the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The `remediator_rollout_stage` gauge's value: 0 shadow .. 3 auto.
    pub fn gauge(self) -> i64 {
        self as i64
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A runbook's `rollout:` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPolicy {
    /// The first stage: `shadow` or `approval`.
    pub start: Stage,
    /// Verified successes (since the last change or failure, within `window`) that make the
    /// runbook eligible for its next stage.
    pub promote_after: u32,
    /// How far back evidence counts.
    pub window: Duration,
    /// Percent of targets acting automatically at each canary step, strictly increasing in
    /// 1..=99; empty: approval is followed by auto.
    pub canary_shares: Vec<u8>,
    /// The highest stage evidence alone reaches; beyond it a human promotes.
    pub automatic_until: Stage,
}

/// Where a runbook stands: its stage, its canary step (an index into the shares) and the
/// record's version, which changes with every stage change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The stage.
    pub stage: Stage,
    /// In `canary`: which share (index into [`RolloutPolicy::canary_shares`]); else 0.
    pub step: u32,
}

impl Position {
    /// Where a runbook without a record stands: its policy's first stage.
    pub fn start(policy: &RolloutPolicy) -> Self {
        Position {
            stage: policy.start,
            step: 0,
        }
    }

    /// The canary share in force, for `canary` (a step past the policy's shares, left by an
    /// older policy, counts as its widest share).
    pub fn share(self, policy: &RolloutPolicy) -> Option<u8> {
        (self.stage == Stage::Canary).then(|| {
            let last = policy.canary_shares.len().saturating_sub(1);
            policy
                .canary_shares
                .get((self.step as usize).min(last))
                .copied()
                .unwrap_or(100)
        })
    }

    /// The next position to the right: the next canary share, else the next stage (`canary` is
    /// skipped without shares); `None` at `auto`.
    pub fn next(self, policy: &RolloutPolicy) -> Option<Position> {
        let at = |stage| Position { stage, step: 0 };
        match self.stage {
            Stage::Shadow => Some(at(Stage::Approval)),
            Stage::Approval if policy.canary_shares.is_empty() => Some(at(Stage::Auto)),
            Stage::Approval => Some(at(Stage::Canary)),
            Stage::Canary if (self.step as usize) + 1 < policy.canary_shares.len() => Some(Position {
                stage: Stage::Canary,
                step: self.step + 1,
            }),
            Stage::Canary => Some(at(Stage::Auto)),
            Stage::Auto => None,
        }
    }

    /// One stage back after a failed verification: `auto` to the first canary share (or
    /// approval without shares), `canary` to approval; approval and shadow stay.
    pub fn back(self, policy: &RolloutPolicy) -> Position {
        let at = |stage| Position { stage, step: 0 };
        match self.stage {
            Stage::Auto if !policy.canary_shares.is_empty() => at(Stage::Canary),
            Stage::Auto | Stage::Canary => at(Stage::Approval),
            Stage::Approval | Stage::Shadow => self,
        }
    }

    /// For humans: `canary 25%`, `auto`.
    pub fn describe(self, policy: &RolloutPolicy) -> String {
        match self.share(policy) {
            Some(s) => format!("{} {s}%", self.stage),
            None => self.stage.to_string(),
        }
    }
}

/// What a result or a human did to a runbook's rollout (the store's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    /// Where it stands now.
    pub position: Position,
    /// The record's version now.
    pub version: u64,
    /// Successes counted toward the next stage now.
    pub evidence: u32,
    /// Where it stood before, if this changed it.
    pub changed_from: Option<Position>,
}

/// What one call changes: the pure rule both stores apply inside their one atomic step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A verified success (for shadow: a dry run the guardrails allowed).
    Success,
    /// A failed verification, a rollback or an action error.
    Failure,
    /// A human promotes it one position right.
    Promote,
}

/// Why a human's promotion was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteRefusal {
    /// The runbook has no rollout policy.
    NoPolicy,
    /// At `auto` already.
    AtTheEnd,
    /// Not enough successes yet: (counted, needed).
    Evidence(u32, u32),
}

impl fmt::Display for PromoteRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromoteRefusal::NoPolicy => f.write_str("the runbook has no rollout policy"),
            PromoteRefusal::AtTheEnd => f.write_str("it runs automatically already (stage auto)"),
            PromoteRefusal::Evidence(have, need) => write!(
                f,
                "{have} of the {need} verified successes its policy needs since the last stage change or failure"
            ),
        }
    }
}

/// Apply `t` to a runbook at `at` with `evidence` successes counted (the new success, for
/// [`Transition::Success`], already among them): the new position (if it changes) and whether
/// the evidence restarts. `Err` for a refused promotion.
pub fn apply(
    policy: &RolloutPolicy,
    at: Position,
    evidence: u32,
    t: Transition,
) -> Result<(Option<Position>, bool), PromoteRefusal> {
    match t {
        Transition::Success => {
            let next = at
                .next(policy)
                .filter(|n| evidence >= policy.promote_after && n.stage <= policy.automatic_until);
            Ok((next, next.is_some()))
        }
        Transition::Failure => {
            let back = at.back(policy);
            Ok(((back != at).then_some(back), true))
        }
        Transition::Promote => match at.next(policy) {
            None => Err(PromoteRefusal::AtTheEnd),
            Some(_) if evidence < policy.promote_after => Err(PromoteRefusal::Evidence(evidence, policy.promote_after)),
            Some(n) => Ok((Some(n), true)),
        },
    }
}

/// Is `target` among the `share` percent of a runbook's targets that act automatically in its
/// canary stage? Stable across replicas and restarts: the first 8 bytes of
/// SHA-256(`runbook` `|` `target`), as a big-endian number, modulo 100, below `share`.
pub fn in_canary(runbook: &str, target: &str, share: u8) -> bool {
    let mut h = Sha256::new();
    h.update(runbook.as_bytes());
    h.update(b"|");
    h.update(target.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first) % 100 < u64::from(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(shares: &[u8], until: Stage) -> RolloutPolicy {
        RolloutPolicy {
            start: Stage::Shadow,
            promote_after: 3,
            window: Duration::from_secs(3600),
            canary_shares: shares.to_vec(),
            automatic_until: until,
        }
    }

    fn pos(stage: Stage, step: u32) -> Position {
        Position { stage, step }
    }

    #[test]
    fn stages_move_right_one_share_at_a_time() {
        let p = policy(&[10, 50], Stage::Auto);
        let mut at = Position::start(&p);
        let mut seen = vec![at.describe(&p)];
        while let Some(n) = at.next(&p) {
            at = n;
            seen.push(at.describe(&p));
        }
        assert_eq!(seen, ["shadow", "approval", "canary 10%", "canary 50%", "auto"]);
        let p = policy(&[], Stage::Auto);
        assert_eq!(pos(Stage::Approval, 0).next(&p), Some(pos(Stage::Auto, 0)));
    }

    #[test]
    fn a_failure_steps_back_one_stage() {
        let p = policy(&[10, 50], Stage::Auto);
        assert_eq!(pos(Stage::Auto, 0).back(&p), pos(Stage::Canary, 0));
        assert_eq!(pos(Stage::Canary, 1).back(&p), pos(Stage::Approval, 0));
        assert_eq!(pos(Stage::Canary, 0).back(&p), pos(Stage::Approval, 0));
        assert_eq!(pos(Stage::Approval, 0).back(&p), pos(Stage::Approval, 0));
        assert_eq!(pos(Stage::Shadow, 0).back(&p), pos(Stage::Shadow, 0));
        assert_eq!(
            pos(Stage::Auto, 0).back(&policy(&[], Stage::Auto)),
            pos(Stage::Approval, 0)
        );
        // It clears the evidence even where the stage stays.
        assert_eq!(
            apply(&p, pos(Stage::Approval, 0), 2, Transition::Failure),
            Ok((None, true))
        );
        assert_eq!(
            apply(&p, pos(Stage::Auto, 0), 9, Transition::Failure),
            Ok((Some(pos(Stage::Canary, 0)), true))
        );
    }

    #[test]
    fn evidence_moves_it_exactly_at_promote_after_and_only_up_to_automatic_until() {
        let p = policy(&[10, 50], Stage::Canary);
        let at = pos(Stage::Approval, 0);
        assert_eq!(apply(&p, at, 2, Transition::Success), Ok((None, false)));
        assert_eq!(
            apply(&p, at, 3, Transition::Success),
            Ok((Some(pos(Stage::Canary, 0)), true))
        );
        assert_eq!(
            apply(&p, pos(Stage::Canary, 0), 3, Transition::Success),
            Ok((Some(pos(Stage::Canary, 1)), true))
        );
        // The widest share is as far as evidence goes: auto is beyond automatic_until.
        assert_eq!(
            apply(&p, pos(Stage::Canary, 1), 30, Transition::Success),
            Ok((None, false))
        );
        assert_eq!(
            apply(&p, pos(Stage::Auto, 0), 30, Transition::Success),
            Ok((None, false))
        );
        let shadow_only = policy(&[10], Stage::Shadow);
        assert_eq!(
            apply(&shadow_only, pos(Stage::Shadow, 0), 3, Transition::Success),
            Ok((None, false))
        );
    }

    #[test]
    fn a_human_promotes_past_automatic_until_only_with_the_evidence() {
        let p = policy(&[50], Stage::Canary);
        let at = pos(Stage::Canary, 0);
        assert_eq!(
            apply(&p, at, 2, Transition::Promote),
            Err(PromoteRefusal::Evidence(2, 3))
        );
        assert_eq!(
            apply(&p, at, 3, Transition::Promote),
            Ok((Some(pos(Stage::Auto, 0)), true))
        );
        assert_eq!(
            apply(&p, pos(Stage::Auto, 0), 3, Transition::Promote),
            Err(PromoteRefusal::AtTheEnd)
        );
        assert_eq!(
            PromoteRefusal::Evidence(0, 2).to_string(),
            "0 of the 2 verified successes its policy needs since the last stage change or failure"
        );
    }

    #[test]
    fn a_step_past_the_shares_counts_as_the_widest() {
        let p = policy(&[10, 50], Stage::Auto);
        assert_eq!(pos(Stage::Canary, 7).share(&p), Some(50));
        assert_eq!(pos(Stage::Canary, 0).share(&p), Some(10));
        assert_eq!(pos(Stage::Auto, 0).share(&p), None);
        assert_eq!(pos(Stage::Canary, 0).share(&policy(&[], Stage::Auto)), Some(100));
    }

    #[test]
    fn canary_membership_is_stable_and_close_to_its_share() {
        let members = |share| {
            (0..2000)
                .filter(|i| in_canary("restart", &format!("ns/deployment/app-{i}"), share))
                .count()
        };
        assert_eq!(members(0), 0);
        assert_eq!(members(100), 2000);
        let half = members(50);
        assert!((900..=1100).contains(&half), "{half} of 2000 at 50%");
        // Wider shares keep every earlier member.
        for i in 0..500 {
            let t = format!("ns/deployment/app-{i}");
            if in_canary("restart", &t, 10) {
                assert!(in_canary("restart", &t, 25), "{t}");
            }
        }
        // Another runbook draws other targets.
        let differ = (0..200)
            .filter(|i| {
                let t = format!("ns/deployment/app-{i}");
                in_canary("restart", &t, 50) != in_canary("scale", &t, 50)
            })
            .count();
        assert!(differ > 50, "{differ}");
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
        assert_eq!(Stage::parse("Auto"), None);
        assert_eq!(Stage::Auto.gauge(), 3);
        assert_eq!(Stage::Shadow.gauge(), 0);
    }
}
