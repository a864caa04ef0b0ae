//! `remediator replay`: an offline what-if over a JSONL file of incidents.
//!
//! Every line goes through the real engine with an in-memory guardrail store, the simulated
//! executor and worker-wide dry run, at one fixed instant (`--now`), with deterministic event
//! ids: the same input always prints the same output, one outcome per input line, in order.

use crate::clock::{Clock, ManualClock};
use crate::engine::{Engine, EventIds, Settings};
use crate::executor::simulated::SimulatedExecutor;
use crate::guardrails::memory::MemoryStore;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::runbook::Catalogue;
use chrono::{DateTime, Utc};
use std::io::BufRead;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Replay `input` (JSONL) against `catalogue` at `now`, calling `emit` for each outcome in
/// input order. Returns the number of lines read.
pub async fn replay<R: BufRead>(
    catalogue: Catalogue,
    input: R,
    now: DateTime<Utc>,
    mut emit: impl FnMut(&Outcome),
) -> std::io::Result<usize> {
    let clock = ManualClock::new(now);
    let clock: Arc<dyn Clock> = Arc::new(clock);
    let settings = Settings {
        worker: "replay".into(),
        dry_run: true,
        ..Settings::default()
    };
    let engine = Engine::new(
        Arc::new(catalogue),
        Arc::new(MemoryStore::new(Arc::clone(&clock))),
        Arc::new(SimulatedExecutor::new()),
        clock,
        settings,
        Metrics::new(),
        EventIds::Deterministic(AtomicU64::new(0)),
    );
    let mut lines = 0;
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        lines += 1;
        let attempt = format!("replay-{i}");
        // The in-memory store never fails, so an error here is a bug worth surfacing.
        let handled = engine
            .handle(line, None, &attempt)
            .await
            .map_err(|e| std::io::Error::other(format!("line {}: {e}", i + 1)))?;
        for o in &handled.outcomes {
            emit(o);
        }
    }
    Ok(lines)
}
