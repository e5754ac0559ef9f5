#!/usr/bin/env bash
# Install the real Triton Inference Server used by the runtime tests, the benchmark and the demo.
#
# What it does:
#   * installs the PyPI wheel `nvidia-pytriton==${PYTRITON_VERSION}` into the *active* Python
#     environment (or $PYTHON) with `pip install --no-deps`. The wheel ships a complete
#     `tritonserver` binary (pytriton/tritonserver/bin/tritonserver), its shared libraries
#     (nvidia_pytriton.libs/), the python backend (backends/python/libtriton_python.so) and one
#     python-backend stub per Python version (python_backend_stubs/<X.Y>/). We need none of the
#     pytriton Python dependencies: modeldeploy_runtime.triton starts the binary directly.
#   * uses a wheel already present in $PYTRITON_WHEEL_DIR (default /tmp/pytriton) when there is
#     one, so it works without network access; otherwise pip downloads it from PyPI.
#   * creates <venv>/triton-stub-env, the Python environment the python-backend stub runs in: the
#     stub of nvidia-pytriton 0.7.0 is built against the numpy 1.x C API and reads tensors wrongly
#     with numpy 2, so that venv holds numpy ${STUB_NUMPY} and a .pth that adds this venv's
#     site-packages *after* its own (torch, the runtime, ... stay importable from models).
#     modeldeploy_runtime.triton puts its bin/ first on tritonserver's PATH (the stub finds its
#     Python prefix through `python3` on PATH; it ignores PYTHONPATH).
#   * is idempotent: when the pinned version and the stub env are already there, it prints the
#     binary's path and exits immediately (no pip call).
#
# Usage: . .venv/bin/activate && hack/install-triton.sh
#        PYTHON=/path/to/python hack/install-triton.sh
# Afterwards: python -m modeldeploy_runtime.triton  (prints the binary, libs and stub it will use)
set -euo pipefail

PYTRITON_VERSION="${PYTRITON_VERSION:-0.7.0}"
PYTRITON_WHEEL_DIR="${PYTRITON_WHEEL_DIR:-/tmp/pytriton}"
STUB_NUMPY="${STUB_NUMPY:-1.26.4}"

if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
  py="$VIRTUAL_ENV/bin/python"
else
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [[ -x "$here/.venv/bin/python" ]]; then
    py="$here/.venv/bin/python"
  else
    py="$(command -v python3)"
  fi
fi

# Prints the tritonserver path when the pinned version is installed.
installed_binary() {
  (cd / && "$py" - "$PYTRITON_VERSION" <<'EOF'
import sys
from importlib import metadata
from pathlib import Path
try:
    dist = metadata.distribution("nvidia-pytriton")
except metadata.PackageNotFoundError:
    sys.exit(1)
if dist.version != sys.argv[1]:
    sys.exit(1)
binary = Path(str(dist.locate_file("pytriton/tritonserver/bin/tritonserver")))
if not binary.is_file():
    sys.exit(1)
print(binary)
EOF
  )
}

prefix="$(cd / && "$py" -c 'import sys; print(sys.prefix)')"
purelib="$(cd / && "$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
stub_env="${prefix}/triton-stub-env"

stub_env_ok() {
  [[ -x "$stub_env/bin/python3" ]] &&
    (cd / && "$stub_env/bin/python3" -c "import numpy, sys; sys.exit(numpy.__version__ != '${STUB_NUMPY}')") 2>/dev/null
}

make_stub_env() {
  echo "creating the python-backend stub environment ${stub_env} (numpy ${STUB_NUMPY})"
  rm -rf "$stub_env"
  "$py" -m venv --without-pip "$stub_env"
  local site
  site="$(cd / && "$stub_env/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$py" -m pip --python "$stub_env/bin/python3" install --quiet --no-deps "numpy==${STUB_NUMPY}"
  echo "import site; site.addsitedir('${purelib}')" >"$site/zz-modeldeploy-parent-env.pth"
}

if bin="$(installed_binary)" && stub_env_ok; then
  echo "nvidia-pytriton ${PYTRITON_VERSION} already installed: ${bin}"
  exit 0
fi

if ! installed_binary >/dev/null; then
  wheel=""
  if [[ -d "$PYTRITON_WHEEL_DIR" ]]; then
    wheel="$(ls "$PYTRITON_WHEEL_DIR"/nvidia_pytriton-"${PYTRITON_VERSION}"-*.whl 2>/dev/null | head -n1 || true)"
  fi
  if [[ -n "$wheel" ]]; then
    echo "installing ${wheel} (--no-deps) into ${prefix}"
    "$py" -m pip install --quiet --no-deps "$wheel"
  else
    echo "installing nvidia-pytriton==${PYTRITON_VERSION} from PyPI (--no-deps) into ${prefix}"
    "$py" -m pip install --quiet --no-deps "nvidia-pytriton==${PYTRITON_VERSION}"
  fi
fi

if ! bin="$(installed_binary)"; then
  echo "error: nvidia-pytriton ${PYTRITON_VERSION} installed but pytriton/tritonserver/bin/tritonserver is missing" >&2
  exit 1
fi
chmod +x "$bin" 2>/dev/null || true
stub_env_ok || make_stub_env
echo "tritonserver: ${bin}"
echo "stub env:     ${stub_env}"
