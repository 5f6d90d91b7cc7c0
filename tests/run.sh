#!/usr/bin/env bash
# Runs every Trellis test: unit tests of each crate and the end-to-end tests that put
# the real binaries in network namespaces. Run it as root on Debian: it installs the
# few packages the end-to-end tests drive (iproute2, iptables, nftables, tcpdump,
# util-linux's setpriv, and the reference proxies haproxy and nginx) when they are
# missing. Without root the end-to-end tests skip with a
# reason, unless TRELLIS_E2E=require, when they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v ip >/dev/null || packages+=(iproute2)
command -v iptables-restore >/dev/null || packages+=(iptables)
command -v tcpdump >/dev/null || packages+=(tcpdump)
command -v setpriv >/dev/null || packages+=(util-linux)
command -v nft >/dev/null || packages+=(nftables)
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

# The end-to-end tests run the binaries of every crate, so build them all first.
cargo build --workspace --bins
cargo test --workspace "$@"
