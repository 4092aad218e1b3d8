#!/usr/bin/env bash
# s3server.sh — prints the path of the S3-compatible server the carstore
# S3 tests start (`make s3-test`), building it first if it is not cached.
#
# The server is SeaweedFS (Apache-2.0), the `weed` command of the module
# github.com/seaweedfs/seaweedfs at the version below, from the Go module
# proxy. Its go.mod has replace directives, so `go install mod@version`
# refuses it: the module's source is downloaded and built in its own
# directory instead. The build is large (minutes on 2 cores, niced); the
# binary is cached under ${FERRY_S3_CACHE:-$HOME/.cache/ferry}.
#
# stdout is only the path; progress goes to stderr.
set -euo pipefail

GO=${GO:-go}
MOD=github.com/seaweedfs/seaweedfs
VERSION=v0.0.0-20261109003541-7506e5f91cd6
CACHE=${FERRY_S3_CACHE:-$HOME/.cache/ferry}
BIN=$CACHE/seaweedfs-$VERSION/weed

if [ -x "$BIN" ]; then
	echo "$BIN"
	exit 0
fi

echo "s3server: building SeaweedFS $VERSION into $BIN" >&2
src=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod "$GO" mod download -json "$MOD@$VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -d "$src" ]; then
	echo "s3server: could not download $MOD@$VERSION" >&2
	exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-seaweedfs-XXXXXX")
trap 'rm -rf "$work"' EXIT
# The module cache is read-only; the build writes nothing there, but a
# copy keeps it that way whatever the go command decides.
cp -r "$src/." "$work/"
chmod -R u+w "$work"
mkdir -p "$(dirname "$BIN")"
(cd "$work" && nice -n 19 "$GO" build -trimpath -o "$BIN.tmp" ./weed)
mv "$BIN.tmp" "$BIN"
echo "$BIN"
