#!/usr/bin/env bash
# redis-ha.sh - Redis Cluster and Sentinel-managed Redis on loopback, for the test suite and for trying
# remediator's `redis+cluster://` and `redis+sentinel://` URLs. No Docker: Debian's redis-server 7.0
# (the same package scripts/services.sh installs), nothing persisted.
#
# Commands (TOPOLOGY is `cluster` or `sentinel`):
#   start TOPOLOGY   start it (no-op for nodes already running), wait until usable, print the env line
#                    on stdout:  REDIS_CLUSTER_URL=redis+cluster://...  or
#                                REDIS_SENTINEL_URL=redis+sentinel://.../remediator
#                    Usage in a shell:  export "$(scripts/redis-ha.sh start cluster)"
#   stop [TOPOLOGY]  stop its nodes (both when omitted) and delete their state (nodes are ephemeral)
#   env TOPOLOGY     print the env line without starting anything
#   status TOPOLOGY  exit 0 if it runs and is usable (cluster_state:ok / Sentinel names a primary)
#   primary          (sentinel) print the port of the node the Sentinels name as primary
#   slot-owner KEY   (cluster) print the port of the primary serving KEY's slot
#   kill PORT        kill -9 the node on PORT (fault injection)
#   cut PORT         the primary on PORT stops feeding its replicas, as in a partition between them:
#                    it requires a password from now on (connections already made are unaffected) and
#                    drops its replica links, so the replicas cannot resync. Writes it takes from then
#                    on are lost if it dies and a replica is promoted.
#   revive PORT      start the node on PORT again, empty (a killed Sentinel-managed node rejoins as a
#                    replica of the current primary); returns once the Sentinels agree on a primary
#                    and list the other data node as a healthy replica, whichever of the two that is
#                    (a loaded machine can make them fail over again meanwhile; this is logged)
#
# Layout: cluster = 3 primaries on REDIS_CLUSTER_PORT..+2 (with REDIS_CLUSTER_REPLICAS=1: 3 primaries and
# 3 replicas on ..+5; cluster-node-timeout 2000 ms, so a killed primary's replica takes over in ~3 s),
# cluster bus on port+10000;
# sentinel = a primary on REDIS_SENTINEL_PORT, its replica on +1, three Sentinels on +10..+12 with
# quorum 2, down-after 1000 ms, failover-timeout 5000 ms; master name `remediator`.
# Env knobs (defaults in brackets):
#   REDIS_CLUSTER_PORT [17000]  REDIS_CLUSTER_REPLICAS [0; 0 or 1]  REDIS_SENTINEL_PORT [17100]
#   REDIS_HA_RUN [/tmp/remediator-redis-ha; one per port set]  REDIS_SENTINEL_DOWN_MS [1000]
# Progress and errors go to stderr; stdout carries only the env / port lines.
set -euo pipefail

HOST=127.0.0.1
RUN=${REDIS_HA_RUN:-/tmp/remediator-redis-ha}
CPORT=${REDIS_CLUSTER_PORT:-17000}
SPORT=${REDIS_SENTINEL_PORT:-17100}
DOWN_MS=${REDIS_SENTINEL_DOWN_MS:-1000}
MASTER=remediator
REPLICAS=${REDIS_CLUSTER_REPLICAS:-0}
case "$REPLICAS" in 0|1) ;; *) echo "[redis-ha] ERROR: REDIS_CLUSTER_REPLICAS must be 0 or 1" >&2; exit 1 ;; esac
CLUSTER_PORTS=$(seq -s ' ' "$CPORT" $((CPORT + 3 * (REPLICAS + 1) - 1)))
DATA_PORTS="$SPORT $((SPORT + 1))"
SENTINEL_PORTS="$((SPORT + 10)) $((SPORT + 11)) $((SPORT + 12))"

log() { echo "[redis-ha] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cli() { redis-cli -h "$HOST" -p "$1" "${@:2}" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
pidfile() { echo "$RUN/$1/redis.pid"; }
# Running, not a zombie, and still a redis-server (guards against a recycled pid).
alive() {
  local f pid s; f=$(pidfile "$1"); [ -s "$f" ] || return 1; pid=$(cat "$f")
  s=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1); [ -n "$s" ] && [ "$s" != Z ] \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server
}
wait_ping() {   # wait_ping PORT: until the node answers PING (10 s)
  for _ in $(seq 100); do [ "$(cli "$1" ping)" = PONG ] && return 0; sleep 0.1; done
  die "node $1 did not answer PING; see $RUN/$1/redis.log"
}

# node PORT EXTRA-ARGS...: start one redis-server (ephemeral) in $RUN/PORT unless it runs.
node() {
  local p=$1 d=$RUN/$1; shift
  alive "$p" && return 0
  port_open "$p" && die "port $p already in use (set REDIS_CLUSTER_PORT / REDIS_SENTINEL_PORT)"
  mkdir -p "$d"
  redis-server --bind "$HOST" --port "$p" --save '' --appendonly no --dir "$d" --daemonize yes \
    --pidfile "$d/redis.pid" --logfile "$d/redis.log" "$@"
}

# --- cluster ----------------------------------------------------------------------------------------
cluster_node() {
  node "$1" --cluster-enabled yes --cluster-config-file "$RUN/$1/nodes.conf" --cluster-node-timeout 2000
}
cluster_ok() { local p; for p in $CLUSTER_PORTS; do cli "$p" cluster info | grep -q '^cluster_state:ok' || return 1; done; }
start_cluster() {
  local p t0=$SECONDS addrs=()
  for p in $CLUSTER_PORTS; do cluster_node "$p"; done
  for p in $CLUSTER_PORTS; do wait_ping "$p"; addrs+=("$HOST:$p"); done
  if ! cli "$CPORT" cluster info | grep -q '^cluster_slots_assigned:16384'; then
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$REPLICAS" --cluster-yes >"$RUN/create.log" 2>&1 \
      || { cat "$RUN/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  for _ in $(seq 200); do cluster_ok && break; sleep 0.1; done
  cluster_ok || die "cluster not ok after 20 s; see $RUN/*/redis.log"
  if [ "$REPLICAS" = 1 ]; then   # every replica in sync, so a failover has something to promote
    for p in $CLUSTER_PORTS; do
      for _ in $(seq 300); do
        cli "$p" info replication | grep -q '^role:master' && break
        cli "$p" info replication | grep -q '^master_link_status:up' && break
        sleep 0.1
      done
    done
  fi
  log "cluster ok on ports $CLUSTER_PORTS after $((SECONDS - t0)) s"
}
cluster_env() { echo "REDIS_CLUSTER_URL=redis+cluster://$HOST:$CPORT,$HOST:$((CPORT + 1)),$HOST:$((CPORT + 2))"; }

# --- sentinel ---------------------------------------------------------------------------------------
sentinel_node() {
  local p=$1 d=$RUN/$1
  alive "$p" && return 0
  mkdir -p "$d"
  # A Sentinel rewrites its config file (it records the current primary): one per node, kept
  # across a revive so a restarted Sentinel knows the topology.
  [ -f "$d/sentinel.conf" ] || cat >"$d/sentinel.conf" <<EOF
bind $HOST
port $p
dir $d
sentinel monitor $MASTER $HOST $SPORT 2
sentinel down-after-milliseconds $MASTER $DOWN_MS
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
EOF
  port_open "$p" && die "port $p already in use (set REDIS_SENTINEL_PORT)"
  redis-server "$d/sentinel.conf" --sentinel --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log"
}
sentinel_primary() {   # the port the first answering Sentinel names as primary
  local p out
  for p in $SENTINEL_PORTS; do
    out=$(cli "$p" sentinel get-master-addr-by-name "$MASTER" | sed -n 2p)
    [ -n "$out" ] && { echo "$out"; return 0; }
  done
  return 1
}
sentinel_ok() {   # every Sentinel names the same primary, which answers as master and sees 2 Sentinels
  local p first='' got
  for p in $SENTINEL_PORTS; do
    got=$(cli "$p" sentinel get-master-addr-by-name "$MASTER" | sed -n 2p)
    [ -n "$got" ] || return 1
    [ -z "$first" ] && first=$got; [ "$got" = "$first" ] || return 1
    [ "$(cli "$p" sentinel master "$MASTER" | grep -A1 '^num-other-sentinels$' | tail -1)" = 2 ] || return 1
  done
  cli "$first" role | head -1 | grep -q master
}
start_sentinel() {
  local p t0=$SECONDS primary
  if ! alive "$SPORT" && ! alive "$((SPORT + 1))"; then rm -rf "$RUN"/"$SPORT" "$RUN"/"$((SPORT + 1))"; fi
  primary=$(sentinel_primary || echo "$SPORT")
  for p in $DATA_PORTS; do
    if [ "$p" = "$primary" ]; then node "$p"; else node "$p" --replicaof "$HOST" "$primary"; fi
  done
  for p in $DATA_PORTS; do wait_ping "$p"; done
  for p in $SENTINEL_PORTS; do sentinel_node "$p"; done
  for p in $SENTINEL_PORTS; do wait_ping "$p"; done
  for _ in $(seq 300); do sentinel_ok && break; sleep 0.1; done
  sentinel_ok || die "Sentinels do not agree on a primary after 30 s; see $RUN/*/redis.log"
  # The replica has caught up (link up) before anyone relies on it.
  for _ in $(seq 100); do
    cli "$primary" info replication | grep -q 'state=online' && break; sleep 0.1
  done
  replicas_known
  log "sentinel ready after $((SECONDS - t0)) s: primary $primary, Sentinels on $SENTINEL_PORTS"
}
replicas_known() {   # the Sentinels agree on a primary, and the other data node is in sync with it
  local p prim other flags ok   # and listed by every Sentinel as a healthy replica (flags exactly
  for _ in $(seq 600); do       # "slave"); 60 s. Which node is primary does not matter: a second
    ok=1                        # failover on a loaded machine may have swapped them again.
    if sentinel_ok; then
      prim=$(sentinel_primary)
      for p in $DATA_PORTS; do [ "$p" = "$prim" ] || other=$p; done
      cli "$prim" info replication | grep -q "port=$other,state=online" || ok=0
      for p in $SENTINEL_PORTS; do
        flags=$(cli "$p" sentinel replicas "$MASTER" | awk -v want="$other" '
          $0 == "port" { getline; port = $0 } $0 == "flags" { getline; if (port == want) print }')
        [ "$flags" = slave ] || ok=0
      done
    else
      ok=0
    fi
    [ "$ok" = 1 ] && return 0; sleep 0.1
  done
  for p in $SENTINEL_PORTS; do
    log "Sentinel $p: primary $(cli "$p" sentinel get-master-addr-by-name "$MASTER" | sed -n 2p);" \
      "replicas $(cli "$p" sentinel replicas "$MASTER" | tr '\n' ' ' | grep -o 'port [0-9]* [^|]*flags [a-z_,]*' | sed 's/ runid.*flags/ flags/' | tr '\n' ';')"
  done
  for p in $DATA_PORTS; do
    log "node $p: $(cli "$p" info replication | grep -E '^(role|master_port|master_link_status|slave[0-9])' | tr '\r\n' '  ')"
  done
  die "the Sentinels do not agree on a primary with a healthy replica after 60 s"
}
sentinel_env() {
  local s; s=$(for p in $SENTINEL_PORTS; do printf '%s:%s,' "$HOST" "$p"; done)
  echo "REDIS_SENTINEL_URL=redis+sentinel://${s%,}/$MASTER"
}

stop_ports() {   # TERM (nothing to save), then KILL after 5 s; remove the state
  local p pid i
  for p in "$@"; do
    if alive "$p"; then
      pid=$(cat "$(pidfile "$p")"); kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$p" || break; sleep 0.1; done
      alive "$p" && kill -KILL "$pid" 2>/dev/null || true
      log "stopped node $p (pid $pid)"
    fi
    rm -rf "${RUN:?}/$p"
  done
}

topology() {
  case "${1:-}" in cluster|sentinel) ;; *) echo "usage: $0 $CMD cluster|sentinel" >&2; exit 2 ;; esac
}
command -v redis-server >/dev/null || die "redis-server missing: run scripts/services.sh install"
mkdir -p "$RUN"
CMD=${1:-}
case "$CMD" in
  start)
    topology "${2:-}"
    if [ "$2" = cluster ]; then start_cluster; cluster_env; else start_sentinel; sentinel_env; fi ;;
  stop)
    case "${2:-}" in
      cluster) stop_ports $CLUSTER_PORTS ;;
      sentinel) stop_ports $SENTINEL_PORTS $DATA_PORTS ;;
      '') stop_ports $CLUSTER_PORTS $SENTINEL_PORTS $DATA_PORTS ;;
      *) topology "$2" ;;
    esac ;;
  env) topology "${2:-}"; if [ "$2" = cluster ]; then cluster_env; else sentinel_env; fi ;;
  status) topology "${2:-}"; if [ "$2" = cluster ]; then cluster_ok; else sentinel_ok; fi ;;
  primary) sentinel_primary || die "no Sentinel names a primary" ;;
  slot-owner)
    [ -n "${2:-}" ] || die "usage: $0 slot-owner KEY"
    for p in $CLUSTER_PORTS; do
      alive "$p" || continue
      # A MOVED reply names the owner; a node that serves the key answers without one.
      out=$(printf 'EXISTS %s\n' "$2" | redis-cli -h "$HOST" -p "$p" 2>&1)
      case "$out" in
        *MOVED*) echo "${out##*:}" ;;
        *) echo "$p" ;;
      esac
      exit 0
    done
    die "no cluster node is running" ;;
  kill)
    [ -n "${2:-}" ] || die "usage: $0 kill PORT"
    alive "$2" || die "no node runs on port $2"
    kill -KILL "$(cat "$(pidfile "$2")")"; log "killed node $2" ;;
  cut)
    [ -n "${2:-}" ] || die "usage: $0 cut PORT"
    printf 'CONFIG SET requirepass %s\nCLIENT KILL TYPE replica\n' "cut-$RANDOM$RANDOM" \
      | redis-cli -h "$HOST" -p "$2" >/dev/null || die "cannot cut node $2 off its replicas"
    log "node $2 no longer feeds its replicas" ;;
  revive)
    [ -n "${2:-}" ] || die "usage: $0 revive PORT"
    case " $DATA_PORTS " in
      *" $2 "*)
        node "$2" --replicaof "$HOST" "$(sentinel_primary)"; wait_ping "$2"; replicas_known
        [ "$(sentinel_primary)" = "$2" ] && log "node $2 is the primary again: the Sentinels failed over once more" ;;
      *) case " $CLUSTER_PORTS " in
           *" $2 "*) die "a killed cluster node has lost its slots' data: stop and start the cluster" ;;
           *) sentinel_node "$2"; wait_ping "$2" ;;
         esac ;;
    esac
    log "revived node $2" ;;
  *) echo "usage: $0 start|stop|env|status TOPOLOGY | primary | kill|cut|revive PORT" >&2; exit 2 ;;
esac
