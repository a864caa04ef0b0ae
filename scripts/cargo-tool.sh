#!/usr/bin/env bash
# cargo-tool.sh - install a cargo subcommand from crates.io once, at a pinned version, into
# $REMEDIATOR_CACHE/<name>-<version> (default ~/.cache/remediator), and print its bin directory.
#
#   PATH="$(scripts/cargo-tool.sh cargo-nextest 0.9.151):$PATH"
#
# --locked: the dependency versions the tool's release was tested with. A cold build takes a few
# minutes on 2 cores (cargo-nextest ~5 min, cargo-mutants ~2 min); later calls are instant.
# Progress goes to stderr; stdout carries only the bin directory.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 CRATE VERSION" >&2; exit 2; }
name=$1 version=$2
root="${REMEDIATOR_CACHE:-$HOME/.cache/remediator}/$name-$version"
if [ ! -x "$root/bin/$name" ]; then
  echo "[cargo-tool] cargo install $name $version (once, into $root)" >&2
  cargo install "$name" --locked --version "$version" --root "$root" >&2
fi
echo "$root/bin"
