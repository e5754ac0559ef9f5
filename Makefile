# modeldeploy developer entry points. Every target sets up what it needs (hack/setup.sh is idempotent).
PY := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup demo test unit integration faults lint fmt typecheck crd crd-check bench cluster-up cluster-down clean

setup:
	hack/setup.sh

## The main job: local control plane + operator + example ModelDeployment + real Triton serving a torch model.
demo: setup
	$(PY) hack/demo.py

## Everything CI runs: lint, type check, unit and integration tests (real control plane, real Triton).
test: setup lint
	$(PYTEST) -m "" -p no:cacheprovider

## Fast unit tests only (no cluster, no Triton).
unit:
	$(PYTEST) -m "not integration"

integration: setup
	$(PYTEST) -m integration

## The fault suite (kill -9 of the operator, API-server restart, concurrent writers) and the
## quiet-period audit, at CI sizes; scale with MODELDEPLOY_FAULT_N / _KILLS / _WRITERS / _OUTAGE_S /
## _SEED and MODELDEPLOY_IDLE_N / _SECONDS. `make test` runs them too.
faults: setup
	$(PYTEST) -p no:cacheprovider -rA tests/operator/test_faults.py tests/operator/test_idle_requests.py tests/operator/test_stale_state.py tests/operator/test_drift_repair.py tests/operator/test_crd_watch.py tests/operator/test_memory.py

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

fmt:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck:
	.venv/bin/mypy

crd:
	.venv/bin/mdctl crd --write

## Every benchmark at its default size (each prints its figures; see the README's table).
bench: setup
	$(PY) bench/reconcile.py
	$(PY) bench/runtime_bench.py
	$(PY) bench/push_bench.py
	$(PY) bench/llm_bench.py
	$(PY) bench/fetch_bench.py
	$(PY) bench/coldstart_bench.py
	$(PY) bench/verify_bench.py

cluster-up: setup
	.venv/bin/mdctl cluster up

cluster-down:
	.venv/bin/mdctl cluster down

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache build *.egg-info .cache
