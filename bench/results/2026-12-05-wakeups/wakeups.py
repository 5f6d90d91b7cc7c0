"""Where the wake-ups of a request run: reads a `perf sched record` capture and
prints, for each pair of waker and wakee among the app (the load generator's
`load-N` threads), the proxy's threads and the backend (`trellis-bench serve`),
how many wake-ups ran on the waker's own CPU and how many on the other one, with
the wakee's scheduling delay (wake-up to running) for each, and then each party's
runs (switch-ins) and the CPU time they took.

    python3 wakeups.py CAPTURE.data 'REGEX MATCHING THE PROXY THREADS'
"""
import collections
import re
import statistics
import subprocess
import sys

capture, proxy_threads = sys.argv[1], re.compile(sys.argv[2])
timehist = subprocess.run(['perf', 'sched', 'timehist', '-i', capture, '-w'],
                          capture_output=True, text=True, check=True).stdout.splitlines()[3:]


def party(name):
    if proxy_threads.match(name):
        return 'proxy'
    if name.startswith('load-'):
        return 'app'
    if name.startswith('trellis-bench'):
        return 'backend'
    return None


WAKEUP = re.compile(r'\s*[\d.]+\s+\[(\d+)\]\s+(\S+?)(?:\[[\d/]+\])?\s+awakened: (\S+?)\[')
SWITCH = re.compile(r'\s*[\d.]+\s+\[(\d+)\]\s+(\S+?)(?:\[[\d/]+\])?\s+[\d.]+\s+([\d.]+)\s+([\d.]+)')
woken_by = {}
delays = collections.defaultdict(list)
runs = collections.defaultdict(list)
for line in timehist:
    if m := WAKEUP.match(line):
        woken_by[m[3]] = (int(m[1]), m[2])
    elif m := SWITCH.match(line):
        cpu, name, delay_ms, run_ms = int(m[1]), m[2], float(m[3]), float(m[4])
        wakee = party(name)
        if wakee:
            runs[wakee].append(run_ms)
        if name in woken_by:
            waker_cpu, waker = woken_by.pop(name)
            if wakee and party(waker):
                where = 'same cpu' if waker_cpu == cpu else 'other cpu'
                delays[(party(waker), wakee, where)].append(delay_ms * 1000)
for (waker, wakee, where), v in sorted(delays.items()):
    if len(v) > 1:
        print(f'{waker:>7} wakes {wakee:<7} on the {where:<9}: {len(v):5d} wake-ups, '
              f'delay mean {statistics.mean(v):5.1f} us, p50 {statistics.median(v):5.1f}')
for who, v in sorted(runs.items()):
    print(f'{who}: {len(v)} runs, mean {1000 * statistics.mean(v):.1f} us, total {sum(v):.1f} ms')
