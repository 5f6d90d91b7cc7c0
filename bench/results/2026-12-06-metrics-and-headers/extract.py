"""Per build (the BUILD of each BUILD-rN folder under the directory given): each round's
rate and CPU µs per request per hop, with their mean and median."""
import json, glob, collections, statistics, sys
root = sys.argv[1]
rows = collections.defaultdict(list)
for path in sorted(glob.glob(f'{root}/*-*/results.json')):
    version, rnd = path.split("/")[-2].split("-r")
    d = json.load(open(path))
    for s in d['scenarios']:
        for c in s.get('cells') or []:
            load = 'max' if c['load'] == 'max' else f"{c['load']['rate']}/s"
            sm = c['summary']
            rows[(s['kind'], load, version)].append((int(rnd), sm['rate']['mean'], sm['cpu_us_per_request_per_hop']['mean'], sm['p99_ms']['mean'], sm['pooled']['p999_ms']))
for key in sorted(rows):
    r = sorted(rows[key])
    rates = [x[1] for x in r]; cpus = [x[2] for x in r]
    print(f"{key[0]:18} {key[1]:7} {key[2]:5} rate {statistics.mean(rates):9.0f} (med {statistics.median(rates):9.0f})  cpu/req/hop {statistics.mean(cpus):5.1f} (med {statistics.median(cpus):5.1f})  each: " + ' '.join(f"{x[1]:.0f}/{x[2]:.1f}" for x in r))
