#!/usr/bin/env bash
# cargo-tool.sh - install a cargo subcommand once, from crates.io, into the shared cache, and print
# the directory holding its binary (for PATH).
#
#   bash scripts/cargo-tool.sh CRATE VERSION      e.g.  bash scripts/cargo-tool.sh cargo-deny 0.20.2
#
# The tool lands in ${REMEDIATOR_CACHE:-~/.cache/remediator}/CRATE-VERSION/bin and is built only when
# that binary is missing (`cargo install --locked`: the dependency versions its release was tested
# with), so later runs are instant. Build output goes to stderr; stdout is only the bin directory.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 CRATE VERSION" >&2; exit 2; }
crate=$1 version=$2
# Crate names and versions end up in a path and a cargo argument: accept only their plain forms.
[[ $crate =~ ^[A-Za-z0-9_-]+$ ]] || { echo "cargo-tool.sh: bad crate name: $crate" >&2; exit 2; }
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "cargo-tool.sh: bad version: $version" >&2; exit 2; }

root="${REMEDIATOR_CACHE:-$HOME/.cache/remediator}/$crate-$version"
if [ -x "$root/bin/$crate" ]; then
  echo "[cargo-tool] $crate $version present" >&2
else
  echo "[cargo-tool] cargo install $crate $version (once; cached in $root)" >&2
  cargo install "$crate" --locked --version "$version" --root "$root" >&2
fi
echo "$root/bin"
