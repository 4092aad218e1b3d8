#!/bin/sh
# The what-if line of docs/benchmarks.md: ferry whatif over a 1 M-input
# log against ferry replay of the same data dir, in one sitting.
set -eu
dir=${1:-/var/tmp/whatif-1m}
go build -o /tmp/ferry ./cmd/ferry
[ -d "$dir" ] || go run ./bench/cmd/whatifdata -data "$dir" -inputs 1000000
for round in 1 2 3; do
  /usr/bin/time -v /tmp/ferry replay --data "$dir" --progress never
  /usr/bin/time -v /tmp/ferry whatif --data "$dir" --policy 'deal=1MiB,min=1' \
    --policy 'groupby=source.space,groupmaxwait=1h' --json --progress always >/dev/null
  /usr/bin/time -v /tmp/ferry whatif --data "$dir" --json --progress always >/dev/null
done
