#!/bin/bash
# usage: [SC=scenario] [OUT=dir] profile.sh LOAD TAG [FREQ]: perf record on the
# sidecars for 6 s, 12 s into a 20 s run, and the requests they served meanwhile
# (their request_total); profile-compare.py A B then prints µs per request per function.
cd "$(git rev-parse --show-toplevel)"
OUT=${OUT:-/tmp/trellis-profile}; mkdir -p "$OUT"
LOAD=$1; TAG=$2; F=${3:-4999}
ip netns del tbench-client 2>/dev/null; ip netns del tbench-server 2>/dev/null
target/release/trellis-bench run --scenarios ${SC:-trellis-2hop-mtls} --workloads http1 --loads $LOAD --repeats 1 --duration 20s --warmup 2s --out $OUT/out-$TAG > $OUT/bench-$TAG.log 2>&1 &
B=$!
sleep 12
PIDS=$(pgrep -x trellis-proxy | paste -sd,)
for p in $(pgrep -x trellis-proxy); do echo "$p $(tr '\0' ' ' < /proc/$p/cmdline | grep -o 'sa/[a-z]*' | head -1)"; done > $OUT/pids-$TAG
req() { ip netns exec tbench-client curl -s http://10.250.7.2:4191/metrics | awk '/^request_total/ {s+=$2} END {print s}'; }
r0=$(req)
perf record -q -e cpu-clock -F $F -g -p $PIDS -o $OUT/perf-$TAG.data -- sleep 6 2>/dev/null
r1=$(req)
echo "requests in window: $((r1-r0))" | tee $OUT/req-$TAG
wait $B
grep -E "trellis-" $OUT/bench-$TAG.log | tail -1
