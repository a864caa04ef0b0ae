#!/usr/bin/env bash
# helm.sh - the `helm` binary for tests/helm.rs (helm template + helm lint of
# deploy/helm/remediator), built once from the Go module proxy instead of downloading a prebuilt
# release (docs/test-services.md).
#
# Commands:
#   install      build helm $HELM_VERSION into $CACHE/helm/<version>/bin/helm; returns at once when it is
#                there. A cold build took 184 s on 2 cores (Go 1.26) and leaves ~1 GiB of Go caches in
#                $CACHE/helm/go (separate from the user's own and from scripts/k8s.sh's).
#   path         print the binary's path (exit 1 when not installed)
#   env          print REMEDIATOR_HELM=<path> (for `export $(scripts/helm.sh env)`)
#   helm ARGS    run it, e.g.  scripts/helm.sh helm template deploy/helm/remediator
# Env knobs: REMEDIATOR_CACHE [~/.cache/remediator]   HELM_VERSION [v3.22.0]   HELM_BUILD_JOBS [2]
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE=${REMEDIATOR_CACHE:-$HOME/.cache/remediator}/helm
BIN=$CACHE/$HELM_VERSION/bin

log() { echo "[helm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

install() {
  if [ -x "$BIN/helm" ]; then log "helm cached in $BIN"; return 0; fi
  command -v go >/dev/null || die "go not found (helm is built from the Go module proxy)"
  local t0=$SECONDS out=$BIN.partial gomod minor ld p
  export GOPATH=$CACHE/go GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOFLAGS=-buildvcs=false
  rm -rf "$out"; mkdir -p "$out"
  log "building helm $HELM_VERSION (~3 min cold)"
  # Stamped as helm's Makefile does it: its version, and the Kubernetes version `helm template` and
  # `helm lint` assume (1.<minor of the client-go it is built with>; unstamped it is v1.20.0).
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || die "cannot read go.mod of helm.sh/helm/v3@$HELM_VERSION"
  minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod")
  [ -n "$minor" ] || die "no k8s.io/client-go requirement in $gomod"
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  CGO_ENABLED=0 GOBIN=$out go install -p "${HELM_BUILD_JOBS:-2}" -trimpath -ldflags "$ld" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  rm -rf "$BIN"; mv "$out" "$BIN"   # only a complete bin/ counts as installed
  log "installed $BIN/helm in $((SECONDS - t0)) s"
}

case ${1:-} in
  install) install ;;
  path) [ -x "$BIN/helm" ] || exit 1; echo "$BIN/helm" ;;
  env) echo "REMEDIATOR_HELM=$BIN/helm" ;;
  helm) shift; [ -x "$BIN/helm" ] || die "helm not built yet: run $0 install"
        # Keep helm's own config, cache and data out of the user's home.
        HELM_CONFIG_HOME=$CACHE/home/config HELM_CACHE_HOME=$CACHE/home/cache HELM_DATA_HOME=$CACHE/home/data \
          exec "$BIN/helm" "$@" ;;
  *) echo "usage: $0 install|path|env|helm ARGS..." >&2; exit 2 ;;
esac
