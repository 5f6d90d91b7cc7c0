#!/bin/bash
# Counts the instructions each sidecar executes for a fixed number of requests:
# makes a --trellis-bin directory whose trellis-proxy runs the real one under
# valgrind's callgrind, then one 200 req/s run of SCENARIO (12 s with the warm-up:
# 2,400 requests). Instruction counts do not depend on the machine's noise, so two
# builds compare exactly; the counts cover user space only (no kernel).
# DUR (default 10s) sets the measured time; its output files then carry it in their
# names, so that runs of two lengths can be compared (../2026-12-06-amd-host/).
#   BIN=/dir/of/the/build TAG=old SCENARIO=trellis-1hop OUT=/path/out bash callgrind.sh
#   BIN=... TAG=head SCENARIO=trellis-2hop-mtls OUT=/tmp/cg DUR=30s bash callgrind.sh
set -euo pipefail
: "${BIN:?}" "${TAG:?}" "${SCENARIO:?}" "${OUT:?}"
name="$TAG-$SCENARIO${DUR:+-$DUR}"
cd "$(git rev-parse --show-toplevel)"
wrapped="$OUT/bin-$TAG"
mkdir -p "$wrapped" "$OUT/callgrind"
# The sidecars run as the proxy's own user: the output directory must let it write.
chmod 1777 "$OUT/callgrind"
cp "$BIN/trellis-proxy-init" "$BIN/trellis-controller" "$wrapped/"
cat > "$wrapped/trellis-proxy" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind/$name.%p --dump-instr=no $BIN/trellis-proxy "\$@"
WRAP
chmod +x "$wrapped/trellis-proxy"
target/release/trellis-bench run --trellis-bin "$wrapped" --scenarios "$SCENARIO" \
  --workloads http1 --loads 200 --repeats 1 --duration "${DUR:-10s}" --warmup 2s \
  --out "$OUT/run-$name"
for f in "$OUT"/callgrind/"$name".*; do
  echo "== $f"
  callgrind_annotate --inclusive=yes "$f" | grep -E 'PROGRAM TOTALS|(outbound|inbound)::(Http)?(Out|In)bound::proxy::\{\{closure\}\} \[' || true
done
