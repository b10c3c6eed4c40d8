# Two commands a new user needs: `make demo` and `make test`. Each sets itself up (.venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint samples bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The CPU build of torch that lies on disk here; users elsewhere keep their own torch (>=2.4).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,samples,bench]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo/runs
	$(PY) -m sample_runs.cnn_digits --root demo/runs
	$(VENV)/bin/gradlog ls demo/runs

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

samples: $(STAMP)
	$(PY) -m sample_runs.make_samples --out sample_runs/logs

bench: $(STAMP)
	$(PY) -m benchmarks.recorder_overhead

clean:
	rm -rf $(VENV) demo build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
