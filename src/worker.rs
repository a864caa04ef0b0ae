//! `remediator run`: wire configuration, store, executor, engine, Kafka and HTTP together.

use crate::clock::SystemClock;
use crate::config::{Config, ExecutorKind};
use crate::engine::{Engine, EventIds, Settings};
use crate::executor::kubernetes::{KubeExecutorOptions, KubernetesExecutor};
use crate::executor::simulated::SimulatedExecutor;
use crate::executor::Executor;
use crate::guardrails::redis::RedisStore;
use crate::guardrails::{GuardrailStore, Store};
use crate::health::Health;
use crate::kafka;
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::runbook::{ActionSpec, Catalogue, CheckSpec, Runbook};
use crate::shutdown::{self, Shutdown};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// Install the global tracing subscriber: JSON lines (production) or text, to stderr.
pub fn init_logging(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().with_current_span(true).with_span_list(true).try_init()
    } else {
        builder.with_target(false).try_init()
    };
}

/// Connect to Redis, retrying with backoff until it answers or shutdown is requested. Nothing
/// is consumed before the store is reachable (fail closed).
async fn connect_store(config: &Config, health: &Health, shutdown: &Shutdown) -> Result<Option<RedisStore>> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match RedisStore::connect(
            &config.redis.url,
            &config.redis.key_prefix,
            Duration::from_millis(config.redis.timeout_ms),
        )
        .await
        {
            Ok(store) => {
                health.set_store(true);
                return Ok(Some(store));
            }
            Err(e) => {
                health.set_store(false);
                // Not the URL: it may carry a password.
                warn!(error = %e, "guardrail store unreachable; retrying (nothing is consumed meanwhile)");
            }
        }
        let mut s = shutdown.clone();
        if !backoff.wait_unless(s.wait()).await {
            return Ok(None);
        }
    }
}

/// How often a worker refreshes the gauges of shared state from the store.
pub const SHARED_GAUGES_EVERY: Duration = Duration::from_secs(15);

/// Refresh the gauges of shared state from the store every [`SHARED_GAUGES_EVERY`], so every
/// replica exports the same truth, not just the one that changed it: `remediator_circuit_state`
/// per runbook, the trust ladder (success rate, executions, demotion) and the pending approvals
/// (`remediator_approvals_pending`, `remediator_approval_oldest_pending_seconds`). A few store
/// calls per runbook per period, none per decision; a failed refresh keeps the last values.
fn spawn_shared_gauges(engine: Arc<Engine>, mut shutdown: Shutdown) {
    shutdown.clone().spawn(async move {
        loop {
            if let Err(e) = engine.refresh_circuit_gauges().await {
                debug!(error = %e, "circuit gauges not refreshed");
            }
            if let Err(e) = engine.refresh_trust_gauges().await {
                debug!(error = %e, "trust gauges not refreshed");
            }
            if let Err(e) = engine.refresh_approval_gauges().await {
                debug!(error = %e, "approval gauges not refreshed");
            }
            tokio::select! {
                _ = tokio::time::sleep(SHARED_GAUGES_EVERY) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
}

/// The Kubernetes executor's options from the config (durations already validated).
fn kube_options(config: &Config) -> KubeExecutorOptions {
    let k = &config.kubernetes;
    KubeExecutorOptions {
        prometheus_url: (!k.prometheus_url.is_empty()).then(|| k.prometheus_url.clone()),
        default_check_timeout: k.check_timeout,
        poll_interval: k.poll_interval,
        api_timeout: k.api_timeout,
        error_rate_query: (!k.error_rate_query.is_empty()).then(|| k.error_rate_query.clone()),
        error_rate_below: k.error_rate_below,
        ..KubeExecutorOptions::default()
    }
}

/// API calls one Kubernetes action is assumed to take in [`execution_bound`], each bounded by
/// `kubernetes.api_timeout`: a read, a write, and one re-read and write after a conflict. An
/// estimate of the usual worst case, not a bound: an action may retry a conflict up to 3 times
/// (each repeating its reads and its write, plus 50-150 ms of backoff), `rollout_undo` reads
/// three times per attempt and waits up to one `api_timeout` for the controller to observe the
/// deployment, and `delete_pod` also reads the pod's ReplicaSet.
pub const ACTION_API_CALLS: u32 = 4;

/// An estimate of the longest one execution of `rb` can take with the configured executor, from
/// its first pre-check to its last rollback check: every check's ceiling (its wait plus two API
/// calls, [`KubeExecutorOptions::check_ceiling`]), the action and, when it has one, the rollback
/// (a webhook's `timeout_seconds`, else [`ACTION_API_CALLS`] API calls). The simulated
/// executor's checks are instant and each action takes `simulated.action_delay`.
///
/// Not counted: conflict retries and controller waits beyond [`ACTION_API_CALLS`], and the
/// guardrail store and Kafka round trips around the execution (claim, reserve, record, lease
/// renewals, publish; each bounded by its own timeout and retried). What absorbs them is the
/// slack between this estimate and `shutdown.grace`, which [`check_grace`] does not enforce: an
/// operator who sets the grace to exactly the estimate leaves none, and an execution that overruns
/// is abandoned at the grace (its incident is redelivered; the store answers it without acting
/// twice). The `terminationGracePeriodSeconds` margin of 30 s beyond the grace is for commit,
/// flush and leaving the group, not for actions.
pub fn execution_bound(rb: &Runbook, config: &Config) -> Duration {
    if config.executor == ExecutorKind::Simulated {
        let delay = config.simulated.action_delay;
        return delay * if rb.rollback.is_some() { 2 } else { 1 };
    }
    let opts = kube_options(config);
    let action = |a: &ActionSpec| match a {
        ActionSpec::Webhook { timeout_seconds, .. } => Duration::from_secs(*timeout_seconds),
        _ => opts.api_timeout * ACTION_API_CALLS,
    };
    let checks = |cs: &[CheckSpec]| cs.iter().map(|c| opts.check_ceiling(c)).sum::<Duration>();
    let undo = rb
        .rollback
        .as_ref()
        .map_or(Duration::ZERO, |r| action(r) + checks(&rb.rollback_checks));
    checks(&rb.pre_checks) + action(&rb.action) + checks(&rb.post_checks) + undo
}

/// Refuse to run a catalogue with a runbook whose estimated execution ([`execution_bound`])
/// could outlast `shutdown.grace`:
/// SIGTERM would then cut it off before it is verified or rolled back. The error names the
/// runbook, its bound and the settings to change.
pub fn check_grace(catalogue: &Catalogue, config: &Config) -> Result<(), String> {
    let grace = config.grace();
    let too_long: Vec<String> = catalogue
        .runbooks()
        .iter()
        .filter_map(|rb| {
            let bound = execution_bound(rb, config);
            (bound > grace).then(|| format!("runbook {}: up to {} s", rb.id, bound.as_secs()))
        })
        .collect();
    if too_long.is_empty() {
        return Ok(());
    }
    Err(format!(
        "shutdown.grace: {} s is shorter than what an execution may take ({}); a SIGTERM would \
         cut it off unverified. Raise shutdown.grace (and terminationGracePeriodSeconds to at \
         least 30 s more), or shorten the runbook's timeout_seconds",
        grace.as_secs(),
        too_long.join(", ")
    ))
}

/// The configured executor. A Kubernetes executor's reachability feeds `/readyz` every 10 s.
pub async fn build_executor(config: &Config, health: &Arc<Health>, shutdown: &Shutdown) -> Result<Arc<dyn Executor>> {
    if config.executor == ExecutorKind::Simulated {
        warn!("executor: simulated cluster; actions are not applied to any real system");
        let sim = &config.simulated;
        let faults = crate::executor::simulated::Faults {
            action_delay: sim.action_delay,
            fail_post_checks_for: sim.fail_post_checks_for.iter().cloned().collect(),
            ..Default::default()
        };
        let mut executor = SimulatedExecutor::with_faults(faults);
        if !sim.journal.is_empty() {
            executor = executor.with_journal_file(&sim.journal);
        }
        health.set_executor(true);
        return Ok(Arc::new(executor));
    }
    let opts = kube_options(config);
    let executor = Arc::new(
        KubernetesExecutor::try_default(opts)
            .await
            .map_err(|e| anyhow!("kubernetes executor: {e}"))?,
    );
    let (probe, health, mut shutdown) = (Arc::clone(&executor), Arc::clone(health), shutdown.clone());
    shutdown.clone().spawn(async move {
        loop {
            match probe.ready().await {
                Ok(_) => health.set_executor(true),
                Err(reason) => {
                    health.set_executor(false);
                    warn!(%reason, "executor not ready");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
    Ok(executor)
}

/// How often the guardrail store is pinged for `/readyz`.
pub const STORE_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Keep `/readyz` true to the guardrail store even while no message needs it (an idle worker
/// would otherwise report a store that went away as fine until the next incident): a `PING`
/// now and every [`STORE_PROBE_EVERY`], bounded by `redis.timeout_ms`. Decisions update the same
/// flag as they go.
fn spawn_store_probe(store: Arc<dyn Store>, health: Arc<Health>, mut shutdown: Shutdown) {
    shutdown.clone().spawn(async move {
        loop {
            match store.ping().await {
                Ok(()) => health.set_store(true),
                Err(e) => {
                    debug!(error = %e, "guardrail store probe failed");
                    health.set_store(false);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(STORE_PROBE_EVERY) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
}

/// Run the worker until SIGTERM.
pub async fn run(config: Config) -> Result<()> {
    let catalogue = Catalogue::load(Path::new(&config.runbooks)).map_err(|e| anyhow!("invalid runbooks:\n{e}"))?;
    check_grace(&catalogue, &config).map_err(|e| anyhow!(e))?;
    let catalogue = Arc::new(catalogue);
    info!(worker = %config.worker_id, runbooks = catalogue.len(), dry_run = config.dry_run, "starting remediator");
    let metrics = Metrics::new();
    let health = Arc::new(Health::new());
    // One owner for every task below (`Shutdown::spawn`): on SIGTERM they stop taking work,
    // and the process exits only once all of them finished or the grace ran out.
    let (trigger, shutdown) = shutdown::with_grace(config.grace());
    let signal_shutdown = trigger.subscribe();
    // The one task outside the tracker: it only fires the trigger, and waiting for it would
    // hold the exit after a fatal error until a signal came.
    tokio::spawn(shutdown::on_signal(trigger.clone()));

    // The Alertmanager intake only produces incidents; the consumer below handles them.
    // Without a token it refuses to exist (the worker does not start) unless explicitly allowed.
    let intake = if config.alertmanager.enabled {
        let token = crate::alertmanager::token(&config.alertmanager)?;
        let authenticated = token.is_some();
        let intake = crate::alertmanager::Intake::new(&config.alertmanager, &config.kafka, token, metrics.clone())?;
        if authenticated {
            info!(
                "alertmanager intake on POST {} (bearer token required)",
                crate::alertmanager::PATH
            );
        } else {
            warn!(
                "alertmanager intake on POST {} WITHOUT authentication (alertmanager.allow_unauthenticated): \
                 anyone who reaches {} can create incidents",
                crate::alertmanager::PATH,
                config.http.listen
            );
        }
        Some(Arc::new(intake))
    } else {
        None
    };
    // The store connects lazily (a worker starts while Redis is down and is not ready until it
    // answers), so the engine exists before anything is served or consumed.
    let Some(store) = connect_store(&config, &health, &signal_shutdown).await? else {
        return Ok(());
    };
    let store: Arc<dyn Store> = Arc::new(store);
    spawn_store_probe(Arc::clone(&store), Arc::clone(&health), shutdown.clone());
    let executor = build_executor(&config, &health, &shutdown).await?;
    let mut engine = Engine::new(
        catalogue,
        store,
        executor,
        Arc::new(SystemClock),
        Settings::from(&config),
        metrics.clone(),
        EventIds::Random,
    );
    if let Some(url) = crate::config::secret(crate::notify::URL_ENV, &config.notify.webhook_url_file)? {
        engine = engine.with_notifier(
            crate::notify::Notifier::spawn_tracked(&url, metrics.clone(), &shutdown)
                .map_err(|e| anyhow!(e))?
                .with_console(&config.console.public_url),
        );
        info!("notifications: every outcome also goes to the configured webhook");
    }
    let engine = Arc::new(engine);
    spawn_shared_gauges(Arc::clone(&engine), shutdown.clone());

    // Approvals: the HTTP API needs a token; the approvals topic is consumed only when enabled,
    // and then only with the key that authenticates its answers (refuse to start without it).
    let answer_key = if config.approvals.topic_enabled {
        Some(
            crate::approval::AnswerKey::load(&config.approvals.hmac_key_file)
                .map_err(|e| anyhow!("approvals.topic_enabled is true but {e}"))?,
        )
    } else {
        None
    };
    let publisher = crate::approval::Publisher::new(&config.kafka).map_err(|e| anyhow!(e))?;
    let token_of_api = crate::config::secret(crate::approval::TOKEN_ENV, &config.approvals.token_file)?;
    let gate_of_api = match &token_of_api {
        Some(token) => Some(gate(&config, token)?),
        None => None,
    };
    let approvals = match &gate_of_api {
        Some(gate) => Some(Arc::new(crate::approval::Api::new(
            Arc::clone(&engine),
            publisher.clone(),
            gate.clone(),
            shutdown.clone(),
        ))),
        None => {
            warn!(
                "approval API disabled: set {} (or approvals.token_file)",
                crate::approval::TOKEN_ENV
            );
            None
        }
    };
    if let Some(key) = answer_key {
        let (settings, topic) = (config.kafka.clone(), config.kafka.approvals_topic.clone());
        let (engine, publisher, shutdown) = (Arc::clone(&engine), publisher.clone(), shutdown.clone());
        shutdown.clone().spawn(async move {
            if let Err(e) = crate::approval::consume(&settings, &topic, engine, publisher, key, shutdown).await {
                tracing::error!(error = %e, "approvals consumer stopped");
            }
        });
    } else {
        info!("approvals topic not consumed (approvals.topic_enabled is false)");
    }
    // The approvals console rides on the approval API: same token, same answers.
    let humans = approvals.zip(gate_of_api).map(|(api, gate)| {
        let routes = api.routes();
        if !config.console.enabled {
            return routes;
        }
        let recent = crate::console::Recent::new(config.console.recent_outcomes);
        shutdown.clone().spawn(recent.clone().tail(
            config.kafka.clone(),
            config.kafka.outcomes_topic.clone(),
            shutdown.clone(),
        ));
        let console = crate::console::Console::new(Arc::clone(&engine), gate, recent, Some(publisher.clone()));
        info!("approvals console at /console");
        routes.merge(Arc::new(console).routes())
    });
    let (addr, http_task) = crate::http::serve(
        &config.http.listen,
        metrics,
        Arc::clone(&health),
        intake,
        humans,
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("http.listen {}", config.http.listen))?;
    info!(%addr, "serving /metrics, /healthz, /readyz");

    let stats = kafka::run(&config.kafka, engine, Arc::clone(&health), shutdown.clone()).await;
    // Stopped on its own (a fatal Kafka error): everything else stops too.
    trigger.fire();
    // The incidents are drained; now every other task: the approvals consumer finishing the
    // answer in hand (and the execution it unlocked), approval API requests, the HTTP server,
    // probes and gauges. All within the same grace, counted from the signal.
    let finished = shutdown.finish().await;
    drop(http_task);
    if !finished {
        error!(
            still_running = shutdown.tasks_running(),
            grace_s = shutdown.grace().as_secs(),
            "shutdown grace over: abandoning the tasks still running"
        );
    }
    let stats = stats?;
    info!(?stats, "stopped");
    Ok(())
}

/// The door of the approval API and the console: its token, and a trusted proxy's identity
/// header when configured.
fn gate(config: &Config, token: &str) -> Result<crate::approval::identity::Gate> {
    let a = &config.approvals;
    let proxy = crate::config::TrustedProxy::parse(&a.identity_header, &a.trusted_proxies)
        .map_err(|(key, why)| anyhow!("{key}: {why}"))?;
    Ok(crate::approval::identity::Gate::new(token.to_string(), proxy))
}

/// The configured store (for the command-line tools that share the workers' state).
pub async fn store(config: &Config) -> Result<Arc<dyn Store>> {
    let store = RedisStore::connect(
        &config.redis.url,
        &config.redis.key_prefix,
        Duration::from_millis(config.redis.timeout_ms),
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    store.ping().await.map_err(|e| anyhow!("{e}"))?;
    Ok(Arc::new(store))
}

/// `remediator execute`: one manual run with the configured store and executor, audited on the
/// outcomes topic. Returns the outcomes (already published).
pub async fn execute_manual(
    config: &Config,
    runbook: &str,
    service: &str,
    context: BTreeMap<String, String>,
    dry_run: bool,
    operator: &str,
) -> Result<Vec<crate::outcome::Outcome>> {
    let catalogue = Catalogue::load(Path::new(&config.runbooks)).map_err(|e| anyhow!("invalid runbooks:\n{e}"))?;
    let store = store(config).await?;
    let health = Arc::new(Health::new());
    let (_trigger, shutdown) = shutdown::channel();
    let executor = build_executor(config, &health, &shutdown).await?;
    let publisher = crate::approval::Publisher::new(&config.kafka).map_err(|e| anyhow!(e))?;
    let engine = Engine::new(
        Arc::new(catalogue),
        store,
        executor,
        Arc::new(SystemClock),
        Settings::from(config),
        Metrics::new(),
        EventIds::Random,
    );
    let handled = engine
        .execute_manual(runbook, service, context, dry_run, operator)
        .await?;
    publisher
        .publish(&handled.outcomes, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow!("audit: {e}"))?;
    Ok(handled.outcomes)
}

/// `remediator promote` of `runbook` of `catalogue` (the configured one, loaded by the caller),
/// which has a rollout policy: one stage right if its evidence allows, audited on the outcomes
/// topic. `Ok(Err(_))`: refused, nothing changed.
pub async fn promote_rollout(
    config: &Config,
    catalogue: Catalogue,
    runbook: &str,
    by: &str,
) -> Result<Result<crate::outcome::Outcome, crate::rollout::PromoteRefusal>> {
    let rb = catalogue
        .get(runbook)
        .cloned()
        .ok_or_else(|| anyhow!("no runbook {runbook:?} in {}", config.runbooks))?;
    // The engine writes the outcome (ids, times, worker) as every other; a promotion runs no
    // action, so no executor is needed: the simulated one stands in.
    let engine = Engine::new(
        Arc::new(catalogue),
        store(config).await?,
        Arc::new(crate::executor::simulated::SimulatedExecutor::new()),
        Arc::new(SystemClock),
        Settings::from(config),
        Metrics::new(),
        EventIds::Random,
    );
    let outcome = match engine.promote_rollout(&rb, by).await.map_err(|e| anyhow!("{e}"))? {
        Ok(o) => o,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let publisher = crate::approval::Publisher::new(&config.kafka).map_err(|e| anyhow!(e))?;
    publisher
        .publish(std::slice::from_ref(&outcome), Duration::from_secs(30))
        .await
        .map_err(|e| anyhow!("{runbook}: promoted, but its outcome was not published to the audit topic: {e}"))?;
    Ok(Ok(outcome))
}

/// `remediator runbooks`: each runbook's mode, demotion, verified success rate and circuit.
pub async fn runbooks_report(config: &Config) -> Result<String> {
    use std::fmt::Write;
    let catalogue = Catalogue::load(Path::new(&config.runbooks)).map_err(|e| anyhow!("invalid runbooks:\n{e}"))?;
    let store = store(config).await?;
    let statuses = crate::console::runbook_statuses(&catalogue, store.as_ref())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut out = format!(
        "{:<22} {:<6} {:<9} {:<11} {:<9} {:>8} {:>10}  {}\n",
        "RUNBOOK", "RISK", "MODE", "STAGE", "CIRCUIT", "SUCCESS", "EXECUTIONS", "TRUST / ROLLOUT"
    );
    for s in statuses {
        let mode = match (&s.demoted, s.mode) {
            _ if s.rollout.is_some() => s.effective_mode.as_str(),
            (Some(_), crate::outcome::Mode::Auto) => "approval*",
            (_, m) => m.as_str(),
        };
        let success = s
            .success_rate
            .map_or_else(|| "-".to_string(), |r| format!("{:.0}%", r * 100.0));
        let mut policy = match &s.demoted {
            Some(why) => format!("DEMOTED from auto: {why} (remediator promote {})", s.id),
            None => s.policy,
        };
        if let Some(why) = &s.irreversible_override {
            let _ = write!(policy, "; OVERRIDE auto without rollback: {why}");
        }
        let stage = match &s.rollout {
            Some(r) => {
                policy = format!(
                    "rollout {}/{} verified successes; next: {}",
                    r.evidence, r.needed, r.needs
                );
                r.describe.clone()
            }
            None => "-".to_string(),
        };
        let risk = format!("{:?}", s.risk).to_uppercase();
        let _ = writeln!(
            out,
            "{:<22} {:<6} {:<9} {:<11} {:<9} {:>8} {:>10}  {policy}",
            s.id,
            risk,
            mode,
            stage,
            s.circuit.as_str(),
            success,
            format!("{}/{}", s.executions, s.window)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(executor: &str) -> Config {
        Config {
            executor: ExecutorKind::try_from(executor.to_string()).expect("an executor kind"),
            ..Config::default()
        }
    }

    /// The shipped catalogues fit the default grace, so a default worker starts.
    #[test]
    fn the_shipped_catalogues_fit_the_default_grace() {
        for (name, yaml) in [
            ("config/runbooks.yaml", include_str!("../config/runbooks.yaml")),
            (
                "tests/data/seed-runbooks.yaml",
                include_str!("../tests/data/seed-runbooks.yaml"),
            ),
        ] {
            let catalogue = Catalogue::from_yaml(yaml, name).expect("catalogue loads");
            let c = config("kubernetes");
            check_grace(&catalogue, &c).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Far beyond the 30 s the drain used to allow.
            let longest = catalogue.runbooks().iter().map(|rb| execution_bound(rb, &c)).max();
            assert!(
                longest.unwrap_or_default() > Duration::from_secs(240),
                "{name}: {longest:?}"
            );
        }
    }

    /// An execution that could outlast the grace is refused at start, naming the runbook and the
    /// setting; the bound adds up every check's ceiling, the action and the rollback.
    #[test]
    fn a_runbook_longer_than_the_grace_is_refused() {
        let yaml = r#"
runbooks:
  slow-restart:
    risk: MEDIUM
    triggers: [slow]
    min_confidence: 0.8
    pre_checks: [deployment_exists]
    action: {kind: rollout_restart, namespace: "{namespace}", deployment: "{deployment}"}
    post_checks:
      - {name: deployment_rolled_out, timeout_seconds: 900}
    rollback: {kind: rollout_undo, namespace: "{namespace}", deployment: "{deployment}"}
    rollback_checks:
      - {name: deployment_rolled_out, timeout_seconds: 100}
"#;
        let catalogue = Catalogue::from_yaml(yaml, "slow").expect("catalogue loads");
        let rb = &catalogue.runbooks()[0];
        let mut c = config("kubernetes");
        // 3 checks with 2 x 10 s of API slack each, 900 s + 100 s of waiting, 2 actions of 4 x 10 s.
        assert_eq!(
            execution_bound(rb, &c),
            Duration::from_secs(3 * 20 + 900 + 100 + 2 * 40)
        );
        let e = check_grace(&catalogue, &c).expect_err("1140 s > 600 s");
        assert!(
            e.contains("shutdown.grace") && e.contains("slow-restart") && e.contains("1140"),
            "{e}"
        );
        c.shutdown.grace = Duration::from_secs(1140);
        assert!(check_grace(&catalogue, &c).is_ok(), "the edge fits");
        c.shutdown.grace = Duration::from_secs(1139);
        assert!(check_grace(&catalogue, &c).is_err(), "one second short does not");

        let mut sim = config("simulated");
        sim.simulated.action_delay = Duration::from_secs(400);
        assert_eq!(
            execution_bound(rb, &sim),
            Duration::from_secs(800),
            "action and rollback"
        );
        assert!(check_grace(&catalogue, &sim).is_err());
    }
}
