#!/usr/bin/env bash
# mypy over both packages. The folders are renamed at install time (operator/ -> modeldeploy,
# runtime/ -> modeldeploy_runtime), which mypy cannot follow through setuptools' editable finder,
# so give it a tree of symlinks with the import names.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tree=.cache/typecheck
mkdir -p "$tree"
ln -sfn ../../operator "$tree/modeldeploy"
ln -sfn ../../runtime "$tree/modeldeploy_runtime"
MYPYPATH="$tree" exec .venv/bin/mypy -p modeldeploy -p modeldeploy_runtime "$@"
