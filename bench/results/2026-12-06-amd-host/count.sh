#!/bin/bash
# Counts a proxy's system calls and context switches at a load: starts a 20 s run of
# SCENARIO (http1) at LOAD, and 10 s into it attaches `perf stat` for 5 s to every
# process named PROCESS. EXTRA passes more options to trellis-bench.
#   bash count.sh trellis-1hop trellis-proxy max
#   EXTRA="--proxy-workers 1" bash count.sh trellis-1hop trellis-proxy max
#   bash count.sh haproxy-1hop haproxy max
set -euo pipefail
S=$1; P=$2; L=${3:-max}
cd "$(git rev-parse --show-toplevel)"
target/release/trellis-bench run --scenarios "$S" --workloads http1 --loads "$L" --repeats 1 \
  --duration 20s --warmup 2s ${EXTRA:-} --out "/tmp/count-$S" > "/tmp/count-$S.log" 2>&1 &
sleep 10
pids=$(pgrep -x "$P" | paste -sd,)
echo "pids $pids"
perf stat -e raw_syscalls:sys_enter,sched:sched_switch,sched:sched_wakeup,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_futex \
  -p "$pids" -- sleep 5 2>&1 | grep -v '^$'
wait
grep " $L " "/tmp/count-$S.log" | head -2
