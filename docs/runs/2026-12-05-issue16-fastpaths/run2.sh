#!/usr/bin/env bash
# Same sitting, second part: which change moves the replay line.
cd /tmp/ab/src-778791f/bench
out=/tmp/ab/out
while pgrep -f 'run.sh$' >/dev/null; do sleep 2; done
for round in 1 2; do
  for c in 778791f fb53200 634e071 cc2a630; do
    /tmp/ab/bench-$c.test -test.run '^$' -test.bench '^BenchmarkReplay$' -test.benchtime 1x -test.timeout 30m -ferry.cars=300000 >> $out/replay2-$c.txt 2>&1
  done
done
cd /tmp/ab/src-778791f/projections
for round in 1 2 3; do
  for c in 778791f 634e071; do
    /tmp/ab/proj-$c.test -test.run '^$' -test.bench '^BenchmarkSortedRun$' -test.count 2 >> $out/sortedrun-$c.txt 2>&1
  done
done
echo "part 2 done $(date -u) $(uptime)" >> $out/machine.txt
