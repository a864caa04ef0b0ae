//! `docker-compose.yml` and the `Dockerfile`, checked as files (no Docker engine runs in CI): the
//! services and their health checks, `depends_on` conditions that make the replicas start only on a
//! healthy broker and store with their topics created, host ports, REMEDIATOR_* variables that are
//! real config keys and load into a valid config, the topics the worker uses, the Prometheus config
//! it mounts (scraping both replicas), the Grafana files it mounts, and an image that builds the
//! binary and runs it as the non-root user of the Kubernetes manifests.

use remediator::config::Config;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const REPLICAS: [&str; 2] = ["remediator-1", "remediator-2"];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The compose file with YAML merge keys (`<<: *anchor`) applied, as Compose reads it.
fn compose() -> Value {
    // serde-saphyr applies merge keys as it parses (also inside aliased mappings).
    serde_saphyr::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn services(c: &Value) -> BTreeMap<String, Value> {
    c["services"]
        .as_object()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// `environment:` as a map (both the mapping and the `- K=V` list forms).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        Value::Array(list) => list
            .iter()
            .map(|e| {
                let e = text(e);
                let (k, v) = e.split_once('=').unwrap_or((&e, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// (service, condition) pairs of `depends_on`.
fn depends_on(service: &Value) -> BTreeMap<String, String> {
    match &service["depends_on"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v["condition"].as_str().unwrap_or("service_started").to_string(),
                )
            })
            .collect(),
        Value::Array(list) => list.iter().map(|s| (text(s), "service_started".into())).collect(),
        _ => BTreeMap::new(),
    }
}

/// Published ports as (host, container).
fn ports(service: &Value) -> Vec<(u16, u16)> {
    service["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let p = text(p);
            let parts: Vec<&str> = p.split(':').collect();
            let n = |s: &str| s.parse::<u16>().unwrap_or_else(|_| panic!("port {p:?}"));
            match parts.as_slice() {
                [host, container] => (n(host), n(container)),
                [_ip, host, container] => (n(host), n(container)),
                _ => panic!("port {p:?}: use HOST:CONTAINER"),
            }
        })
        .collect()
}

/// Bind mounts as (host path relative to the repo, container path).
fn binds(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let v = text(v);
            let mut parts = v.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            src.starts_with("./")
                .then(|| (src.trim_start_matches("./").to_string(), dst.to_string()))
        })
        .collect()
}

/// Config keys' environment variables, plus the intake's token (a secret, never a key).
fn known_variables() -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = Config::keys().into_iter().map(|(_, env)| env).collect();
    keys.insert(remediator::alertmanager::TOKEN_ENV.to_string());
    keys
}

/// The config a replica runs with: its environment over the built-in defaults (the image has no
/// config file), loaded by the binary's own loader.
fn replica_config(service: &Value) -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "{}\n").expect("write");
    Config::load(Some(&empty), &environment(service), &[]).unwrap_or_else(|e| panic!("replica config: {e}"))
}

#[test]
fn services_health_checks_and_start_order() {
    let c = compose();
    let s = services(&c);
    for want in [
        "kafka",
        "kafka-init",
        "redis",
        "remediator-1",
        "remediator-2",
        "prometheus",
        "grafana",
    ] {
        assert!(s.contains_key(want), "service {want} missing");
    }
    assert!(
        text(&s["kafka"]["image"]).starts_with("apache/kafka:4."),
        "the official Apache Kafka image"
    );
    assert!(text(&s["redis"]["image"]).starts_with("redis:7"), "Redis 7");
    assert_eq!(
        environment(&s["kafka"]).get("KAFKA_PROCESS_ROLES").map(String::as_str),
        Some("broker,controller"),
        "KRaft, no ZooKeeper"
    );

    for (name, svc) in &s {
        let one_shot = svc["restart"].as_str() == Some("no");
        if one_shot {
            assert!(
                svc["healthcheck"].is_null(),
                "{name}: a one-shot job is awaited by its exit code"
            );
        } else {
            let check = &svc["healthcheck"];
            assert!(
                check["test"].as_array().is_some_and(|t| t.len() >= 2),
                "{name}: every long-running service has a health check"
            );
            for key in ["interval", "timeout", "retries"] {
                assert!(
                    !check[key].is_null(),
                    "{name}: healthcheck.{key} (merged from x-healthcheck-timing?)"
                );
            }
        }
        for (dep, condition) in depends_on(svc) {
            let target = s.get(&dep).unwrap_or_else(|| panic!("{name} depends on unknown {dep}"));
            match condition.as_str() {
                "service_healthy" => assert!(
                    !target["healthcheck"].is_null(),
                    "{name} waits for {dep} to be healthy, which has no health check"
                ),
                "service_completed_successfully" => assert_eq!(
                    target["restart"].as_str(),
                    Some("no"),
                    "{name} waits for {dep} to exit, so {dep} must be a one-shot"
                ),
                "service_started" => {}
                other => panic!("{name}: unknown depends_on condition {other}"),
            }
        }
    }

    // The replicas start on a healthy broker and store, after the topics exist.
    for r in REPLICAS {
        let deps = depends_on(&s[r]);
        assert_eq!(deps.get("kafka").map(String::as_str), Some("service_healthy"), "{r}");
        assert_eq!(deps.get("redis").map(String::as_str), Some("service_healthy"), "{r}");
        assert_eq!(
            deps.get("kafka-init").map(String::as_str),
            Some("service_completed_successfully"),
            "{r}"
        );
        // Its health check is /readyz on its http.listen port, with a tool the image has.
        let config = replica_config(&s[r]);
        let port = config.http.listen.rsplit(':').next().expect("port");
        let test: Vec<String> = s[r]["healthcheck"]["test"]
            .as_array()
            .expect("test")
            .iter()
            .map(text)
            .collect();
        assert!(
            test.iter().any(|t| t.ends_with(&format!(":{port}/readyz"))),
            "{r}: {test:?}"
        );
        assert!(
            read("Dockerfile").contains(&test[1]),
            "{r}: the image must install {}",
            test[1]
        );
    }
    assert_eq!(
        depends_on(&s["kafka-init"]).get("kafka").map(String::as_str),
        Some("service_healthy")
    );

    // Host ports are unique; each replica publishes its metrics port.
    let mut seen = BTreeSet::new();
    for (name, svc) in &s {
        for (host, _) in ports(svc) {
            assert!(seen.insert(host), "{name}: host port {host} used twice");
        }
    }
    for r in REPLICAS {
        let container_port: u16 = replica_config(&s[r])
            .http
            .listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        assert!(
            ports(&s[r]).iter().any(|(_, c)| *c == container_port),
            "{r} publishes {container_port}"
        );
    }

    // No accidental interpolation of host variables: a shell `$` is written `$$`.
    let raw = read("docker-compose.yml");
    let code: String = raw
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !code.replace("$$", "").contains('$'),
        "a single `$` is interpolated by Compose from the host"
    );
}

#[test]
fn replicas_are_configured_with_real_keys() {
    let c = compose();
    let s = services(&c);
    let known = known_variables();
    for (name, svc) in &s {
        for var in environment(svc).keys().filter(|k| k.starts_with("REMEDIATOR_")) {
            assert!(
                known.contains(var),
                "{name}: {var} is not a config key (Config::keys())"
            );
        }
    }
    let configs: Vec<Config> = REPLICAS.iter().map(|r| replica_config(&s[*r])).collect();
    for (r, c) in REPLICAS.iter().zip(&configs) {
        // SIGTERM lets in-flight work finish within shutdown.grace; Compose must wait longer
        // before SIGKILL (30 s for the commit and flush).
        let stop = remediator::config::parse_duration(&text(&s[*r]["stop_grace_period"]))
            .unwrap_or_else(|e| panic!("{r}: stop_grace_period: {e}"));
        assert!(
            stop >= c.grace() + std::time::Duration::from_secs(30),
            "{r}: stop_grace_period {stop:?} must be at least shutdown.grace {:?} + 30 s",
            c.grace()
        );
        let token = environment(&s[*r]).get(remediator::alertmanager::TOKEN_ENV).cloned();
        remediator::alertmanager::require_token(&c.alertmanager, token.as_deref())
            .unwrap_or_else(|e| panic!("{r} would refuse to start: {e}"));
    }
    assert_ne!(
        configs[0].worker_id, configs[1].worker_id,
        "distinct replica identities"
    );
    for c in &configs {
        assert_eq!(c.kafka.group_id, configs[0].kafka.group_id, "one consumer group");
        assert_eq!(c.redis.url, configs[0].redis.url, "one guardrail store");
        assert_eq!(c.executor, "simulated", "no Kubernetes cluster in compose");
        assert!(c.alertmanager.enabled);
        // An enabled intake needs a token (or the explicit switch), else the
        // replica would refuse to start.
        assert!(
            !c.alertmanager.allow_unauthenticated,
            "compose serves the intake with a token"
        );
        // The broker address is the one Kafka advertises on the compose network, and Redis is the
        // redis service.
        let advertised = environment(&s["kafka"])["KAFKA_ADVERTISED_LISTENERS"].clone();
        assert!(
            advertised
                .split(',')
                .any(|l| l.ends_with(&format!("://{}", c.kafka.brokers))),
            "{} is not among the advertised listeners {advertised}",
            c.kafka.brokers
        );
        assert!(c.redis.url.starts_with("redis://redis:"), "{}", c.redis.url);
        // The runbooks path is the one the image ships.
        assert!(
            read("Dockerfile").contains(&format!("config/runbooks.yaml {}", c.runbooks)),
            "the image has {}",
            c.runbooks
        );
    }

    // The one-shot job creates every topic the worker uses (auto-creation is off); incidents has
    // 3 partitions so both replicas get work.
    assert_eq!(
        environment(&s["kafka"])
            .get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")
            .map(String::as_str),
        Some("false")
    );
    let script = s["kafka-init"]["command"]
        .as_array()
        .map(|c| c.iter().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| text(&s["kafka-init"]["command"]));
    assert!(
        script.contains("kafka-topics.sh") && script.contains("--create"),
        "{script}"
    );
    let k = &configs[0].kafka;
    for topic in [&k.incidents_topic, &k.outcomes_topic, &k.dlq_topic, &k.approvals_topic] {
        assert!(
            script.split_whitespace().any(|w| w.starts_with(&format!("{topic}:"))),
            "kafka-init does not create {topic}"
        );
    }
    assert!(script.contains(&format!("{}:3", k.incidents_topic)));
}

#[test]
fn prometheus_scrapes_both_replicas_and_grafana_gets_its_files() {
    let c = compose();
    let s = services(&c);
    let mounts = binds(&s["prometheus"]);
    let (dir, target) = mounts
        .iter()
        .find(|(_, dst)| dst == "/etc/prometheus")
        .expect("prometheus mounts a config directory at /etc/prometheus");
    let config: Value = serde_saphyr::from_str(&read(&format!("{dir}/prometheus.yml"))).expect("prometheus.yml");
    assert_eq!(target, "/etc/prometheus");
    let targets: BTreeSet<String> = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .filter(|j| j["job_name"] == "remediator")
        .flat_map(|j| j["static_configs"].as_array().into_iter().flatten())
        .flat_map(|sc| sc["targets"].as_array().into_iter().flatten())
        .map(text)
        .collect();
    for r in REPLICAS {
        let port = replica_config(&s[r])
            .http
            .listen
            .rsplit(':')
            .next()
            .expect("port")
            .to_string();
        assert!(
            targets.contains(&format!("{r}:{port}")),
            "job remediator does not scrape {r}:{port} ({targets:?})"
        );
    }
    for rules in config["rule_files"].as_array().expect("rule_files") {
        let f = format!("{dir}/{}", text(rules));
        assert!(repo(&f).is_file(), "rule file {f} is not in the mounted directory");
    }

    // Every bind-mounted host path exists; Grafana's datasource points at the prometheus service.
    for (name, svc) in &s {
        for (src, _) in binds(svc) {
            assert!(repo(&src).exists(), "{name} mounts ./{src}, which does not exist");
        }
    }
    let ds: Value =
        serde_saphyr::from_str(&read("deploy/grafana/provisioning/datasources/prometheus.yml")).expect("ds");
    let port = ports(&s["prometheus"])[0].1;
    assert_eq!(text(&ds["datasources"][0]["url"]), format!("http://prometheus:{port}"));
    assert!(binds(&s["grafana"])
        .iter()
        .any(|(src, _)| src == "deploy/grafana/remediator.json"));
}

#[test]
fn dockerfile_builds_the_binary_and_runs_it_unprivileged() {
    let df = read("Dockerfile");
    let froms: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: builder and runtime");
    assert!(
        froms[0].starts_with("FROM rust:1.") && froms[0].contains("-bookworm AS build"),
        "{}",
        froms[0]
    );
    assert_eq!(
        froms[1], "FROM debian:bookworm-slim",
        "runtime on the builder's Debian release"
    );
    // The builder's toolchain satisfies the crate's rust-version.
    let minor = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    let image_rust = froms[0]
        .trim_start_matches("FROM rust:")
        .split('-')
        .next()
        .unwrap_or("");
    let manifest: toml_lite::Manifest = toml_lite::parse(&read("Cargo.toml"));
    assert!(
        minor(image_rust) >= minor(&manifest.rust_version),
        "rust:{image_rust} is older than rust-version {}",
        manifest.rust_version
    );
    for pkg in ["build-essential", "pkg-config", "zlib1g-dev"] {
        assert!(
            df.contains(pkg),
            "the builder installs {pkg} (rdkafka's bundled librdkafka)"
        );
    }
    assert!(
        df.contains("cargo build --release --locked"),
        "reproducible: Cargo.lock is honoured"
    );
    // Every COPY from the build context exists.
    for line in df.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(repo(src).exists(), "Dockerfile: COPY {src}: not in the repository");
        }
    }
    // The runtime user is the one deploy/deployment.yaml and the chart run as.
    let deployment: Value = serde_saphyr::from_str(&read("deploy/deployment.yaml")).expect("deployment.yaml");
    let uid = text(&deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]);
    let gid = text(&deployment["spec"]["template"]["spec"]["securityContext"]["runAsGroup"]);
    assert!(df.lines().any(|l| l == format!("USER {uid}:{gid}")), "USER {uid}:{gid}");
    assert!(df.contains("ENTRYPOINT [\"remediator\"]") && df.contains("CMD [\"run\"]"));
    // Targets declared in Cargo.toml must have their files in the image, or cargo refuses the
    // manifest (auto-discovered tests and examples may be left out).
    let cargo_toml = read("Cargo.toml");
    for (section, dir) in [
        ("[[bench]]", "benches"),
        ("[[test]]", "tests"),
        ("[[example]]", "examples"),
    ] {
        if cargo_toml.lines().any(|l| l.trim() == section) {
            assert!(
                df.lines().any(|l| l.starts_with(&format!("COPY {dir} "))),
                "Cargo.toml declares {section}: the Dockerfile must COPY {dir}"
            );
            assert!(
                !read(".dockerignore")
                    .lines()
                    .any(|l| l.trim().trim_end_matches('/') == dir),
                ".dockerignore excludes {dir}, which a declared {section} target needs"
            );
        }
    }
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context excludes target/"
    );
    // Compose builds this Dockerfile for both replicas.
    let s = services(&compose());
    for r in REPLICAS {
        assert_eq!(text(&s[r]["build"]["dockerfile"]), "Dockerfile", "{r}");
        assert_eq!(text(&s[r]["build"]["context"]), ".", "{r}");
    }
}

/// The one Cargo.toml field these tests need, without a TOML dependency.
mod toml_lite {
    pub struct Manifest {
        pub rust_version: String,
    }

    pub fn parse(text: &str) -> Manifest {
        let rust_version = text
            .lines()
            .find_map(|l| l.strip_prefix("rust-version"))
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or("1.0")
            .to_string();
        Manifest { rust_version }
    }
}
