//! The command line (DESIGN.md §1.4).

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
    /// simulated cluster), showing the seed's incidents, cooldown, circuit breaker, rejection.
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
