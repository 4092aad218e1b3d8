#!/usr/bin/env bash
# Prints the path of a kubo v0.32.1 `ipfs` binary for the end-to-end tier
# (make e2e), building it once into a cache if it is not there: kubo is
# built from the Go module proxy (about 7 minutes on two cores), in a
# throwaway module so that ferry's go.mod is untouched.
#
#   FERRY_KUBO_CACHE  cache root (default ~/.cache/ferry)
set -euo pipefail
version=v0.32.1
dir="${FERRY_KUBO_CACHE:-$HOME/.cache/ferry}/kubo-$version"
bin="$dir/ipfs"
if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'module kubobuild\n\ngo 1.26\n' > "$work/go.mod"
echo "building kubo $version into $dir (once; several minutes)" >&2
(cd "$work" && GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/ipfs/kubo/cmd/ipfs@$version") >&2
"$bin" version >&2
echo "$bin"
