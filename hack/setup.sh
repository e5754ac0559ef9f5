#!/usr/bin/env bash
# Idempotent set-up of everything the demo and the tests need, on a fresh machine or a warm one:
#   1. .venv with the project (editable) and its dev extras (torch, kopf, kubernetes, tritonclient...)
#   2. the pinned Go-built binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#      kubectl, kwok, helm) in ~/.cache/modeldeploy/bin/<key>/ (hack/build-bins.sh)
#   3. the real Triton server from the nvidia-pytriton wheel (hack/install-triton.sh)
# Each step is skipped quickly when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
t0=$(date +%s)
say() { echo "[setup] $(( $(date +%s) - t0 ))s: $*" >&2; }

py="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
# shellcheck source=/dev/null
. .venv/bin/activate
stamp=.venv/.modeldeploy-deps
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  say "installing Python dependencies (first time: torch and friends, a few minutes)"
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
else
  say "Python dependencies up to date"
fi
say "Go-built control-plane binaries"
hack/build-bins.sh >/dev/null
say "Triton server (nvidia-pytriton wheel)"
hack/install-triton.sh >/dev/null
say "ready"
