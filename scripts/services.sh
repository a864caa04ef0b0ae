#!/usr/bin/env bash
# services.sh - real Redis + Apache Kafka (KRaft, single node) on loopback for the test suite, no Docker.
# Debian/Ubuntu (apt). Redis 7.0.15 (Debian bookworm package), Kafka 4.3.1 jars from Maven Central, Java 17+.
#
# Commands:
#   install  apt packages (redis-server redis-tools kcat, Java 17 and maven if missing) + Kafka jars,
#            cached in $REMEDIATOR_CACHE (second run: instant). Uses sudo for apt only when not root.
#   start    start both (no-op for whatever already runs), wait until usable, create the topics,
#            print the env lines on stdout:   REDIS_URL=redis://...   KAFKA_BOOTSTRAP=host:port
#            Usage in a shell:  out=$(scripts/services.sh start) && export $out
#   stop     stop both via pidfiles (Kafka's data dir is kept and reused by the next start)
#   clean    stop + delete the run dir (Kafka data, logs)
#   env      print the same env lines as start, without starting anything
#   status   exit 0 if both services are running and answering, 1 otherwise
# Env knobs (defaults in brackets):
#   REDIS_PORT [16379]  KAFKA_PORT [19092]  KAFKA_CONTROLLER_PORT [KAFKA_PORT+1]
#   REMEDIATOR_CACHE [~/.cache/remediator]  REMEDIATOR_RUN [/tmp/remediator-services; one per port set]
#   KAFKA_HEAP ["-Xms128m -Xmx512m"]  JAVA [java; 17+, else /usr/lib/jvm/java-17-openjdk-*]
# Progress and errors go to stderr; stdout carries only the env lines.
set -euo pipefail

KAFKA_VERSION=4.3.1
LOG4J_VERSION=2.24.3       # Kafka 4.x logs via slf4j-api 1.7.36, bound by log4j-slf4j-impl (log4j2)
CACHE=${REMEDIATOR_CACHE:-$HOME/.cache/remediator}
LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
RUN=${REMEDIATOR_RUN:-/tmp/remediator-services}
HOST=127.0.0.1             # loopback only
REDIS_PORT=${REDIS_PORT:-16379}    # not 6379/9092: a system redis may own 6379
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
read -ra KAFKA_HEAP <<<"${KAFKA_HEAP:--Xms128m -Xmx512m}"
TOPICS="incidents:3 remediation-outcomes:1 incidents-dlq:1 remediation-approvals:1"   # name:partitions
JVM_OPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
          "-Dlog4j2.configurationFile=$RUN/kafka/log4j2.properties")

log() { echo "[services] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
env_lines() { printf 'REDIS_URL=redis://%s:%s\nKAFKA_BOOTSTRAP=%s:%s\n' "$HOST" "$REDIS_PORT" "$HOST" "$KAFKA_PORT"; }

# Process state from /proc: a stopped process can linger as a zombie that still answers kill -0
# (PID 1 may reap orphans late). alive PIDFILE PATTERN: running, not a zombie, and its command line
# still matches PATTERN (guards against a recycled pid from a stale pidfile).
exited() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1); [ -z "$s" ] || [ "$s" = Z ]; }
alive() {
  local pid; [ -s "$1" ] || return 1; pid=$(cat "$1")
  ! exited "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}
redis_alive() { alive "$RUN/redis/redis.pid" redis-server; }
kafka_alive() { alive "$RUN/kafka/kafka.pid" kafka.Kafka; }

# apt-get as root, or through sudo when not root (and sudo exists).
as_root() {
  if [ "$EUID" -ne 0 ] && command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}
apt_install() {   # apt_install PKG...: install only the packages dpkg does not report as installed
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

java_major() { "$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -1; }
find_java() {     # sets JAVA to a Java 17+ binary, or returns 1
  local j v
  for j in "${JAVA:-java}" /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    command -v "$j" >/dev/null 2>&1 || continue
    v=$(java_major "$j"); [ -n "$v" ] && [ "$v" -ge 17 ] && { JAVA=$j; return 0; }
  done
  return 1
}
kafka_java() { "$JAVA" -Xmx256m "${JVM_OPTS[@]}" -cp "$LIBS/*" "$@"; }   # Kafka's CLI main classes

install() {
  local pkgs=(redis-server redis-tools kcat)
  find_java || pkgs+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || pkgs+=(maven)
  apt_install "${pkgs[@]}"
  find_java || die "no Java 17+ found (set JAVA)"
  if [ -f "$LIBS/.complete" ]; then log "Kafka $KAFKA_VERSION jars cached in $LIBS"; return; fi
  local d=$CACHE/kafka-$KAFKA_VERSION; mkdir -p "$d"; rm -rf "$LIBS" "$LIBS.tmp"
  # Broker (kafka_2.13) + CLI tools (kafka-tools minus Kafka Connect's Jetty/Jersey) + log4j2 binding.
  cat >"$d/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>kafka-libs</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version><exclusions>
      <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
      <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>*</artifactId></exclusion></exclusions></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies></project>
EOF
  log "downloading Kafka $KAFKA_VERSION jars from Maven Central (~45 MB)"
  mvn -B -f "$d/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$d/mvn.log" 2>&1 \
    || { tail -30 "$d/mvn.log" >&2; die "maven failed (full log: $d/mvn.log)"; }
  # only a complete libs/ counts as cached
  touch "$LIBS.tmp/.complete" && mv "$LIBS.tmp" "$LIBS" && log "jars ready in $LIBS"
}

start_redis() {
  local d=$RUN/redis; mkdir -p "$d"
  if ! redis_alive; then
    port_open "$REDIS_PORT" && die "port $REDIS_PORT already in use (set REDIS_PORT)"
    # ephemeral: no RDB snapshots, no AOF
    redis-server --bind "$HOST" --port "$REDIS_PORT" --save '' --appendonly no --dir "$d" \
      --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log"
  fi
  for _ in $(seq 100); do   # ready = answers PING
    if [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
      log "redis ready on $HOST:$REDIS_PORT"; return
    fi
    sleep 0.1
  done
  die "redis did not answer PING; see $d/redis.log"
}

write_kafka_config() {   # $1 = kafka run dir
  local k=$1
  # Combined broker+controller; replication factor 1 everywhere, small internal topics and pools.
  cat >"$k/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$k/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
log.cleaner.dedupe.buffer.size=16777216
EOF
  # Root logger WARN to a file; INFO for KafkaRaftServer so "Kafka Server started" is logged.
  cat >"$k/log4j2.properties" <<EOF
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $k/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
EOF
}

start_kafka() {
  local k=$RUN/kafka p; mkdir -p "$k/logs"
  if ! kafka_alive; then
    for p in $KAFKA_PORT $KAFKA_CONTROLLER_PORT; do
      port_open "$p" && die "port $p already in use (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
    done
    write_kafka_config "$k"
    # --ignore-formatted: a data dir from an earlier start is reused (topics, offsets), not wiped.
    kafka_java kafka.tools.StorageTool format --standalone --ignore-formatted \
      -t MkU3OEVBNTcwNTJENDM2Qg -c "$k/server.properties" >"$k/logs/format.log" 2>&1 \
      || { cat "$k/logs/format.log" >&2; die "kafka storage format failed"; }
    nohup "$JAVA" "${KAFKA_HEAP[@]}" "${JVM_OPTS[@]}" "-Dkafka.logs.dir=$k/logs" -cp "$LIBS/*" \
      kafka.Kafka "$k/server.properties" >"$k/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$k/kafka.pid"
  fi
  # Ready = the broker answers a real Metadata request (kcat), not just an open port.
  local t0=$SECONDS
  until kcat -b "$HOST:$KAFKA_PORT" -L -m 1 >/dev/null 2>&1; do
    kafka_alive || { tail -20 "$k/logs/stdout.log" "$k/logs/server.log" >&2 || true; die "kafka exited"; }
    [ $((SECONDS - t0)) -lt 90 ] || die "kafka not ready after 90 s; see $k/logs"
    sleep 0.2
  done
  log "kafka ready on $HOST:$KAFKA_PORT after $((SECONDS - t0)) s"
  local pids=() t have; have=$(kcat -b "$HOST:$KAFKA_PORT" -L 2>/dev/null)
  for t in $TOPICS; do   # missing topics only; one JVM each (~1.5 s), in parallel
    grep -q "topic \"${t%%:*}\"" <<<"$have" && continue
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" --create \
      --if-not-exists --topic "${t%%:*}" --partitions "${t##*:}" --replication-factor 1 >&2 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "topic creation failed"; done
}

stop_one() {   # stop_one PIDFILE PATTERN NAME: TERM, wait up to 30 s, then KILL
  local pid i
  if ! alive "$1" "$2"; then rm -f "$1"; return 0; fi
  pid=$(cat "$1"); kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do exited "$pid" && break; sleep 0.1; done
  if ! exited "$pid"; then log "$3 ignored TERM, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$1"; log "$3 stopped (pid $pid)"
}

check_start() {   # jars + Java present; one instance (port set) per run dir
  [ -f "$LIBS/.complete" ] || die "Kafka jars missing in $LIBS: run '$0 install' first"
  find_java || die "no Java 17+ found: run '$0 install' or set JAVA"
  local want="$REDIS_PORT $KAFKA_PORT $KAFKA_CONTROLLER_PORT"
  if { redis_alive || kafka_alive; } && [ "$(cat "$RUN/ports" 2>/dev/null)" != "$want" ]; then
    die "$RUN already runs ports '$(cat "$RUN/ports" 2>/dev/null)'; stop it or set another REMEDIATOR_RUN"
  fi
  mkdir -p "$RUN"; echo "$want" >"$RUN/ports"
}

stop_all() {
  stop_one "$RUN/kafka/kafka.pid" kafka.Kafka kafka
  stop_one "$RUN/redis/redis.pid" redis-server redis
}

case "${1:-}" in
  install) install ;;
  start)   check_start; start_redis; start_kafka; env_lines ;;
  stop)    stop_all ;;
  clean)   stop_all; rm -rf "$RUN"; log "removed $RUN" ;;
  env)     env_lines ;;
  status)  redis_alive && kafka_alive && kcat -b "$HOST:$KAFKA_PORT" -L -m 1 >/dev/null 2>&1 \
             && [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] ;;
  *)       echo "usage: $0 install|start|stop|clean|env|status" >&2; exit 2 ;;
esac
