//! Thin entry point: parse the command line, load configuration, start.

use anyhow::{bail, Context, Result};
use clap::Parser;
use remediator::cli::{Cli, Command};
use remediator::config::Config;
use remediator::runbook::Catalogue;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(dispatch(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    match cli.command {
        Command::Run {
            config,
            runbooks,
            dry_run,
        } => {
            let mut overrides = Vec::new();
            if let Some(r) = runbooks {
                overrides.push(("runbooks", r.display().to_string()));
            }
            if dry_run {
                overrides.push(("dry_run", "true".to_string()));
            }
            let config = Config::load(config.as_deref(), &env, &overrides)?;
            remediator::worker::init_logging(&config.log.format, &config.log.level);
            remediator::worker::run(config).await
        }
        Command::Demo => {
            remediator::worker::init_logging("text", "error");
            remediator::demo::run(&mut std::io::stdout()).await
        }
        Command::Replay {
            runbooks,
            incidents,
            now,
        } => {
            let now = match now {
                Some(s) => chrono::DateTime::parse_from_rfc3339(&s)
                    .with_context(|| format!("--now {s:?} is not an RFC 3339 time"))?
                    .with_timezone(&chrono::Utc),
                None => chrono::Utc::now(),
            };
            let catalogue = load_catalogue(&runbooks)?;
            let input: Box<dyn std::io::BufRead> = if incidents == Path::new("-") {
                Box::new(std::io::stdin().lock())
            } else {
                let f = std::fs::File::open(&incidents).with_context(|| format!("{}", incidents.display()))?;
                Box::new(std::io::BufReader::new(f))
            };
            let mut out = std::io::stdout().lock();
            let mut write_err = None;
            remediator::replay::replay(catalogue, input, now, |o| {
                if write_err.is_none() {
                    write_err = writeln!(out, "{}", o.to_json()).err();
                }
            })
            .await
            .with_context(|| format!("{}", incidents.display()))?;
            if let Some(e) = write_err {
                bail!("writing output: {e}");
            }
            Ok(())
        }
        Command::Validate { runbooks, config } => {
            let cfg = Config::load(config.as_deref(), &env, &[])?;
            let path = runbooks.unwrap_or_else(|| cfg.runbooks.clone().into());
            let catalogue = load_catalogue(&path)?;
            println!("{}: {} runbooks OK", path.display(), catalogue.len());
            for rb in catalogue.runbooks() {
                println!(
                    "  {:<22} risk {:<6} mode {:<8} triggers: {}",
                    rb.id,
                    format!("{:?}", rb.risk).to_uppercase(),
                    rb.mode.as_str(),
                    rb.triggers.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// Load a catalogue, printing every problem before failing.
fn load_catalogue(path: &Path) -> Result<Catalogue> {
    match Catalogue::load(path) {
        Ok(c) => Ok(c),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            bail!("{}: {} problem(s) found", path.display(), errors.0.len())
        }
    }
}
