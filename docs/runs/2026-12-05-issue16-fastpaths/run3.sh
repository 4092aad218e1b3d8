#!/usr/bin/env bash
cd /tmp/ab/src-778791f/bench
out=/tmp/ab/out
while pgrep -f 'run2.sh$' >/dev/null; do sleep 2; done
for round in 1 2 3; do
  for c in 778791f cc2a630; do
    /tmp/ab/bench-$c.test -test.run '^$' -test.bench '^BenchmarkStatusHandler$' -test.count 3 -test.benchtime 1s -ferry.cars=200000 >> $out/handler-$c.txt 2>&1
  done
done
echo "part 3 done $(date -u) $(uptime)" >> $out/machine.txt
