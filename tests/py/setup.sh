#!/usr/bin/env bash
# Makes the venv the end-to-end tests run their Python apps with: target/trellis-py,
# with the packages of tests/py/requirements.txt. Idempotent, and quick when the venv
# is already there with those packages. tests/run.sh runs it before cargo test.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/trellis-py
requirements=tests/py/requirements.txt
installed=$venv/requirements.txt

# Up to date: the same requirements were installed, and they still import (a venv
# outlives the interpreter it was made from only until that one is removed).
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$installed" &&
  "$venv/bin/python" -c 'import grpc, websockets' 2>/dev/null; then
  exit 0
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  echo "tests/py/setup.sh: $python is missing; on Debian: apt-get install -y python3 python3-venv" >&2
  exit 1
fi
# Debian's own python3 ships venv (with ensurepip) as a separate package.
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing python3-venv for the end-to-end tests' Python apps"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "tests/py/setup.sh: $python has no venv module; on Debian: apt-get install -y python3-venv (as root)" >&2
    exit 1
  fi
fi

echo "making the Python venv of the end-to-end tests in $venv"
"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$installed"
