"""Instructions per request, from two callgrind runs of one sidecar that differ only
in how many requests they served: (long - short) / requests, so that start-up and
idle work cancel out.

    python3 per-request.py SHORT.callgrind LONG.callgrind REQUESTS crate
    python3 per-request.py SHORT.callgrind LONG.callgrind REQUESTS inc|exc [TOP]

`crate` sums by crate; code of the standard library inlined into a crate's function
(hash maps, atomics, drops) counts for the crate whose function it ran in. `inc` and
`exc` list functions with and without what they call.
"""
import collections
import re
import subprocess
import sys


def load(path, inclusive):
    """The program's total and each function's count ("file:function" -> Ir)."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--tree=none", "--auto=no",
         f"--inclusive={'yes' if inclusive else 'no'}", path],
        capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    total = 0
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$', line)
        if not m:
            continue
        n = int(m.group(1).replace(',', ''))
        name = re.sub(r' \[.*\]$', '', m.group(2))
        if 'PROGRAM TOTALS' in name:
            total = n
        else:
            counts[name] += n
    return total, counts


def crate_of(name):
    path, _, function = name.partition(':')
    crate = re.search(r'index\.crates\.io-[0-9a-f]+/([a-z0-9_-]+?)-\d', path)
    if crate:
        return crate.group(1)
    if 'jemalloc' in path:
        return 'jemalloc'
    if path.startswith('/work/main/') or path.startswith('proxy/'):
        return 'trellis'
    if 'memmove' in path or 'memcpy' in path:
        return 'memcpy (libc)'
    if '/rustc/' in path or path.startswith('library/') or '/rust/deps/' in path:
        # "<h2::proto::X as core::Y>::poll" ran in h2
        owner = re.match(r'[<&\s]*(?:dyn\s+)?([a-z_][a-z0-9_]*)::', function)
        return (owner.group(1).replace('_', '-') if owner else 'std') + ' (std inlined)'
    if path.startswith('./'):
        return 'libc'
    return 'other'


def by_crate(counts):
    crates = collections.Counter()
    for name, n in counts.items():
        crates[crate_of(name)] += n
    return crates


short_path, long_path, requests, mode = sys.argv[1:5]
top = int(sys.argv[5]) if len(sys.argv) > 5 else 50
requests = int(requests)
short_total, short = load(short_path, mode == 'inc')
long_total, long = load(long_path, mode == 'inc')
if mode == 'crate':
    short, long = by_crate(short), by_crate(long)
print(f"{(long_total - short_total) / requests:9.0f}  in all")
diff = {k: (long[k] - short[k]) / requests for k in set(short) | set(long)}
for name, per_request in sorted(diff.items(), key=lambda x: -x[1])[:top]:
    if abs(per_request) >= 100:
        print(f"{per_request:9.0f}  {name[:200]}")
