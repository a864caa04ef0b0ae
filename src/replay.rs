//! `remediator replay`: an offline what-if over a JSONL file of incidents.
//!
//! Every line goes through the real engine with an in-memory guardrail store, the simulated
//! executor and worker-wide dry run, at one fixed instant (`--now`), with deterministic event
//! ids: the same input always prints the same output, one outcome per input line, in order.
//!
//! Three stages overlap, so a long file uses more than one core: a thread reads and parses the
//! lines ([`incident::parse`], which depends on nothing but the line), the engine decides them
//! one after another in input order (everything that depends on the lines before: guardrails,
//! duplicates, event ids), and another thread writes each outcome as a line of JSON. Only the
//! decisions carry state, and they stay in order, so the output is the same as deciding and
//! writing each line in turn.
use crate::clock::{Clock, ManualClock};
use crate::engine::{Engine, EventIds, Handled, Settings};
use crate::executor::simulated::SimulatedExecutor;
use crate::guardrails::memory::MemoryStore;
use crate::incident::{self, Incident, Partial, Rejection};
use crate::metrics::Metrics;
use crate::runbook::Catalogue;
use chrono::{DateTime, Utc};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Batches that may wait between two stages.
const DEPTH: usize = 16;
/// Lines handed from the reader to the engine at most at a time (fewer when the input has no more
/// for now: see [`read_and_parse`]).
const BATCH: usize = 256;
/// The reader's buffer.
const READ_BUFFER: usize = 64 * 1024;

type Parsed = Result<Incident, (Rejection, Partial)>;

/// Replay `input` (JSONL) against `catalogue` at `now`, writing each outcome to `out` as one
/// line of JSON, in input order. Returns the number of lines read.
pub async fn replay<R, W>(catalogue: Catalogue, input: R, now: DateTime<Utc>, out: W) -> std::io::Result<usize>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let engine = engine(catalogue, now);
    let (parsed_tx, mut parsed_rx) = mpsc::channel::<std::io::Result<Vec<Parsed>>>(DEPTH);
    let (decided_tx, decided_rx) = mpsc::channel::<Vec<Handled>>(DEPTH);
    let reader = std::thread::Builder::new()
        .name("replay-read".into())
        .spawn(move || read_and_parse(BufReader::with_capacity(READ_BUFFER, input), parsed_tx))?;
    let writer = std::thread::Builder::new()
        .name("replay-write".into())
        .spawn(move || write_outcomes(out, decided_rx))?;

    let mut lines = 0;
    let mut result = Ok(());
    'batches: loop {
        let batch = tokio::select! {
            biased;
            // The writer stopped (its error is reported below): nothing more can be written.
            () = decided_tx.closed() => break,
            next = parsed_rx.recv() => match next {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    result = Err(e);
                    break;
                }
                None => break,
            },
        };
        let mut decided = Vec::with_capacity(batch.len());
        for parsed in batch {
            let attempt = format!("replay-{lines}");
            lines += 1;
            // The in-memory store never fails, so an error here is a bug worth surfacing.
            match engine.handle_parsed(parsed, None, &attempt).await {
                Ok(handled) => decided.push(handled),
                Err(e) => {
                    result = Err(std::io::Error::other(format!("line {lines}: {e}")));
                    break 'batches;
                }
            }
        }
        if decided_tx.send(decided).await.is_err() {
            break;
        }
    }
    // Let the writer finish what it has.
    drop(decided_tx);
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the output thread panicked")));
    result?;
    written?;
    // Every line was read: the reader has finished (its own error came through the channel; a
    // panic is a bug). After an error it is not waited for: it may be blocked reading a stdin
    // that stays open, and it stops at its next line, when it finds the channel closed.
    if reader.join().is_err() {
        return Err(std::io::Error::other("the input thread panicked"));
    }
    Ok(lines)
}

/// The engine replay decides with: in-memory store, simulated executor, dry run, the clock
/// stopped at `now`, deterministic event ids. Public for the benchmark, which times replay's
/// stages one by one.
pub fn engine(catalogue: Catalogue, now: DateTime<Utc>) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now));
    let settings = Settings {
        worker: "replay".into(),
        dry_run: true,
        ..Settings::default()
    };
    Engine::new(
        Arc::new(catalogue),
        Arc::new(MemoryStore::new(Arc::clone(&clock))),
        Arc::new(SimulatedExecutor::new()),
        clock,
        settings,
        Metrics::new(),
        EventIds::Deterministic(AtomicU64::new(0)),
    )
}

/// Read `input` line by line (a trailing `\r` is dropped) and parse each, handing the lines
/// over in batches: when [`BATCH`] are ready, or when the input has nothing more buffered (so a
/// line fed on its own, from a `tail -f`, is decided at once instead of waiting for company).
fn read_and_parse<R: Read>(mut input: BufReader<R>, tx: mpsc::Sender<std::io::Result<Vec<Parsed>>>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let l = line.strip_suffix(b"\n").unwrap_or(&line);
                batch.push(incident::parse(l.strip_suffix(b"\r").unwrap_or(l)));
            }
            Err(e) => {
                let _ = tx.blocking_send(Ok(std::mem::take(&mut batch)));
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if (batch.len() == BATCH || input.buffer().is_empty())
            && tx
                .blocking_send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))))
                .is_err()
        {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
}

/// Write each outcome as a line of JSON, flushing whenever it has caught up with the engine (so
/// a replay fed line by line, `tail -f … | remediator replay --incidents -`, answers each line
/// at once). Stops at the first error, which it names as an output error.
fn write_outcomes<W: Write>(mut out: W, mut rx: mpsc::Receiver<Vec<Handled>>) -> std::io::Result<()> {
    let mut write = || -> std::io::Result<()> {
        loop {
            let outcomes = match rx.try_recv() {
                Ok(o) => o,
                Err(mpsc::error::TryRecvError::Empty) => {
                    out.flush()?;
                    match rx.blocking_recv() {
                        Some(o) => o,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            // Each event as the engine serialised it (once, for its record too).
            for (_, json) in outcomes.iter().flat_map(Handled::events) {
                out.write_all(json.as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()
    };
    write().map_err(|e| std::io::Error::new(e.kind(), format!("writing output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What replay did before its stages overlapped: each line read, decided and written in turn.
    async fn one_by_one(catalogue: Catalogue, input: &[u8], now: DateTime<Utc>) -> Vec<u8> {
        let engine = engine(catalogue, now);
        let mut out = Vec::new();
        for (i, line) in std::io::Cursor::new(input).split(b'\n').enumerate() {
            let line = line.expect("in memory");
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            let handled = engine
                .handle(line, None, &format!("replay-{i}"))
                .await
                .expect("decided");
            for o in &handled.outcomes {
                out.extend_from_slice(o.to_json().as_bytes());
                out.push(b'\n');
            }
        }
        out
    }

    /// Shared output for the replay under test (its writer runs on a thread of its own).
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("output").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Lines (several batches) whose decisions depend on the lines before (duplicates, rate limits, cooldowns,
    /// blast radius), with invalid, empty and CRLF lines among them: the overlapping stages
    /// write exactly what deciding each line in turn writes.
    #[tokio::test]
    async fn overlapping_stages_write_what_one_line_at_a_time_writes() {
        let yaml = include_str!("../tests/data/seed-runbooks.yaml");
        let now = DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut input = Vec::new();
        for i in 0..(3 * BATCH + 17) {
            let svc = format!("svc-{}", i % 13);
            let line = match i % 9 {
                0..=3 => format!(
                    r#"{{"id":"i-{}","root_cause":"CrashLoopBackOff","confidence":0.95,"service":"{svc}","context":{{"pod_name":"{svc}-x{i}","namespace":"production"}}}}"#,
                    i % 400
                ),
                4 => format!(
                    r#"{{"id":"i-{i}","root_cause":"high_cpu","confidence":0.9,"service":"{svc}","context":{{"deployment":"{svc}","namespace":"production","new_replicas":5,"old_replicas":3}}}}"#
                ),
                5 => "{not json".to_string(),
                6 => String::new(),
                7 => {
                    format!(
                        r#"{{"id":"i-{i}","root_cause":"cosmic_rays","confidence":0.8,"service":"{svc}","context":{{}}}}"#
                    ) + "\r"
                }
                _ => format!(
                    r#"{{"id":"i-{i}","root_cause":"CrashLoopBackOff","confidence":0.5,"service":"{svc}","context":{{}}}}"#
                ),
            };
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
        let want = one_by_one(Catalogue::from_yaml(yaml, "seed").expect("seed"), &input, now).await;
        let out = Shared::default();
        let lines = replay(
            Catalogue::from_yaml(yaml, "seed").expect("seed"),
            std::io::Cursor::new(input.clone()),
            now,
            out.clone(),
        )
        .await
        .expect("replayed");
        assert_eq!(lines, 3 * BATCH + 17);
        let got = out.0.lock().expect("output").clone();
        assert_eq!(
            got.iter().filter(|b| **b == b'\n').count(),
            lines,
            "one outcome per line"
        );
        assert!(got == want, "same output as one line at a time");
    }

    /// An output that fails stops the replay with an error naming the output.
    #[tokio::test]
    async fn an_output_error_is_named() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let yaml = include_str!("../tests/data/seed-runbooks.yaml");
        let input = std::io::Cursor::new(b"{}\n".repeat(2 * BATCH));
        let e = replay(
            Catalogue::from_yaml(yaml, "seed").expect("seed"),
            input,
            Utc::now(),
            Broken,
        )
        .await
        .expect_err("the output fails");
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(e.to_string().starts_with("writing output: "), "{e}");
    }
}
