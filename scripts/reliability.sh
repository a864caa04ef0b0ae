#!/usr/bin/env bash
# reliability.sh - prove the promises: the reliability suite (tests/reliability.rs, plus the Sentinel
# failover scenarios of tests/redis_failover.rs, which start their own Redis set-up, and the
# replicated-Kafka scenarios of tests/kafka_failover.rs, which start their own 3-node cluster with
# scripts/kafka-cluster.sh on free ports) and the fuzzers.
#
#   scripts/reliability.sh [reduced]  the suite with the parameters `cargo test` uses (a few hundred
#                                     incidents, 3 kills, ...), against scripts/services.sh's Redis and
#                                     Kafka (started if not running, and then stopped again)
#   scripts/reliability.sh heavy      release build, REMEDIATOR_RELIABILITY=heavy (thousands of
#                                     incidents, 12 kills, 24 membership changes, 3 broker restarts,
#                                     ...), one test at a time, against its OWN Redis and Kafka on
#                                     separate ports (REMEDIATOR_RUN=/tmp/remediator-reliability,
#                                     REDIS_PORT=29379, KAFKA_PORT=29092), stopped again on exit, so
#                                     other test runs on the machine are not disturbed
#   scripts/reliability.sh fuzz       the cargo-fuzz targets in fuzz/ (incident parsing, runbook
#                                     loading), FUZZ_SECONDS (60) each; installs the nightly toolchain
#                                     (rustup) and cargo-fuzz (cargo install, cached in ~/.cargo/bin)
#                                     when missing; seeds the corpus from tests/data and config/
#
# The suite and fuzz modes end with a summary table; the exit status is non-zero if any test
# failed, any violation was found or any fuzzer crashed. Knobs: REMEDIATOR_RELIABILITY_SEED (kill
# timing, reported by the kill test), FUZZ_SECONDS, RELIABILITY_REDIS_PORT, RELIABILITY_KAFKA_PORT.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODE=${1:-reduced}
SERVICES=scripts/services.sh
log() { echo "[reliability] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found (install Rust via rustup)"

# --- summary of the figures every test writes (tests/common/reliability.rs, Figures) -------------
summary() {   # summary FILE
  [ -s "$1" ] || { log "no figures recorded"; return; }
  echo
  printf '%-24s %-7s %9s %5s %8s %10s %10s %6s  %s\n' \
    test mode incidents kills restarts executions violations secs "other figures"
  printf '%.0s-' {1..120}; echo
  awk -F'\t' '{
    delete f; other = ""
    for (i = 2; i <= NF; i++) {
      split($i, kv, "="); k = kv[1]; v = substr($i, length(k) + 2); f[k] = v
      if (k !~ /^(mode|incidents|cases|kills|restarts|executions|violations|secs)$/) other = other " " $i
    }
    n = ("incidents" in f) ? f["incidents"] : (("cases" in f) ? f["cases"] " cases" : "-")
    printf "%-24s %-7s %9s %5s %8s %10s %10s %6s %s\n", $1, f["mode"], n,
      ("kills" in f) ? f["kills"] : "-", ("restarts" in f) ? f["restarts"] : "-",
      ("executions" in f) ? f["executions"] : "-", f["violations"], f["secs"], other
  }' "$1"
  echo
}

# --- the suite ----------------------------------------------------------------------------------
STARTED=0 SVC_ENV=() STOP=stop
stop_services() {
  if [ "$STARTED" = 1 ]; then
    env "${SVC_ENV[@]}" bash "$SERVICES" "$STOP" || log "WARNING: stopping services failed"
  fi
}

start_services() {   # start_services [VAR=value...]: services.sh start with those knobs; exports its env lines
  SVC_ENV=("$@")
  local out line
  env "${SVC_ENV[@]}" bash "$SERVICES" install
  if env "${SVC_ENV[@]}" bash "$SERVICES" status; then
    log "services already running: using them and leaving them running"
  else
    STARTED=1
  fi
  out=$(env "${SVC_ENV[@]}" bash "$SERVICES" start)
  while IFS= read -r line; do
    [[ $line =~ ^[A-Z_]+=.+$ ]] || die "unexpected output from services.sh start: $line"
    export "${line?}"; log "$line"
  done <<<"$out"
  export REMEDIATOR_TEST_REQUIRE_SERVICES=1
}

run_suite() {   # run_suite CARGO_TEST_ARGS...
  local figures rc=0 t0=$SECONDS
  figures=$(mktemp /tmp/reliability-figures.XXXXXX)
  export REMEDIATOR_RELIABILITY_FIGURES=$figures
  log "cargo test $*"
  cargo test "$@" || rc=$?
  summary "$figures"
  local bad
  bad=$(awk -F'\t' '{for (i = 2; i <= NF; i++) if ($i ~ /^violations=/ && $i != "violations=0") n++} END {print n + 0}' "$figures")
  log "$(wc -l <"$figures") scenarios, $bad with violations, $((SECONDS - t0)) s: $([ $rc -eq 0 ] && [ "$bad" = 0 ] && echo PASSED || echo FAILED)"
  rm -f "$figures"
  [ $rc -eq 0 ] && [ "$bad" = 0 ]
}

# --- fuzzing ------------------------------------------------------------------------------------
FUZZ_TARGETS="incident_parse runbook_from_yaml"
run_fuzz() {
  local secs=${FUZZ_SECONDS:-60} t out runs crashes failed=0 rows=()
  command -v rustup >/dev/null || die "rustup is needed to install the nightly toolchain cargo-fuzz uses"
  if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain (cargo-fuzz needs -Z sanitizer flags)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (cached in ~/.cargo/bin)"
    cargo install cargo-fuzz --locked
  fi
  # Seed corpora: the hostile incidents and the shipped/seed/malformed runbook files.
  mkdir -p fuzz/corpus/incident_parse fuzz/corpus/runbook_from_yaml
  cp tests/data/hostile/*.json fuzz/corpus/incident_parse/
  local i=0 line
  while IFS= read -r line; do
    i=$((i + 1)); printf '%s' "$line" >"fuzz/corpus/incident_parse/seed-$i.json"
  done <tests/data/seed-incidents.jsonl
  cp tests/data/seed-runbooks.yaml config/runbooks.yaml tests/data/hostile/runbooks/*.yaml \
    fuzz/corpus/runbook_from_yaml/
  for t in $FUZZ_TARGETS; do
    log "fuzzing $t for $secs s"
    rm -rf "fuzz/artifacts/$t"
    out=$(mktemp /tmp/reliability-fuzz.XXXXXX)
    # -timeout: an input taking 10 s is a hang; -rss_limit_mb: an alias bomb must not eat memory.
    if cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$out" 2>&1; then :; else failed=1; fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
    crashes=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
    [ "$crashes" = 0 ] || failed=1
    rows+=("$(printf '%-20s %8s s %12s runs %4s crashes/timeouts/ooms  %s' "$t" "$secs" "${runs:-?}" "$crashes" \
      "corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs")")
    if [ "$crashes" != 0 ] || [ -z "$runs" ]; then
      grep -A4 'panicked at' "$out" >&2 || true
      tail -30 "$out" >&2
    fi
    rm -f "$out"
  done
  echo; printf '%s\n' "${rows[@]}"; echo
  [ "$failed" = 0 ] || { log "fuzzing FAILED (artifacts in fuzz/artifacts/)"; return 1; }
  log "fuzzing PASSED: no crash"
}

case "$MODE" in
  reduced)
    trap stop_services EXIT
    start_services
    run_suite --test reliability --test redis_failover --test kafka_failover
    ;;
  heavy)
    trap stop_services EXIT
    STOP=clean   # its own run directory: remove the broker's data too
    start_services REMEDIATOR_RUN=/tmp/remediator-reliability \
      REDIS_PORT="${RELIABILITY_REDIS_PORT:-29379}" KAFKA_PORT="${RELIABILITY_KAFKA_PORT:-29092}"
    export REMEDIATOR_RELIABILITY=heavy
    run_suite --release --test reliability --test redis_failover --test kafka_failover -- --test-threads=1
    ;;
  fuzz) run_fuzz ;;
  *) echo "usage: $0 [reduced|heavy|fuzz]" >&2; exit 2 ;;
esac
