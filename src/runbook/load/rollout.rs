//! A runbook's `rollout:` policy (docs/rollout.md): its first stage, the evidence that moves it
//! right, its canary shares, and how far evidence alone may take it.

use super::values::type_name;
use super::Parser;
use crate::rollout::{RolloutPolicy, Stage};
use crate::yaml::Value;
use std::time::Duration;

const KEYS: &[&str] = &["start", "promote_after", "window_hours", "canary", "automatic_until"];

impl Parser<'_> {
    /// Parse `rollout:`; `None` when absent or wrong (each problem reported at its key).
    pub(super) fn rollout(&mut self, v: Option<&Value>) -> Option<RolloutPolicy> {
        let m = match v {
            None | Some(Value::Null) => return None,
            Some(Value::Mapping(m)) => m,
            Some(other) => {
                self.err(
                    "rollout",
                    format!(
                        "must be a mapping with start/promote_after/window_hours/canary/automatic_until, got {}",
                        type_name(other)
                    ),
                );
                return None;
            }
        };
        let before = self.errors.len();
        self.unknown_keys(m, KEYS, "rollout");
        let start = match m.get("start") {
            None => Some(Stage::Shadow),
            Some(v) => match self.string(v, "rollout.start").as_deref().map(Stage::parse) {
                Some(Some(s @ (Stage::Shadow | Stage::Approval))) => Some(s),
                Some(_) => {
                    self.err("rollout.start", "must be shadow or approval");
                    None
                }
                None => None,
            },
        };
        let promote_after = match m.get("promote_after") {
            None => Some(5),
            Some(v) => self.integer(v, "rollout.promote_after", 1, 1000).map(|n| n as u32),
        };
        let window_hours = match m.get("window_hours") {
            None => Some(24),
            Some(v) => self.integer(v, "rollout.window_hours", 1, 720),
        };
        let shares = match m.get("canary") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Mapping(c)) => {
                self.unknown_keys(c, &["shares"], "rollout.canary");
                self.shares(c.get("shares"))
            }
            Some(other) => {
                self.err(
                    "rollout.canary",
                    format!("must be a mapping with shares, got {}", type_name(other)),
                );
                Vec::new()
            }
        };
        let automatic_until = match m.get("automatic_until") {
            None if shares.is_empty() => Some(Stage::Approval),
            None => Some(Stage::Canary),
            Some(v) => match self.string(v, "rollout.automatic_until").as_deref().map(Stage::parse) {
                Some(Some(Stage::Canary)) if shares.is_empty() => {
                    self.err(
                        "rollout.automatic_until",
                        "is canary, but rollout.canary.shares names no share",
                    );
                    None
                }
                Some(Some(s @ (Stage::Approval | Stage::Canary | Stage::Auto))) => Some(s),
                Some(_) => {
                    self.err("rollout.automatic_until", "must be approval, canary or auto");
                    None
                }
                None => None,
            },
        };
        if self.errors.len() != before {
            return None;
        }
        Some(RolloutPolicy {
            start: start?,
            promote_after: promote_after?,
            window: Duration::from_secs(window_hours? * 3600),
            canary_shares: shares,
            automatic_until: automatic_until?,
        })
    }

    /// `rollout.canary.shares`: percents, strictly increasing, each 1..=99.
    fn shares(&mut self, v: Option<&Value>) -> Vec<u8> {
        const KEY: &str = "rollout.canary.shares";
        let items = match v {
            Some(Value::Sequence(items)) if !items.is_empty() => items,
            Some(Value::Sequence(_)) | None => {
                self.err(KEY, "must list at least one share (percent of targets, 1..99)");
                return Vec::new();
            }
            Some(other) => {
                self.err(KEY, format!("must be a list of percents, got {}", type_name(other)));
                return Vec::new();
            }
        };
        let mut out: Vec<u8> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(s) = self.integer(item, &format!("{KEY}[{i}]"), 1, 99) else {
                continue;
            };
            let s = s as u8;
            if out.last().is_some_and(|last| *last >= s) {
                self.err(&format!("{KEY}[{i}]"), "shares must increase strictly");
            }
            out.push(s);
        }
        out
    }
}
