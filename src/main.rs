//! Thin entry point: parse the command line, load configuration, start.

use anyhow::{bail, Context, Result};
use clap::Parser;
use remediator::cli::{Cli, Command};
use remediator::config::Config;
use remediator::runbook::Catalogue;
use std::collections::BTreeMap;
use std::path::Path;

/// mimalloc instead of the system allocator: a decision allocates and frees many small strings,
/// and glibc's malloc was a quarter of `remediator replay`'s time (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            remediator::worker::init_logging(config.log.format.as_str(), &config.log.level);
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
            // Unbuffered: replay buffers its input itself.
            let input: Box<dyn std::io::Read + Send> = if incidents == Path::new("-") {
                Box::new(std::io::stdin())
            } else {
                Box::new(std::fs::File::open(&incidents).with_context(|| format!("{}", incidents.display()))?)
            };
            // Buffered: stdout alone flushes at every line.
            let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
            remediator::replay::replay(catalogue, input, now, out)
                .await
                .with_context(|| format!("replaying {}", incidents.display()))?;
            Ok(())
        }
        Command::Approve { id, answer } => answer_cli(&id, true, answer).await,
        Command::Deny { id, answer } => answer_cli(&id, false, answer).await,
        Command::SignAnswer {
            id,
            decision,
            approver,
            action_hash,
            key_file,
        } => {
            let key = remediator::approval::AnswerKey::load(&key_file).map_err(anyhow::Error::msg)?;
            let approver = approver
                .or_else(|| std::env::var("USER").ok())
                .filter(|a| !a.trim().is_empty())
                .context("--approver is required when $USER is not set")?;
            if action_hash.trim().is_empty() {
                bail!("--action-hash must not be empty");
            }
            let m = key.signed_message(&id, decision == "approve", &approver, &action_hash);
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        Command::Approvals { url } => {
            let token = approval_token()?;
            let pending = remediator::approval::client_pending(&url, &token)
                .await
                .map_err(anyhow::Error::msg)?;
            if pending.is_empty() {
                println!("no approvals waiting");
            }
            for a in pending {
                let expires = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(a.expires_at_ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                println!(
                    "{}  incident {}  runbook {}  expires {expires}",
                    a.id, a.incident_id, a.runbook
                );
                println!("    action: {}", a.action);
                println!("    action hash: {}", a.action_hash);
            }
            Ok(())
        }
        Command::Execute {
            runbook,
            service,
            context,
            dry_run,
            operator,
            config,
        } => {
            let config = Config::load(config.as_deref(), &env, &[])?;
            remediator::worker::init_logging("text", "warn");
            let mut values = BTreeMap::new();
            for kv in &context {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--context {kv:?}: expected key=value"))?;
                values.insert(k.trim().to_string(), v.trim().to_string());
            }
            let operator = operator
                .or_else(|| env.get("USER").cloned())
                .unwrap_or_else(|| "unknown".into());
            let outcomes =
                remediator::worker::execute_manual(&config, &runbook, &service, values, dry_run, &operator).await?;
            for o in &outcomes {
                println!("{}", remediator::demo::render(o));
                println!("{}", o.to_json());
            }
            match outcomes.last().map(|o| (o.decision, o.success)) {
                Some(
                    (remediator::outcome::Decision::Executed, Some(true)) | (remediator::outcome::Decision::DryRun, _),
                ) => Ok(()),
                _ => bail!("the runbook did not run to a verified success"),
            }
        }
        Command::Runbooks { config } => {
            let config = Config::load(config.as_deref(), &env, &[])?;
            print!("{}", remediator::worker::runbooks_report(&config).await?);
            Ok(())
        }
        Command::Promote { runbook, config } => {
            let config = Config::load(config.as_deref(), &env, &[])?;
            let catalogue = load_catalogue(Path::new(&config.runbooks))?;
            let Some(rb) = catalogue.get(&runbook) else {
                bail!("no runbook {runbook:?} in {}", config.runbooks);
            };
            if rb.rollout.is_some() {
                // A rollout runbook moves one stage right, if its evidence allows; audited.
                let by = env.get("USER").cloned().unwrap_or_else(|| "an operator".into());
                return match remediator::worker::promote_rollout(&config, catalogue, &runbook, &by).await? {
                    Ok(outcome) => {
                        println!("{runbook}: {}", outcome.reason);
                        Ok(())
                    }
                    Err(refusal) => bail!("{runbook}: not promoted: {refusal}"),
                };
            }
            let store = remediator::worker::store(&config).await?;
            if store.promote(&runbook).await.map_err(|e| anyhow::anyhow!("{e}"))? {
                println!("{runbook}: promoted back to its automatic mode; its verified record starts afresh");
            } else {
                println!("{runbook}: was not demoted; nothing changed");
            }
            Ok(())
        }
        Command::Validate { runbooks, config } => {
            let cfg = Config::load(config.as_deref(), &env, &[])?;
            let path = runbooks.unwrap_or_else(|| cfg.runbooks.clone().into());
            let catalogue = load_catalogue(&path)?;
            println!("{}: {} runbooks OK", path.display(), catalogue.len());
            // Warnings do not fail validation: the catalogue loads and runs as written.
            for rb in catalogue.runbooks() {
                for (key, message) in rb.warnings() {
                    eprintln!("warning: {}: runbook {:?}: {key}: {message}", path.display(), rb.id);
                }
            }
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

/// The approval API token from `REMEDIATOR_APPROVAL_TOKEN`.
fn approval_token() -> Result<String> {
    std::env::var(remediator::approval::TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| {
            format!(
                "set {} to the workers' approval API token",
                remediator::approval::TOKEN_ENV
            )
        })
}

/// `approve` / `deny`.
async fn answer_cli(id: &str, approve: bool, args: remediator::cli::AnswerArgs) -> Result<()> {
    let token = approval_token()?;
    let approver = args
        .approver
        .or_else(|| std::env::var("USER").ok())
        .context("--approver is required (no $USER to default to)")?;
    let body = remediator::approval::AnswerBody {
        approver,
        action_hash: args.action_hash,
    };
    let reply = remediator::approval::client_answer(&args.url, &token, id, approve, &body)
        .await
        .map_err(anyhow::Error::msg)?;
    for o in &reply.outcomes {
        println!("{}", remediator::demo::render(o));
    }
    if !reply.accepted {
        bail!("refused: {}", reply.reason);
    }
    println!("{}: {}", id, reply.reason);
    Ok(())
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
