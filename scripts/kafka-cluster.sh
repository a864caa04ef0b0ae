#!/usr/bin/env bash
# kafka-cluster.sh - a replicated Apache Kafka (KRaft) cluster of 3 nodes on loopback, no Docker: for
# the failover tests (tests/kafka_failover.rs) and by hand. Same Kafka 4.3.1 jars, Java options and
# process checks as scripts/services.sh (run `scripts/services.sh install` first, or `install` here).
#
# Each node is a combined broker + controller; the 3 controllers form a static quorum
# (controller.quorum.voters), so any one node may die and the cluster keeps a controller and, for
# topics created with replication factor 3 and min.insync.replicas=2 (the defaults here), accepts
# acks=all writes. unclean.leader.election.enable=false: a leader is only ever an in-sync replica.
#
# Commands:
#   install        scripts/services.sh install (apt packages, Java, Kafka jars in $REMEDIATOR_CACHE)
#   start          start the nodes not running, wait until all 3 brokers are registered and
#                  answer, print on stdout:  KAFKA_CLUSTER_BOOTSTRAP=host:port,host:port,host:port
#                  Usage in a shell:  out=$(scripts/kafka-cluster.sh start) && export $out
#   stop           stop every node (TERM, KILL after 30 s); data is kept for the next start
#   clean          stop + delete the run dir
#   env            print the same line as start, without starting anything
#   status         exit 0 if all 3 nodes run and the cluster reports 3 brokers
#   start-node N   start node N (1..3) again on its data dir and wait until the cluster has it back
#   stop-node N    stop node N cleanly (TERM: controlled shutdown, leadership moves first)
#   kill-node N    kill node N (KILL: a crash; the controller fences it after broker.session.timeout.ms)
#   pause-node N / resume-node N   SIGSTOP / SIGCONT node N (a hung broker, open connections)
#   pid N          print node N's pid (empty and exit 1 when it is not running)
# Env knobs (defaults in brackets):
#   KAFKA_CLUSTER_PORT_BASE [19300]: node N listens on BASE+2(N-1) (clients) and BASE+2(N-1)+1
#     (controller); 19300-19305 by default, clear of services.sh (16379, 19092-19093) and k8s.sh
#   REMEDIATOR_CACHE [~/.cache/remediator]  REMEDIATOR_RUN [/tmp/remediator-kafka-cluster-<BASE>]
#   KAFKA_HEAP ["-Xms96m -Xmx320m"] per node  JAVA [java; 17+, else /usr/lib/jvm/java-17-openjdk-*]
#   KAFKA_CLUSTER_SESSION_MS [3000]: broker.session.timeout.ms (how soon a crashed broker is fenced
#     and its partitions get new leaders; Kafka's default is 9000)
# Progress and errors go to stderr; stdout carries only the env line (and `pid`'s answer).
set -euo pipefail

KAFKA_VERSION=4.3.1
NODES=3
CACHE=${REMEDIATOR_CACHE:-$HOME/.cache/remediator}
LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
HOST=127.0.0.1             # loopback only
BASE=${KAFKA_CLUSTER_PORT_BASE:-19300}
RUN=${REMEDIATOR_RUN:-/tmp/remediator-kafka-cluster-$BASE}
SESSION_MS=${KAFKA_CLUSTER_SESSION_MS:-3000}
read -ra KAFKA_HEAP <<<"${KAFKA_HEAP:--Xms96m -Xmx320m}"
CLUSTER_ID=UmVtZWRpYXRvckNsdXN0ZQ   # fixed: a run dir is always formatted for the same cluster
JVM_OPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)
SERVICES=$(dirname "${BASH_SOURCE[0]}")/services.sh

log() { echo "[kafka-cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
broker_port() { echo $((BASE + 2 * ($1 - 1))); }
controller_port() { echo $((BASE + 2 * ($1 - 1) + 1)); }
bootstrap() {
  local n out=()
  for ((n = 1; n <= NODES; n++)); do out+=("$HOST:$(broker_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}
env_line() { echo "KAFKA_CLUSTER_BOOTSTRAP=$(bootstrap)"; }

# Process state from /proc, as in services.sh: a zombie is not alive, and a recycled pid from a stale
# pidfile is not ours unless its command line still names our config.
exited() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1); [ -z "$s" ] || [ "$s" = Z ]; }
alive() {
  local pid; [ -s "$1" ] || return 1; pid=$(cat "$1")
  ! exited "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}
node_dir() { echo "$RUN/node$1"; }
node_pidfile() { echo "$(node_dir "$1")/kafka.pid"; }
node_alive() { alive "$(node_pidfile "$1")" "$(node_dir "$1")/server.properties"; }

java_major() { "$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -1; }
find_java() {
  local j v
  for j in "${JAVA:-java}" /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    command -v "$j" >/dev/null 2>&1 || continue
    v=$(java_major "$j"); [ -n "$v" ] && [ "$v" -ge 17 ] && { JAVA=$j; return 0; }
  done
  return 1
}

# Brokers the cluster reports (kcat metadata from any node that answers).
registered() { kcat -b "$(bootstrap)" -L -m 2 2>/dev/null | sed -n 's/^ *\([0-9]*\) brokers:$/\1/p' | head -1; }

voters() {
  local n out=()
  for ((n = 1; n <= NODES; n++)); do out+=("$n@$HOST:$(controller_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

write_config() {   # write_config N
  local n=$1 d; d=$(node_dir "$n")
  mkdir -p "$d/logs"
  cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://$HOST:$(broker_port "$n"),CONTROLLER://$HOST:$(controller_port "$n")
advertised.listeners=PLAINTEXT://$HOST:$(broker_port "$n")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data
num.partitions=1
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
# A crashed broker is fenced (its partitions re-led) after this; heartbeats well inside it.
broker.session.timeout.ms=$SESSION_MS
broker.heartbeat.interval.ms=500
# A restarted follower that caught up rejoins the ISR quickly; a stuck one leaves it after 10 s.
replica.lag.time.max.ms=10000
replica.fetch.wait.max.ms=200
# Leadership goes back to the preferred replica soon after a restart (spreads leaders again).
leader.imbalance.check.interval.seconds=10
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
log.cleaner.dedupe.buffer.size=16777216
EOF
  cat >"$d/log4j2.properties" <<EOF
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $d/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
EOF
}

launch() {   # launch N: format (first time) and start node N in the background
  local n=$1 d p; d=$(node_dir "$n")
  node_alive "$n" && return 0
  for p in $(broker_port "$n") $(controller_port "$n"); do
    port_open "$p" && die "port $p already in use (set KAFKA_CLUSTER_PORT_BASE)"
  done
  write_config "$n"
  if [ ! -f "$d/data/meta.properties" ]; then
    "$JAVA" -Xmx256m "${JVM_OPTS[@]}" "-Dlog4j2.configurationFile=$d/log4j2.properties" -cp "$LIBS/*" \
      kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$d/server.properties" \
      >"$d/logs/format.log" 2>&1 || { cat "$d/logs/format.log" >&2; die "node $n: storage format failed"; }
  fi
  nohup "$JAVA" "${KAFKA_HEAP[@]}" "${JVM_OPTS[@]}" "-Dlog4j2.configurationFile=$d/log4j2.properties" \
    "-Dkafka.logs.dir=$d/logs" -cp "$LIBS/*" kafka.Kafka "$d/server.properties" \
    >"$d/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$(node_pidfile "$n")"
}

wait_ready() {   # wait_ready N...: every node answers metadata itself, and the cluster has 3 brokers
  local t0=$SECONDS n ok
  while :; do
    ok=1
    for n in "$@"; do
      node_alive "$n" || { tail -20 "$(node_dir "$n")/logs/stdout.log" "$(node_dir "$n")/logs/server.log" >&2 || true
                           die "node $n exited"; }
      kcat -b "$HOST:$(broker_port "$n")" -L -m 1 >/dev/null 2>&1 || ok=0
    done
    [ "$ok" = 1 ] && [ "$(registered)" = "$NODES" ] && break
    [ $((SECONDS - t0)) -lt 120 ] || die "cluster not ready after 120 s (nodes $*); see $RUN/node*/logs"
    sleep 0.2
  done
}

check_start() {
  [ -f "$LIBS/.complete" ] || die "Kafka jars missing in $LIBS: run '$0 install' (or scripts/services.sh install)"
  find_java || die "no Java 17+ found: run '$0 install' or set JAVA"
  command -v kcat >/dev/null || die "kcat missing: run '$0 install'"
  local n running=0
  for ((n = 1; n <= NODES; n++)); do node_alive "$n" && running=1; done
  if [ "$running" = 1 ] && [ "$(cat "$RUN/ports" 2>/dev/null)" != "$BASE" ]; then
    die "$RUN already runs port base '$(cat "$RUN/ports" 2>/dev/null)'; stop it or set another REMEDIATOR_RUN"
  fi
  mkdir -p "$RUN"; echo "$BASE" >"$RUN/ports"
}

start_all() {
  local n t0=$SECONDS
  check_start
  for ((n = 1; n <= NODES; n++)); do launch "$n"; done
  wait_ready $(seq "$NODES")
  log "cluster of $NODES ready on $(bootstrap) after $((SECONDS - t0)) s"
}

stop_node() {   # stop_node N SIGNAL: signal node N and wait until it is gone (KILL after 30 s)
  local n=$1 sig=$2 f pid i; f=$(node_pidfile "$n")
  if ! node_alive "$n"; then rm -f "$f"; return 0; fi
  pid=$(cat "$f"); kill -CONT "$pid" 2>/dev/null || true; kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do exited "$pid" && break; sleep 0.1; done
  if ! exited "$pid"; then log "node $n ignored $sig, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$f"; log "node $n stopped ($sig, pid $pid)"
}

stop_all() {   # TERM all at once (controlled shutdowns in parallel), then wait for each
  local n pids=()
  for ((n = 1; n <= NODES; n++)); do stop_node "$n" TERM & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || true; done
}

node_arg() {
  [[ ${1:-} =~ ^[1-9]$ ]] && [ "$1" -le "$NODES" ] || die "node must be 1..$NODES, got '${1:-}'"
}

signal_node() {   # signal_node N SIG (no wait)
  local f; f=$(node_pidfile "$1")
  node_alive "$1" || die "node $1 is not running"
  kill "-$2" "$(cat "$f")"
}

case "${1:-}" in
  install)      bash "$SERVICES" install ;;
  start)        start_all; env_line ;;
  stop)         stop_all ;;
  clean)        stop_all; rm -rf "$RUN"; log "removed $RUN" ;;
  env)          env_line ;;
  status)       for ((n = 1; n <= NODES; n++)); do node_alive "$n" || exit 1; done
                [ "$(registered)" = "$NODES" ] ;;
  start-node)   node_arg "${2:-}"; check_start; t0=$SECONDS; launch "$2"; wait_ready "$2"
                log "node $2 back after $((SECONDS - t0)) s" ;;
  stop-node)    node_arg "${2:-}"; stop_node "$2" TERM ;;
  kill-node)    node_arg "${2:-}"; stop_node "$2" KILL ;;
  pause-node)   node_arg "${2:-}"; signal_node "$2" STOP ;;
  resume-node)  node_arg "${2:-}"; signal_node "$2" CONT ;;
  pid)          node_arg "${2:-}"; node_alive "$2" || exit 1; cat "$(node_pidfile "$2")" ;;
  *)            echo "usage: $0 install|start|stop|clean|env|status|start-node N|stop-node N|kill-node N|pause-node N|resume-node N|pid N" >&2
                exit 2 ;;
esac
