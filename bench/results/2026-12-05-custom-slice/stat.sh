#!/bin/bash
# stat.sh TAG SLICE_NS : perf stat of switches and syscalls per sidecar at 2000/s two hops
cd /work/main
TAG=$1; SL=$2
ip netns del tbench-client 2>/dev/null; ip netns del tbench-server 2>/dev/null
target/release/trellis-bench run --scenarios trellis-2hop-mtls --workloads http1 --loads 2000 --repeats 1 --duration 16s --warmup 2s --out /tmp/slice/sout-$TAG > /tmp/slice/sbench-$TAG.log 2>&1 &
B=$!
sleep 8
for p in $(pgrep -x trellis-proxy); do
  [ "$SL" != 0 ] && /tmp/slice/setslice $p $SL > /dev/null
  who=$(tr '\0' ' ' < /proc/$p/cmdline | grep -o 'sa/[a-z]*' | head -1 | cut -d/ -f2)
  perf stat -x, -e sched:sched_switch,raw_syscalls:sys_enter,context-switches -p $p -o /tmp/slice/stat-$TAG-$who.csv -- sleep 4 &
done
wait $B
for f in /tmp/slice/stat-$TAG-*.csv; do echo "$f: $(grep -v '^#' $f | awk -F, '{printf "%s=%.2f/req ", $3, $1/8000}')"; done
