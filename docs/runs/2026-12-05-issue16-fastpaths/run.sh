#!/usr/bin/env bash
# One sitting: every A/B of issue 16's fast-path removals, builds alternated.
cd /tmp/ab/src-778791f/bench
out=/tmp/ab/out; mkdir -p $out
{ date -u; uptime; nproc; grep -m1 'model name' /proc/cpuinfo; /usr/local/go/bin/go version; } > $out/machine.txt
for round in 1 2 3; do
  for c in 778791f 96127c6 fb53200 b2a7c14 cc2a630; do
    /tmp/ab/bench-$c.test -test.run '^$' -test.bench '^BenchmarkStatusHandler$' -test.count 3 -test.benchtime 1s -ferry.cars=200000 >> $out/handler-$c.txt 2>&1
  done
done
echo "handler done $(date -u) $(uptime)" >> $out/machine.txt
for round in 1 2 3; do
  for c in 778791f cc2a630; do
    /tmp/ab/bench-$c.test -test.run '^$' -test.bench '^BenchmarkReplay$' -test.benchtime 1x -test.timeout 30m -ferry.cars=300000 >> $out/replay-$c.txt 2>&1
    /tmp/ab/bench-$c.test -test.run '^$' -test.bench '^BenchmarkIngest$' -test.benchtime 1x -test.timeout 30m -ferry.cars=300000 >> $out/ingest-$c.txt 2>&1
  done
done
echo "replay+ingest done $(date -u) $(uptime)" >> $out/machine.txt
for bin in 778791f nomem nomem-limit; do
  fb=/tmp/ab/ferry-$bin; env=()
  [ $bin = nomem-limit ] && { fb=/tmp/ab/ferry-nomem; env=(GOMEMLIMIT=512MiB); }
  env "${env[@]}" /tmp/ab/bench-778791f.test -test.run '^$' -test.bench '^BenchmarkServe$/memory' -test.benchtime 1x -test.timeout 30m -ferry.cars=300000 -ferry.settle=45s -ferry.ferry-bin=$fb -ferry.loadgen-bin=/tmp/ab/loadgen >> $out/memory-$bin.txt 2>&1
done
echo "all done $(date -u) $(uptime)" >> $out/machine.txt
