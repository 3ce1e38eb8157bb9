# Entry points: `make study` (set up, then run the main job), `make test` (everything, what CI
# runs) and `make check` (the fast lane: lint, types and every module's unit tests; no Ray, no
# server, no study).
PYTHON ?= python3
# Test processes of `make test` (pytest-xdist); the two-node cluster tests share one of them.
WORKERS ?= 2
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study report train test check flaky lint bench clean constraints gpu-check

# constraints.txt: the exact versions the tests pass with (pyproject keeps the ranges a user's
# own environment may take). Refresh it with `make constraints` after a deliberate upgrade.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^rra-study' > constraints.txt

# The main job: the ablation study on the embedded default (local Ray, CPU, synthetic data,
# SQLite MLflow store under runs/).
study: $(STAMP)
	$(BIN)/python -m study.run --space ablation $(ARGS)

# The report of a finished study (it is also written at the end of every study):
# make report ARGS="--name ablation-20261124-101500 [--confirm-seeds 3]"
report: $(STAMP)
	$(BIN)/python -m study.report $(ARGS)

train: $(STAMP)
	$(BIN)/python -m trainables.train $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup --durations=15 $(ARGS)

# mypy (one core, about as long as the unit tests on a cold cache) runs beside pytest (the other).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy & types=$$!; \
	$(BIN)/python -m pytest tests/unit --durations=15 $(ARGS); tests=$$?; \
	wait $$types; typed=$$?; \
	test $$tests -eq 0 && test $$typed -eq 0

# How often each test of a lane fails over fresh pytest processes (benchmarks/flakiness.py):
# make flaky LANE=fast ROUNDS=10 ARGS="--out benchmarks/results/flakiness_fast.json"
LANE ?= fast
ROUNDS ?= 10
flaky: $(STAMP)
	$(BIN)/python -m benchmarks.flakiness --lane $(LANE) --rounds $(ROUNDS) $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput
	$(BIN)/python -m benchmarks.synthetic_gain

clean:
	rm -rf runs benchmarks/out .pytest_cache .mypy_cache .ruff_cache

# On a machine with a GPU: every CUDA path of the trial and its figures (benchmarks/acceptance/gpu_check.py).
gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks.acceptance.gpu_check $(ARGS)
