#!/bin/bash
# kstat.sh SCENARIO PROCNAME : perf stat of one proxy at the knee (max), per request
cd /work/main
SC=$1; PN=$2
ip netns del tbench-client 2>/dev/null; ip netns del tbench-server 2>/dev/null
target/release/trellis-bench run --scenarios $SC --workloads http1 --loads max --repeats 1 --duration 16s --warmup 2s --out /tmp/prof/k-$SC > /tmp/prof/k-$SC.log 2>&1 &
B=$!
sleep 9
P=$(pgrep -x $PN | head -1)
perf stat -x, -e sched:sched_switch,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_ctl -p $(pgrep -x $PN | paste -sd,) -o /tmp/prof/kstat-$SC.csv -- sleep 4
wait $B
grep -E "max " /tmp/prof/k-$SC.log | tail -1
RATE=$(grep -E "max " /tmp/prof/k-$SC.log | tail -1 | grep -o '[0-9]* req/s' | cut -d' ' -f1)
grep -v '^#' /tmp/prof/kstat-$SC.csv | awk -F, -v r=$RATE '$1 ~ /^[0-9]/ {printf "%s=%.3f ", $3, $1/(r*4)} END {print ""}'
