# Two commands a new user needs: `make demo` and `make test`. Each sets itself up (.venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BROWSER_STAMP := $(VENV)/.browser

.PHONY: demo test test-min lint samples bench clean docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The CPU build of torch that lies on disk here; users elsewhere keep their own torch (>=2.4).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@# The extras come after the torch pin, so that they do not pull a CUDA torch.
	$(PY) -m pip install -q -e ".[torch,dev,samples,lightning,transformers,ray]"
	touch $(STAMP)

# A Java runtime for the Spark reader test (Debian package; needs root or sudo).
JAVA_STAMP := $(VENV)/.java

$(JAVA_STAMP): $(STAMP)
	@command -v java >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq default-jre-headless >/dev/null; }
	touch $(JAVA_STAMP)

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

# The whole suite, then the analysis/report tests again at the declared dependency floors.
test: lint $(BROWSER_STAMP) $(JAVA_STAMP)
	$(VENV)/bin/pytest -q
	$(MAKE) test-min

# The declared floor of every runtime dependency (pyproject.toml), in a venv of its own, with
# the local CPU torch: the analysis, report and CLI tests must pass there.
MIN_VENV ?= build/venv-min
test-min: $(STAMP)
	rm -rf $(MIN_VENV)
	$(PY) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q torch==2.13.0
	$(MIN_VENV)/bin/python -m pip install -q $$($(PY) -m tests.floors) "pytest>=8" "hypothesis>=6.100"
	$(MIN_VENV)/bin/python -m pip install -q --no-deps -e .
	$(MIN_VENV)/bin/python -m tests.floors --check
	@# Not here: the browser tests (selenium, a dev tool) and the tests of the optional Ray extra
	@# (make test runs both).
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/analysis tests/report \
	  tests/test_cli_exit.py tests/test_rundir.py tests/test_footer.py \
	  --ignore=tests/report/test_browser.py \
	  --ignore=tests/analysis/test_ray.py \
	  --deselect tests/analysis/test_executors.py::test_unreachable_cluster_is_a_clear_error_at_once \
	  --deselect tests/analysis/test_executors_cli.py::test_unreachable_cluster_and_conflicting_options_are_clean_errors

# docs/FORMAT.md's table reference, regenerated from gradlog/schema.py.
docs: $(STAMP)
	$(PY) -m gradlog.schema docs/FORMAT.md

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
