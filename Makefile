# Two commands a new user needs: `make demo` and `make test`. Each sets itself up (.venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BROWSER_STAMP := $(VENV)/.browser

.PHONY: demo test lint samples bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The CPU build of torch that lies on disk here; users elsewhere keep their own torch (>=2.4).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@# The framework extras come after the torch pin, so that they do not pull a CUDA torch.
	$(PY) -m pip install -q -e ".[dev,samples,lightning,transformers]"
	touch $(STAMP)

# Headless Chromium for the browser tests of the reports (Debian packages; needs root or sudo).
$(BROWSER_STAMP): $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }
	touch $(BROWSER_STAMP)

demo: $(STAMP)
	$(PY) -m sample_runs.demo --out demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint $(BROWSER_STAMP)
	$(VENV)/bin/pytest -q

samples: $(STAMP)
	$(PY) -m sample_runs.make_samples --out sample_runs/logs

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks.recorder_overhead
	$(PY) -m benchmarks.analysis_speed
	$(PY) -m benchmarks.detection --write
	$(PY) -m benchmarks.report_scale

clean:
	rm -rf $(VENV) demo build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
