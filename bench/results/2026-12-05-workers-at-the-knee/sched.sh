#!/bin/bash
# sched.sh TAG WORKERS: perf sched record (1 s) at the one-hop knee
cd /work/main
TAG=$1; W=$2
ip netns del tbench-client 2>/dev/null; ip netns del tbench-server 2>/dev/null
target/release/trellis-bench run --proxy-workers $W --scenarios ${SC:-trellis-1hop} --workloads http1 --loads max --repeats 1 --duration 14s --warmup 1s --out /tmp/prof/sch-$TAG > /tmp/prof/sch-$TAG.log 2>&1 &
B=$!
sleep 9
perf sched record -o /tmp/prof/sched-$TAG.data -- sleep 1 > /dev/null 2>&1
wait $B
grep " max " /tmp/prof/sch-$TAG.log | tail -1 | cut -c1-150
