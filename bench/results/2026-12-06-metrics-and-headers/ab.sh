#!/bin/bash
# Interleaved A/B of two proxy builds: one and two hops at 2,000 req/s and at the knee,
# five rounds, the order alternating. OLD and HEAD are directories holding
# trellis-proxy, trellis-proxy-init and trellis-controller (--trellis-bin); OUT gets
# one folder per run, old-rN or head-rN.
#   OLD=/path/old HEAD=/path/head OUT=/path/out bash ab.sh
set -euo pipefail
: "${OLD:?}" "${HEAD:?}" "${OUT:?}"
cd "$(git rev-parse --show-toplevel)"
for round in 1 2 3 4 5; do
  if [ $((round % 2)) = 1 ]; then order="old head"; else order="head old"; fi
  for v in $order; do
    if [ "$v" = old ]; then bin=$OLD; else bin=$HEAD; fi
    target/release/trellis-bench run --trellis-bin "$bin" \
      --scenarios trellis-1hop,trellis-2hop-mtls --workloads http1 --loads 2000,max \
      --repeats 1 --duration 5s --warmup 1s --out "$OUT/$v-r$round"
  done
done
