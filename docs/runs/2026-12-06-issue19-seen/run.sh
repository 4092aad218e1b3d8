#!/bin/sh
# The seen index's lines of docs/benchmarks.md, in one sitting, from the
# repository's root: raw outputs beside this script. SEEN_MAP100M=1 adds
# the in-heap map at 100 M keys (4.4 GiB, minutes), SEEN_REPLAY=1 BenchmarkReplay
# at 1 M CARs.
set -eu
out=$(dirname "$0")
work=${SEEN_WORK:-/var/tmp/seen-bench}
{ date -u; git rev-parse --short HEAD; uptime; free -m; } > "$out/machine.txt"
go test -run '^$' -bench '^BenchmarkAccepted$' -count 6 ./aggregator/seen/ -seen.keys 1000000 | tee "$out/accepted.txt"
benchstat -col /impl "$out/accepted.txt" > "$out/accepted-benchstat.txt" || true
go build -o "$work/seenmem" ./bench/cmd/seenmem
for n in 1000000 10000000 100000000; do
	[ -f "$work/$n/manifest" ] || "$work/seenmem" -build -keys $n -dir "$work/$n" | tee -a "$out/build.txt"
done
: > "$out/memory.txt"
for round in 1 2 3; do
	"$work/seenmem" -impl map -keys 0 -lookups 0 | tee -a "$out/memory.txt"
	for n in 1000000 10000000 100000000; do
		rm -rf "$work/$n/store"
		"$work/seenmem" -impl seen -keys $n -dir "$work/$n" -lookups 1000000 -fold 100000 | tee -a "$out/memory.txt"
	done
	for n in 1000000 10000000; do
		"$work/seenmem" -impl map -keys $n -lookups 1000000 -fold 100000 | tee -a "$out/memory.txt"
	done
done
[ -n "${SEEN_MAP100M:-}" ] && "$work/seenmem" -impl map -keys 100000000 -lookups 1000000 -fold 100000 | tee -a "$out/memory.txt"
[ -n "${SEEN_REPLAY:-}" ] && go test -run '^$' -bench '^BenchmarkReplay$' -benchtime 1x -count 2 -timeout 2h ./bench/ -ferry.cars=1000000 | tee "$out/replay.txt"
