#!/bin/bash
# round.sh TAG SLICE_NS(0 = untouched) [SCENARIO]
cd /work/main
TAG=$1; SL=$2; SC=${3:-trellis-2hop-mtls}
ip netns del tbench-client 2>/dev/null; ip netns del tbench-server 2>/dev/null
if [ "$SL" != 0 ]; then
  ( for i in $(seq 1 400); do
      P=$(pgrep -x trellis-proxy); n=$(echo $P | wc -w)
      want=$([ $SC = trellis-1hop ] && echo 1 || echo 2)
      if [ "$n" -ge "$want" ]; then for p in $P; do /tmp/slice/setslice $p $SL; done; fi
      sleep 0.5
    done ) > /tmp/slice/set-$TAG.log 2>&1 &
fi
target/release/trellis-bench run --scenarios $SC --workloads http1 --loads 2000 --repeats 5 --duration 3s --warmup 2s --out /tmp/slice/out-$TAG > /tmp/slice/bench-$TAG.log 2>&1
python3 - "$TAG" <<'PY'
import json,sys
tag=sys.argv[1]
d=json.load(open(f'/tmp/slice/out-{tag}/results.json'))
for sc in d['scenarios']:
  for cell in sc['cells']:
    rows=[]
    for r in cell['runs']:
      n=r['load']['requests']
      rows.append(' '.join(f"{p['name'][14:]}={p['cpu_seconds']/n*1e6:.1f}/{p['scheduling']['changes']}" for p in r['proxies'])+f" p99={r['load']['p99_ms']}")
    print(tag, sc['kind'], '|', ' ; '.join(rows))
PY
