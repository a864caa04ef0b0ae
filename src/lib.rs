//! remediator: an auto-remediation worker.
//!
//! Incidents from an AIOps root-cause pipeline arrive on Kafka; each is matched to a runbook,
//! decided (AUTO / APPROVAL / MANUAL, docs/design.md#decision-order), held to guardrails shared by
//! every replica through Redis, executed, verified, rolled back on failure, and audited as outcome
//! events.

pub mod alertmanager;
pub mod approval;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod decision;
pub mod demo;
pub mod engine;
pub mod executor;
pub mod guardrails;
pub mod health;
pub mod http;
pub mod incident;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod replay;
pub(crate) mod retry;
pub mod rollout;
pub mod runbook;
pub mod shutdown;
pub mod worker;
pub mod yaml;
