#!/usr/bin/env bash
cd /tmp/ab/src-778791f/bench
out=/tmp/ab/out5; mkdir -p $out
echo "start $(date -u) $(uptime)" > $out/machine.txt
for round in 1 2 3; do
  for c in 778791f 755a4c7; do
    /tmp/ab/bench-$c.test -test.run '^$' -test.bench '^BenchmarkStatusHandler$' -test.count 2 -test.benchtime 1s -ferry.cars=200000 >> $out/handler-$c.txt 2>&1
  done
done
echo "done $(date -u) $(uptime)" >> $out/machine.txt
