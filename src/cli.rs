//! The command line (docs/design.md#command-line).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// remediator: auto-remediation worker with shared guardrails.
#[derive(Debug, Parser)]
#[command(name = "remediator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: consume incidents from Kafka, act, publish outcomes.
    Run {
        /// Config file (default config/remediator.yaml if present; env REMEDIATOR_* overrides it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Runbook file (overrides `runbooks`).
        #[arg(long)]
        runbooks: Option<PathBuf>,
        /// Shadow mode: decide and reserve guardrails, never act (overrides `dry_run`).
        #[arg(long)]
        dry_run: bool,
    },
    /// The whole pipeline in one process with embedded defaults (mock Kafka, in-memory store,
    /// simulated cluster), showing the sample incidents, cooldown, circuit breaker, rejection.
    Demo,
    /// Offline what-if: one outcome JSON per input line, in input order, dry run, deterministic.
    Replay {
        /// Runbook file.
        #[arg(long, default_value = "config/runbooks.yaml")]
        runbooks: PathBuf,
        /// Incidents, one JSON object per line (`-` for stdin).
        #[arg(long)]
        incidents: PathBuf,
        /// The instant to decide at (RFC 3339; default: now). Fix it for reproducible output.
        #[arg(long)]
        now: Option<String>,
    },
    /// Approve a pending approval through a worker's HTTP API (token in REMEDIATOR_APPROVAL_TOKEN).
    Approve {
        /// The approval id (from the `approval_required` outcome).
        id: String,
        #[command(flatten)]
        answer: AnswerArgs,
    },
    /// Deny a pending approval through a worker's HTTP API.
    Deny {
        /// The approval id.
        id: String,
        #[command(flatten)]
        answer: AnswerArgs,
    },
    /// Print a signed answer for the approvals topic (one JSON line, to produce to
    /// `kafka.approvals_topic`); the key comes from REMEDIATOR_APPROVAL_HMAC_KEY or --key-file.
    SignAnswer {
        /// The approval id (from the `approval_required` outcome).
        id: String,
        /// `approve` or `deny`.
        #[arg(long, value_parser = ["approve", "deny"])]
        decision: String,
        /// Who answers (audited; default: $USER).
        #[arg(long)]
        approver: Option<String>,
        /// The action hash you reviewed (`remediator approvals` shows it); required.
        #[arg(long)]
        action_hash: String,
        /// File with the signing key (the worker's `approvals.hmac_key_file`).
        #[arg(long, default_value = "")]
        key_file: String,
    },
    /// List the approvals still waiting, through a worker's HTTP API.
    Approvals {
        /// Base URL of a worker.
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
    },
    /// Run a runbook by hand, through the same checks, guardrails and audit as automatic runs.
    Execute {
        /// Runbook id.
        runbook: String,
        /// The service it acts on.
        #[arg(long)]
        service: String,
        /// Template values, `key=value` (repeatable), e.g. `--context namespace=prod`.
        #[arg(long = "context", value_name = "KEY=VALUE")]
        context: Vec<String>,
        /// Decide and reserve guardrails, but do not act.
        #[arg(long)]
        dry_run: bool,
        /// Who runs it (audited; default: $USER).
        #[arg(long)]
        operator: Option<String>,
        /// Config file (as for `run`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Each runbook's mode, verified success rate, circuit state and demotion, from the store.
    Runbooks {
        /// Config file (as for `run`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Give a demoted runbook back its automatic mode (a human decision; starts a fresh record),
    /// or move a runbook with a rollout policy one stage right once its evidence allows
    /// (docs/rollout.md).
    Promote {
        /// Runbook id.
        runbook: String,
        /// Config file (as for `run`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check the runbook file (and config) and print every problem; exits non-zero on any.
    Validate {
        /// Runbook file (default: the config's `runbooks`).
        #[arg(long)]
        runbooks: Option<PathBuf>,
        /// Config file to check as well.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Options of `approve` and `deny`.
#[derive(Debug, clap::Args)]
pub struct AnswerArgs {
    /// Who answers (audited; default: $USER).
    #[arg(long)]
    pub approver: Option<String>,
    /// The action hash you reviewed (`remediator approvals` shows it); refused if it changed.
    #[arg(long)]
    pub action_hash: Option<String>,
    /// Base URL of a worker.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    pub url: String,
}
