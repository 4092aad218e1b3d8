#!/usr/bin/env bash
cd /tmp/ab/src-778791f/bench
out=/tmp/ab/out4; mkdir -p $out
echo "start $(date -u) $(uptime)" > $out/machine.txt
for round in 1 2; do
  for c in 778791f 96127c6 fb53200 b2a7c14 cc2a630; do
    /tmp/ab/bench-$c.test -test.run '^$' -test.bench '^BenchmarkStatusHandler$' -test.count 3 -test.benchtime 1s -ferry.cars=200000 >> $out/handler-$c.txt 2>&1
  done
done
echo "done $(date -u) $(uptime)" >> $out/machine.txt
