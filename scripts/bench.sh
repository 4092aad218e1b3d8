#!/usr/bin/env bash
# bench.sh — ferry's performance lines (issue "Performance"), each against a
# baseline measured in the same run, then the table of docs/benchmarks.md.
#
#   scripts/bench.sh            full scale: 1,000,000 CARs, 262,144-piece close, 1 GiB pack
#                               (about 16–23 minutes on 2 cores; see docs/benchmarks.md)
#   scripts/bench.sh --smoke    CI size: 10,000 CARs, 4,096-piece close, 8 MiB pack (about a minute)
#
# Options:
#   --cars N         CARs of the ingest, replay, memory and status API lines
#   --count N        run every benchmark N times, in rounds; the table takes medians,
#                    and for ingest and replay the median of the rounds' ratios (default 1)
#   --only LIST      comma-separated lines: ingest,replay,serve,close,piece,fetch,pack (default all);
#                    also handler: BenchmarkStatusHandler, the API's server side in
#                    process (CPU per request, for comparing fixes; not in the table)
#   --out DIR        where raw outputs, profiles and table.md go
#                    (default: ${TMPDIR:-/tmp}/ferry-bench-<time>)
#   --profile        also write a CPU profile per line (DIR/<line>.cpu.pprof)
#   --no-install     do not try to install wrk or benchstat
#   --strict         exit 1 when a target is missed
#
# Tools: wrk drives the status API when it is on PATH (this script installs
# it with apt-get when it can); otherwise bench/cmd/loadgen does, which
# costs more CPU on the same machine and so reads lower. benchstat, when
# available, summarises the raw outputs; the table does not need it.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}

mode=full cars= count=1 only=ingest,replay,serve,close,piece,fetch,pack out= profile=0 install=1 strict=
while [ $# -gt 0 ]; do
	case "$1" in
	--smoke) mode=smoke ;;
	--cars) cars=$2; shift ;;
	--count) count=$2; shift ;;
	--only) only=$2; shift ;;
	--out) out=$2; shift ;;
	--profile) profile=1 ;;
	--no-install) install=0 ;;
	--strict) strict=-strict ;;
	-h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

if [ "$mode" = smoke ]; then
	: "${cars:=10000}"
	api_duration=3s
	settle=2s
	close_flags=()             # frc58 defaults: 4,096 pieces in 32 GiB
	close_scale="4,096 pieces, 32 GiB"
	close_benchtime=1x
	piece_mib=8
	piece_benchtime=200ms
	fetch_mib=16
	pack_flags=(-pack.size=8 -pack.small=500 -pack.rss-size=0)
	pack_scale="8 MiB tree, 500 small files"
	timeout=20m
else
	: "${cars:=1000000}"
	api_duration=20s
	settle=45s
	close_flags=(-frc58.pieces=262144 -frc58.deal=34359738368)
	close_scale="262,144 pieces, 32 GiB"
	close_benchtime=3x
	piece_mib=64
	piece_benchtime=1s
	fetch_mib=1024
	pack_flags=(-pack.size=1024 -pack.small=100000 -pack.rss-size=4096)
	pack_scale="1 GiB tree: 512 MiB file + 1,000 files of 4 KiB–1 MiB"
	timeout=6h
fi
out=${out:-${TMPDIR:-/tmp}/ferry-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out/bin"
# Absolute: go test runs each package's benchmarks in that package's
# directory, where a relative path to the binaries built here would not
# resolve (--out docs/runs/X failed BenchmarkServe that way).
out=$(cd "$out" && pwd)

log() { printf '\n== %s\n' "$*" >&2; }
want() { case ",$only," in *",$1,"*) return 0 ;; esac; return 1; }

# --- tools -------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1 && [ "$install" = 1 ] && want serve; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		log "installing wrk (apt-get)"
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >"$out/apt.log" 2>&1 ||
			echo "bench.sh: apt-get install wrk failed (see $out/apt.log)" >&2
	fi
fi
if command -v wrk >/dev/null 2>&1; then
	loadgen=wrk
else
	loadgen=go
	echo "bench.sh: wrk is not available: the status API's closed loop is driven by bench/cmd/loadgen as well" >&2
	echo "          (apt-get install wrk to compare with the table's runs, which used wrk)." >&2
fi

gobin=$($GO env GOBIN); gobin=${gobin:-$($GO env GOPATH)/bin}
benchstat=$(command -v benchstat || true)
[ -z "$benchstat" ] && [ -x "$gobin/benchstat" ] && benchstat=$gobin/benchstat
if [ -z "$benchstat" ] && [ "$install" = 1 ]; then
	log "installing benchstat (go install golang.org/x/perf/cmd/benchstat@latest)"
	if (cd "${TMPDIR:-/tmp}" && GOFLAGS= $GO install golang.org/x/perf/cmd/benchstat@latest) >"$out/benchstat-install.log" 2>&1; then
		benchstat=$gobin/benchstat
	else
		echo "bench.sh: benchstat could not be installed (see $out/benchstat-install.log); raw outputs only" >&2
	fi
fi

# --- the machine -------------------------------------------------------
{
	echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "commit:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "go:       $($GO version)"
	echo "nproc:    $(nproc)"
	echo "cpu:      $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	# free comes with procps, which a minimal machine may lack: the run
	# does not depend on it.
	echo "memory:"; { free -h 2>/dev/null || grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; } | sed 's/^/  /'
	echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, at start)"
	echo "mode:     $mode, $cars CARs, count $count, status API by $loadgen"
} | tee "$out/machine.txt"

log "building ferry and loadgen"
$GO build -o "$out/bin/ferry" ./cmd/ferry
$GO build -o "$out/bin/loadgen" ./bench/cmd/loadgen
$GO build -o "$out/bin/benchtable" ./bench/cmd/benchtable

# run LINE PKG BENCH_REGEX BENCHTIME [flags...]: go test processes per line.
# With --count N the whole benchmark runs N times, one process after
# another, rather than once with -count N (which runs each sub-benchmark N
# times before the next): ferry and its baseline then run back to back in
# every round, under the same load of a shared machine, and benchtable
# takes the median of the rounds' ratios. A line that fails is reported
# and the others still run; the script then exits 1.
failed=()
run() {
	local line=$1 pkg=$2 regex=$3 benchtime=$4; shift 4
	local prof=()
	[ "$profile" = 1 ] && prof=(-cpuprofile "$out/$line.cpu.pprof" -o "$out/$line.test")
	log "$line: go test -run '^\$' -bench '$regex' -benchtime $benchtime -count 1 $pkg $* ($count rounds)"
	local start=$SECONDS round
	: >"$out/$line.txt"
	for ((round = 1; round <= count; round++)); do
		if ! $GO test -run '^$' -bench "$regex" -benchtime "$benchtime" -count 1 -timeout "$timeout" \
			"${prof[@]}" "$pkg" "$@" 2>&1 | tee -a "$out/$line.txt"; then
			echo "bench.sh: $line failed (see $out/$line.txt)" >&2
			failed+=("$line")
			break
		fi
	done
	echo "$line: $((SECONDS - start)) s" >>"$out/durations.txt"
}

export FERRY_BENCH_FERRY_BIN=$out/bin/ferry FERRY_BENCH_LOADGEN_BIN=$out/bin/loadgen FERRY_BENCH_LOADGEN=$loadgen
want ingest && run ingest ./bench/ '^BenchmarkIngest$' 1x -ferry.cars="$cars"
want replay && run replay ./bench/ '^BenchmarkReplay$' 1x -ferry.cars="$cars"
want serve && run serve ./bench/ '^BenchmarkServe$' 1x -ferry.cars="$cars" -ferry.api-duration="$api_duration" -ferry.settle="$settle"
want close && run close ./frc58/ '^BenchmarkClose' "$close_benchtime" "${close_flags[@]}"
want handler && run handler ./bench/ '^BenchmarkStatusHandler$' 1s -ferry.cars="$cars"
want piece && run piece ./carcheck/ '^Benchmark(CommPBare|Check)(Parallel[12])?$' "$piece_benchtime" -piece.size="$piece_mib"
want fetch && run fetch ./fetch/ '^BenchmarkFetch$' 1x -fetch.size="$fetch_mib"
want pack && run pack ./pack/ '^BenchmarkPack(SmallFiles|RSS)?$' 1x "${pack_flags[@]}"

if [ -n "$benchstat" ]; then
	for f in "$out"/{ingest,replay,serve,handler,close,piece,fetch,pack}.txt; do
		[ -f "$f" ] && "$benchstat" "$f" >"${f%.txt}.benchstat" 2>&1 || true
	done
fi

log "table (also $out/table.md)"
status=0
"$out/bin/benchtable" $strict -close-scale "$close_scale" -piece-scale "$piece_mib MiB CARs" -fetch-scale "$fetch_mib MiB DAG" -pack-scale "$pack_scale" "$out"/*.txt >"$out/table.md" || status=$?
echo
cat "$out/table.md"
echo
echo "Machine and run: $out/machine.txt; raw outputs: $out/<line>.txt; durations: $out/durations.txt"
if [ "$profile" = 1 ]; then echo "CPU profiles: go tool pprof -top $out/<line>.test $out/<line>.cpu.pprof"; fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "bench.sh: failed: ${failed[*]}" >&2
	exit 1
fi
exit $status
