#!/usr/bin/env bash
# k8s.sh - a REAL Kubernetes control plane on loopback for the test suite, without containers and
# without downloading any prebuilt binary: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl are built from the Go module proxy, kwok fakes one node and makes its
# pods Ready (or crash, see scripts/kwok-stages/). Plain processes on 127.0.0.1
# (docs/test-services.md).
#
# Commands:
#   install        build etcd, kube-*, kubectl and kwok once into $CACHE/k8s/<version>/bin; when all
#                  binaries are there it returns at once. A cold build needs Go >= 1.26 (etcd's go.mod),
#                  takes ~6.5 min on 2 cores, ~2 GB RAM, and leaves ~5 GiB of Go caches in
#                  $CACHE/k8s/go (kept for the next version bump unless K8S_DROP_GO_CACHE=1).
#   start          fresh cluster (etcd data wiped): PKI, all processes, waits for /readyz, node Ready and
#                  the default ServiceAccount (~3-4 s), then prints the only stdout line
#                      KUBECONFIG=<run dir>/kubeconfig    (admin: CN=kwok-admin, O=system:masters)
#                  Usage in a shell:  out=$(scripts/k8s.sh start) && export "$out"
#                  Already running: prints the same line and reuses the cluster (stop + start = fresh).
#   stop           stop the processes via pidfiles (idempotent; ~1.5 s)
#   status         exit 0 if every process runs and the apiserver answers /readyz, 1 otherwise
#   env            KEY=VALUE lines for tools, without starting anything:
#                      KUBECONFIG=...  KUBECACHEDIR=...  REMEDIATOR_KUBECTL=<the v1.35.4 kubectl>
#                  Usage:  export $(scripts/k8s.sh env); "$REMEDIATOR_KUBECTL" get pods -A
#   kubectl ARGS   run the built kubectl against this cluster, e.g.  scripts/k8s.sh kubectl get nodes
# Env knobs (defaults in brackets):
#   REMEDIATOR_CACHE [~/.cache/remediator]   K8S_VERSION [v1.35.4]   ETCD_VERSION [v3.6.16]
#   KWOK_VERSION [v0.8.0]   K8S_BUILD_JOBS [2]   K8S_DROP_GO_CACHE [0; 1 = delete $CACHE/k8s/go after a
#   successful cold install]   K8S_PORT_BASE [26400: apiserver +43, etcd +79 (client) and +80 (peer);
#   controller-manager and scheduler serve no port]   K8S_RUN_DIR [/tmp/remediator-k8s, or
#   /tmp/remediator-k8s-<port base> for another port base]   KWOK_NODE_NAME [kwok-node-0]
# Progress and errors go to stderr; component logs to <run dir>/logs/.
#
# The apiserver authorizes with Node,RBAC, so RBAC manifests (deploy/rbac.yaml) are really enforced;
# the admin certificate is in system:masters and is never subject to RBAC. Loopback details that
# shape the flags below: fake pod IPs are 10.244.0.0/16 (EndpointSlices refuse loopback), nothing
# dials them; do not port-forward or exec into fake pods.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}   # k8s.io/kubernetes >= v1.33 (the wrapper module needs go >= 1.24)
ETCD_VERSION=${ETCD_VERSION:-v3.6.16} # go.etcd.io/etcd/server/v3 (needs Go >= 1.26.0)
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}  # sigs.k8s.io/kwok
CACHE=${REMEDIATOR_CACHE:-$HOME/.cache/remediator}/k8s
BIN=$CACHE/$K8S_VERSION/bin
PB=${K8S_PORT_BASE:-26400}
API_PORT=$((PB + 43)) ETCD_PORT=$((PB + 79)) ETCD_PEER=$((PB + 80))
if [ "$PB" = 26400 ]; then RUN=${K8S_RUN_DIR:-/tmp/remediator-k8s}; else RUN=${K8S_RUN_DIR:-/tmp/remediator-k8s-$PB}; fi
STAGES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kwok-stages
NODE=${KWOK_NODE_NAME:-kwok-node-0}
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"   # start order
HOST=127.0.0.1

log() { echo "[k8s] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f s", b-a}'; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# --- install ----------------------------------------------------------------------------------------
installed() { local b; for b in $COMPONENTS kubectl; do [ -x "$BIN/$b" ] || return 1; done; }

install() {
  if installed; then log "binaries cached in $BIN"; return 0; fi
  command -v go >/dev/null || die "go not found (a cold install builds from the Go module proxy; Go >= 1.26)"
  local t0 w=$CACHE/$K8S_VERSION/work out=$BIN.partial j=${K8S_BUILD_JOBS:-2} gomod sv min ld p
  # Self-contained Go caches (1.4 GiB modules + 3.7 GiB build cache after a cold build), so the
  # user's own Go caches are neither used nor polluted.
  export GOPATH=$CACHE/go GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOFLAGS=-buildvcs=false
  t0=$(now); rm -rf "$w" "$out"; mkdir -p "$w/etcd" "$w/k8s" "$out"

  log "building kwok $KWOK_VERSION (~2.5 min cold)"   # a plain module without replace directives
  GOBIN=$out go install -p "$j" -trimpath -ldflags '-s -w' "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2

  log "building etcd $ETCD_VERSION (< 1 min)"   # wrapper module; server/v3 is etcd's main package
  (cd "$w/etcd"
   printf 'module local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
   printf '\ntool go.etcd.io/etcd/server/v3\n' >>go.mod
   go mod tidy >&2
   go build -p "$j" -trimpath -ldflags '-s -w' -o "$out/etcd" go.etcd.io/etcd/server/v3 >&2)

  log "building kubernetes $K8S_VERSION: apiserver, controller-manager, scheduler, kubectl (~3.5 min cold)"
  # k8s.io/kubernetes replaces its staging modules with ./staging/src/...; the wrapper module
  # replaces each of them with the published k8s.io/<module> v0.<minor>.<patch> instead, and
  # `go mod tidy` then selects exactly the versions kubernetes pins.
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
          sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || die "cannot read go.mod of k8s.io/kubernetes@$K8S_VERSION"
  sv=v0.${K8S_VERSION#v1.}; min=${K8S_VERSION#v1.}; min=${min%%.*}
  (cd "$w/k8s"
   { printf 'module local/k8s\n\n'; grep -E '^(go|godebug) ' "$gomod"
     printf '\nrequire k8s.io/kubernetes %s\n\ntool (\n' "$K8S_VERSION"
     for p in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
       printf '\tk8s.io/kubernetes/cmd/%s\n' "$p"; done
     printf ')\n\nreplace (\n'
     sed -n "s#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 $sv#p" "$gomod"
     echo ")"; } >go.mod
   go mod tidy >&2
   ld="-s -w"   # version stamping as upstream hack/lib/version.sh does it (else v0.0.0-master)
   for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
     ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$min -X $p.gitTreeState=clean"
   done
   CGO_ENABLED=0 go build -p "$j" -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$out/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl >&2)
  rm -rf "$BIN"; mv "$out" "$BIN"; rm -rf "$w"   # only a complete bin/ counts as installed
  log "installed into $BIN in $(since "$t0")"
  if [ "${K8S_DROP_GO_CACHE:-0}" = 1 ]; then
    chmod -R u+w "$CACHE/go" && rm -rf "$CACHE/go"   # the module cache is read-only by design
    log "deleted the Go module and build caches ($CACHE/go), as K8S_DROP_GO_CACHE=1 asks"
  fi
}

# --- running -----------------------------------------------------------------------------------------
kc() { "$BIN/kubectl" --kubeconfig "$RUN/kubeconfig" --cache-dir "$RUN/kube-cache" "$@"; }
# Gone or a zombie? A stopped process can linger as a zombie that still answers kill -0 (PID 1 may
# reap orphans seconds late), so the state comes from /proc.
exited() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1); [ -z "$s" ] || [ "$s" = Z ]; }
alive() { [ -s "$RUN/$1.pid" ] && ! exited "$(cat "$RUN/$1.pid")"; }
ready() { [ -s "$RUN/pki/admin.crt" ] && curl -sf -m 2 --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" \
            --key "$RUN/pki/admin.key" "https://$HOST:$API_PORT/readyz" >/dev/null 2>&1; }
running() { local c; for c in $COMPONENTS; do alive "$c" || return 1; done; ready; }
launch() { local n=$1; shift; nohup "$BIN/$n" "$@" </dev/null >"$RUN/logs/$n.log" 2>&1 & echo $! >"$RUN/$n.pid"; }
wait_for() {  # wait_for WHAT SECONDS CMD...: poll every 0.2 s; on a dead component or a timeout,
  local what=$1 secs=$2 i c; shift 2  # show its log, stop everything and fail
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    for c in $COMPONENTS; do
      if [ -f "$RUN/$c.pid" ] && ! alive "$c"; then tail -n 8 "$RUN/logs/$c.log" >&2; stop; die "$c died"; fi
    done
    sleep 0.2
  done
  tail -n 3 "$RUN"/logs/*.log >&2; stop; die "timeout waiting for $what"
}

pki() {  # one CA + one cert as serving cert, admin client cert and service-account key (like kwokctl)
  local d=$RUN/pki san; [ -s "$d/admin.crt" ] && return 0
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" -days 3650 \
    -subj /CN=kwok-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/admin.key" -out "$d/admin.csr" \
    -subj "/O=system:masters/CN=kwok-admin" 2>/dev/null
  san=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
  san+=,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1
  printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
    extendedKeyUsage=serverAuth,clientAuth "subjectAltName=$san" >"$d/ext.cnf"
  openssl x509 -req -in "$d/admin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/admin.crt" -days 3650 -extfile "$d/ext.cnf" 2>/dev/null
}

kubeconfig() {  # certs embedded: kube-rs and client-go need nothing but this file
  local d=$RUN/pki
  cat >"$RUN/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kwok
  cluster: {server: "https://$HOST:$API_PORT", certificate-authority-data: $(base64 -w0 "$d/ca.crt")}
users:
- name: kwok-admin
  user: {client-certificate-data: $(base64 -w0 "$d/admin.crt"), client-key-data: $(base64 -w0 "$d/admin.key")}
contexts:
- name: kwok
  context: {cluster: kwok, user: kwok-admin, namespace: default}
current-context: kwok
EOF
  chmod 600 "$RUN/kubeconfig"
}

start() {
  install
  if running; then log "already running (reused; stop + start for a fresh cluster)"; echo "KUBECONFIG=$RUN/kubeconfig"; return 0; fi
  stop 2>/dev/null   # clear a half-started earlier run
  local t0 d=$RUN/pki f port stages=() tool
  for tool in curl openssl base64; do command -v "$tool" >/dev/null || die "$tool not found"; done
  for port in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER"; do   # a foreign listener would make start hang
    port_open "$port" && die "port $port is in use (another cluster? set K8S_PORT_BASE and K8S_RUN_DIR)"
  done
  for f in "$STAGES"/*.yaml; do [ -f "$f" ] && stages+=(--config "$f"); done
  [ ${#stages[@]} -gt 0 ] || die "no kwok stage files in $STAGES"   # kwok has no built-in stages
  t0=$(now); mkdir -p "$RUN/logs"; rm -rf "$RUN/etcd-data" "$RUN/kube-cache"; pki; kubeconfig

  launch etcd --name=node0 --data-dir="$RUN/etcd-data" --unsafe-no-fsync --log-level=warn \
    --listen-client-urls="http://$HOST:$ETCD_PORT" --advertise-client-urls="http://$HOST:$ETCD_PORT" \
    --listen-peer-urls="http://$HOST:$ETCD_PEER" --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER" \
    --initial-cluster="node0=http://$HOST:$ETCD_PEER" --auto-compaction-retention=1 \
    --quota-backend-bytes=$((2 << 30))
  wait_for etcd 30 curl -sf -m 2 "http://$HOST:$ETCD_PORT/health"

  # --endpoint-reconciler-type=none: else "Endpoints kubernetes is invalid: 127.0.0.1 ... loopback".
  # --authorization-mode=Node,RBAC: RBAC is enforced for everyone but system:masters (the admin).
  launch kube-apiserver --etcd-servers="http://$HOST:$ETCD_PORT" \
    --bind-address=$HOST --advertise-address=$HOST --secure-port="$API_PORT" \
    --tls-cert-file="$d/admin.crt" --tls-private-key-file="$d/admin.key" --client-ca-file="$d/ca.crt" \
    --service-account-key-file="$d/admin.key" --service-account-signing-key-file="$d/admin.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=Node,RBAC --allow-privileged=true \
    --endpoint-reconciler-type=none
  wait_for "kube-apiserver /readyz" 120 ready
  log "apiserver ready after $(since "$t0")"

  # --flex-volume-plugin-dir: the default makes the controller-manager mkdir /usr/libexec/kubernetes/...
  launch kube-controller-manager --kubeconfig="$RUN/kubeconfig" --leader-elect=false \
    --bind-address=$HOST --secure-port=0 --root-ca-file="$d/ca.crt" \
    --service-account-private-key-file="$d/admin.key" --flex-volume-plugin-dir="$RUN/flexvolume"
  launch kube-scheduler --kubeconfig="$RUN/kubeconfig" --leader-elect=false \
    --bind-address=$HOST --secure-port=0
  # --node-ip: whatever the apiserver would dial as a "kubelet" (logs, exec) stays on loopback.
  launch kwok --kubeconfig="$RUN/kubeconfig" --manage-all-nodes=true --node-ip=$HOST \
    --node-lease-duration-seconds=40 --cidr=10.244.0.0/16 "${stages[@]}"

  # One fake node: kwok's example node without its NoSchedule taint, so pods need no tolerations.
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: $NODE, kubernetes.io/os: linux,
           kubernetes.io/arch: amd64, node-role.kubernetes.io/agent: ""}
EOF
  wait_for "node $NODE Ready" 60 kc wait --for=condition=Ready "node/$NODE" --timeout=1s
  # Pods are refused until the controller-manager has created ServiceAccount "default".
  wait_for "default ServiceAccount" 60 kc get serviceaccount default
  log "control plane + node ready after $(since "$t0") (logs: $RUN/logs)"
  echo "KUBECONFIG=$RUN/kubeconfig"
}

stop() {
  local c pid i
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do   # reverse start order
    [ -f "$RUN/$c.pid" ] || continue; pid=$(cat "$RUN/$c.pid")
    # signal the pid only while it still runs our binary (guards against a recycled pid)
    if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */"$c"* ]] && ! exited "$pid"; then
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do exited "$pid" && break; sleep 0.1; done
      exited "$pid" || kill -9 "$pid" 2>/dev/null || true
      log "stopped $c ($pid)"
    fi
    rm -f "$RUN/$c.pid"
  done
}

env_lines() {
  printf 'KUBECONFIG=%s\nKUBECACHEDIR=%s\nREMEDIATOR_KUBECTL=%s\n' "$RUN/kubeconfig" "$RUN/kube-cache" "$BIN/kubectl"
}

case ${1:-} in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) running ;;
  env) env_lines ;;
  kubectl) shift; [ -x "$BIN/kubectl" ] || die "kubectl not built yet: run $0 install"; kc "$@" ;;
  *) echo "usage: $0 install|start|stop|status|env|kubectl ARGS..." >&2; exit 2 ;;
esac
