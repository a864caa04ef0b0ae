#!/usr/bin/env bash
# test.sh - THE single command that runs the whole test suite (locally and in CI via .ci/run).
#
#   scripts/test.sh [ARGS...]      ARGS are passed to `cargo nextest run`, e.g.
#   scripts/test.sh -E 'binary(kafka_pipeline)'      one test file
#   scripts/test.sh redelivered --no-capture           tests whose name contains "redelivered"
#
# Steps (each timed):
#   1. build prerequisites: C toolchain for rdkafka's bundled librdkafka (apt, only what is missing)
#   2. scripts/services.sh install   Redis, kcat, Java 17, Kafka jars (cached in ~/.cache/remediator)
#   3. scripts/services.sh start     Redis + Kafka on loopback; stopped again on exit (also on failure
#                                    or Ctrl-C) unless they were already running before this script
#      scripts/redis-ha.sh start cluster   a 3-primary Redis Cluster (ports 17000-17002, ~2 s) for
#                                    tests/guardrails_redis_cluster.rs, same stop rule (the Sentinel
#                                    tests start and stop private Sentinel set-ups themselves)
#   4. promtool (apt: Debian's `prometheus` package, only when missing) and scripts/helm.sh install
#      (helm built once from the Go module proxy, cached in ~/.cache/remediator/helm): for
#      tests/observability_assets.rs and tests/helm.rs
#      chromium + chromedriver (apt: Debian's `chromium` and `chromium-driver`, only when missing): the
#      real browser of tests/console.rs
#   5. cargo-nextest (built once from crates.io into ~/.cache/remediator/cargo-nextest-<version>)
#   6. cargo-deny (built once from crates.io by scripts/cargo-tool.sh into ~/.cache/remediator/cargo-deny-<version>)
#   7. cargo fmt --all -- --check
#   8. cargo deny check licenses bans sources   (deny.toml; the advisories check needs network: README)
#   9. cargo clippy --all-targets -- -D warnings
#  10. cargo nextest run --profile ci (every test in its own process, bounded by the slow-timeouts
#      of .config/nextest.toml: a hung test is terminated and named, never waited for)
# Tests see REDIS_URL, REDIS_CLUSTER_URL, KAFKA_BOOTSTRAP and REMEDIATOR_TEST_REQUIRE_SERVICES=1 (a missing service is a
# test failure, not a skip). Service knobs (ports, cache, run dir) are documented in scripts/services.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SERVICES=scripts/services.sh
T_START=$SECONDS
TIMINGS=()

log() { echo "[test] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# step NAME CMD...: run CMD with its elapsed time recorded; a failure ends the script (set -e), and
# cleanup() then records the failed step.
CUR_STEP='' CUR_T0=0
step() {
  CUR_STEP=$1 CUR_T0=$SECONDS; shift
  log "=== $CUR_STEP"
  "$@"
  TIMINGS+=("$(printf '%-44s %5s s' "$CUR_STEP" $((SECONDS - CUR_T0)))")
  log "=== $CUR_STEP: ok, $((SECONDS - CUR_T0)) s"
  CUR_STEP=''
}

# --- cleanup: stop the services this run started; print the timing summary -----------------------
STARTED_SERVICES=0 STARTED_K8S=0 STARTED_CLUSTER=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CUR_STEP" ]; then
    TIMINGS+=("$(printf '%-44s %5s s  FAILED (exit %s)' "$CUR_STEP" $((SECONDS - CUR_T0)) "$rc")")
  fi
  if [ "$STARTED_SERVICES" = 1 ]; then
    bash "$SERVICES" stop || log "WARNING: stopping services failed"
  fi
  if [ "$STARTED_CLUSTER" = 1 ]; then
    bash scripts/redis-ha.sh stop cluster || log "WARNING: stopping the Redis Cluster failed"
  fi
  if [ "$STARTED_K8S" = 1 ]; then
    bash "$K8S" stop || log "WARNING: stopping the Kubernetes control plane failed"
  fi
  if [ ${#TIMINGS[@]} -gt 0 ]; then
    log "--- timings"
    printf '[test]   %s\n' "${TIMINGS[@]}" >&2
  fi
  log "total $((SECONDS - T_START)) s: $([ $rc -eq 0 ] && echo PASSED || echo "FAILED (exit $rc)")"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Rust toolchain ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found (install Rust via rustup)"
for comp in rustfmt:fmt clippy:clippy; do   # rustup component : cargo subcommand
  if ! cargo "${comp#*:}" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || die "cargo ${comp#*:} missing and no rustup to add ${comp%%:*}"
    rustup component add "${comp%%:*}"
  fi
done

# --- system build prerequisites -------------------------------------------------------------------
# rdkafka (default features) compiles its bundled librdkafka with librdkafka's own configure script
# + make, and libz-sys links zlib (found via pkg-config). Installed only when dpkg reports them missing;
# apt-get runs through sudo when not root.
build_prereqs() {
  local missing=() p
  for p in build-essential pkg-config zlib1g-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "build prerequisites present"; return 0; fi
  local sudo=()
  if [ "$EUID" -ne 0 ] && command -v sudo >/dev/null; then sudo=(sudo); fi
  log "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

start_services() {
  local out line
  if bash "$SERVICES" status; then
    log "services already running: using them and leaving them running"
  else
    STARTED_SERVICES=1   # set before start, so a half-started set is stopped too
  fi
  out=$(bash "$SERVICES" start)
  while IFS= read -r line; do
    [[ $line =~ ^[A-Z_]+=.+$ ]] || die "unexpected output from services.sh start: $line"
    export "${line?}"; log "$line"
  done <<<"$out"
  export REMEDIATOR_TEST_REQUIRE_SERVICES=1
}

start_cluster() {
  local out
  if bash scripts/redis-ha.sh status cluster; then
    log "Redis Cluster already running: using it and leaving it running"
  else
    STARTED_CLUSTER=1
  fi
  out=$(bash scripts/redis-ha.sh start cluster)
  [[ $out =~ ^REDIS_CLUSTER_URL=.+$ ]] || die "unexpected output from redis-ha.sh: $out"
  export "${out?}"; log "$out"
}

step "build prerequisites (apt)" build_prereqs
step "services.sh install" bash "$SERVICES" install
step "services.sh start" start_services
step "redis-ha.sh start cluster" start_cluster

# --- hook: Kubernetes control plane ---------------------------------------------------------------
# scripts/k8s.sh: etcd + kube-apiserver + controller-manager + scheduler + kwok on loopback (port base
# K8S_PORT_BASE, 26400). install is instant once built (a cold build from the Go module proxy takes
# ~6.5 min on 2 cores); start takes ~3-4 s and is a fresh cluster unless one is already running, which
# is then used and left running (as services are). Tests see KUBECONFIG (admin, system:masters),
# KUBECACHEDIR and REMEDIATOR_KUBECTL (the matching kubectl, for debugging and fault injection).
K8S=scripts/k8s.sh
start_k8s() {
  local out line
  if bash "$K8S" status; then
    log "Kubernetes control plane already running: using it and leaving it running"
  else
    STARTED_K8S=1   # set before start, so a half-started control plane is stopped too
  fi
  out=$(bash "$K8S" start)
  out+=$'\n'$(bash "$K8S" env | grep -v '^KUBECONFIG=')
  while IFS= read -r line; do
    [[ $line =~ ^[A-Z_]+=.+$ ]] || die "unexpected output from k8s.sh: $line"
    export "${line?}"; log "$line"
  done <<<"$out"
}

step "k8s.sh install" bash "$K8S" install
step "k8s.sh start" start_k8s

# --- hook: deploy asset tools (promtool, helm) -----------------------------------------------------
# promtool checks and unit-tests deploy/prometheus/*.yml; it ships in Debian's `prometheus` package
# (the package's service is not started where policy-rc.d forbids it, and is not needed). helm renders
# and lints deploy/helm/remediator; a cold build takes ~3 min on 2 cores, later runs are instant.
promtool_prereq() {
  if command -v promtool >/dev/null; then log "promtool present"; return 0; fi
  local sudo=()
  if [ "$EUID" -ne 0 ] && command -v sudo >/dev/null; then sudo=(sudo); fi
  log "apt-get install prometheus (for promtool)"
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus >&2
}

step "promtool (apt)" promtool_prereq

# --- hook: a real browser ---------------------------------------------------------------------------
# tests/console.rs drives the approvals console in headless Chromium through ChromeDriver (Debian's
# `chromium` and `chromium-driver`, ~20 s to install; only when missing).
browser_prereq() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then log "chromium and chromedriver present"; return 0; fi
  local sudo=()
  if [ "$EUID" -ne 0 ] && command -v sudo >/dev/null; then sudo=(sudo); fi
  log "apt-get install chromium chromium-driver (for tests/console.rs)"
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
}
step "chromium + chromedriver (apt)" browser_prereq
step "helm.sh install" bash scripts/helm.sh install

# --- hook: cargo-nextest ------------------------------------------------------------------------
# The test runner: one process per test, each with a time bound (.config/nextest.toml), so a
# regression that hangs is a named failure within minutes. Built once from crates.io (~5 min cold on
# 2 cores; --locked: the versions its release was tested with), then reused.
NEXTEST_VERSION=0.9.151
nextest_install() { NEXTEST_BIN=$(bash scripts/cargo-tool.sh cargo-nextest "$NEXTEST_VERSION"); }
step "cargo-nextest install" nextest_install
export PATH="$NEXTEST_BIN:$PATH"

# --- hook: cargo-deny -------------------------------------------------------------------------
# The dependency policy of deny.toml: licences, bans (wildcards, duplicate majors), sources. 0.20.2
# builds with rustc >= 1.88 (its rust-version); a cold build takes many minutes on 2 cores (42 min
# at one job under a busy machine), later runs are instant.
DENY_VERSION=0.20.2
deny_install() { DENY_BIN=$(bash scripts/cargo-tool.sh cargo-deny "$DENY_VERSION"); }
step "cargo-deny install" deny_install
export PATH="$DENY_BIN:$PATH"

step "cargo fmt --check" cargo fmt --all -- --check
# Offline checks only: `advisories` fetches the RustSec database (README "Testing").
step "cargo deny check licenses bans sources" \
  cargo deny --locked check --hide-inclusion-graph licenses bans sources
step "cargo clippy -D warnings" cargo clippy --all-targets -- -D warnings
# Benches are built (and linted) by clippy above; `cargo bench` runs them (scripts/bench).
step "cargo nextest run --profile ci${*:+ $*}" cargo nextest run --profile ci --workspace --lib --bins --tests "$@"
