# SpectraMind calibration diagnostics -- every target builds what it needs in .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
PORT   ?= 5006

.PHONY: app demo test bench clean help chromium

help:
	@echo "make app    - set up .venv and serve the diagnostics app on the built-in demo planet"
	@echo "make demo   - set up .venv and calibrate the built-in demo planet (nominal profile)"
	@echo "make test   - set up .venv (+ Debian chromium) and run the whole test suite"
	@echo "make bench  - benchmarks on a full-size demo planet (slow: minutes)"

$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

# The organisers' reference steps (oracle in tests/benchmarks) declare tensorflow as a
# dependency they do not need for signal_correction_functions: install without deps.
$(VENV)/.test: $(VENV)/.runtime
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps "ariel-data-preprocessing==1.5.*"
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

app: $(VENV)/.runtime
	$(VENV)/bin/spectramind app --port $(PORT)

demo: $(VENV)/.runtime
	$(VENV)/bin/spectramind calibrate --config-name calib/nominal run_dir=runs/demo

# engine and app unit tests on both cores (longest first, idle workers steal the rest); meanwhile the
# real-browser tests, then the notebooks executed headless (they mostly wait on the app and the browser, so
# they overlap the unit tests instead of adding their wall time; their log is shown when they end).
# The target fails if any of the three fails.
test: $(VENV)/.test chromium
	@mkdir -p test-artifacts
	@( $(PY) -m pytest -x -q tests/test_app_browser.py && $(PY) -m pytest -x -q --nbmake notebooks ) \
	  > test-artifacts/browser-and-notebooks.log 2>&1 & side=$$!; \
	$(PY) -m pytest -x -q -n 2 --dist worksteal tests --ignore=tests/test_app_browser.py; unit=$$?; \
	wait $$side; side_rc=$$?; \
	echo "---- browser tests and notebooks (test-artifacts/browser-and-notebooks.log) ----"; \
	cat test-artifacts/browser-and-notebooks.log; \
	test $$unit -eq 0 && test $$side_rc -eq 0

bench: $(VENV)/.test
	$(PY) benchmarks/bench_detector.py
	$(PY) benchmarks/bench_science.py

clean:
	rm -rf runs test-artifacts .pytest_cache
