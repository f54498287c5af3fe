# The two commands of the README:
#   make run   installs the exporter into .venv and runs it
#   make test  installs everything the tests need (Debian's prometheus for the server and
#              promtool, Python packages into .venv) and runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
ARGS   ?=

.PHONY: run test test-deps venv bench generate

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

venv: $(VENV)/bin/python

run: venv
	$(VENV)/bin/pip install --quiet .
	$(VENV)/bin/twilio-insights-exporter $(ARGS)

# Debian's prometheus package brings the real server and promtool; root installs it, anyone
# else must have it already (the check below says so instead of failing obscurely later).
test-deps: venv
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else \
	    echo "prometheus and promtool are needed: sudo apt-get install prometheus" >&2; exit 1; \
	  fi; \
	fi
	$(VENV)/bin/pip install --quiet -e '.[test]'

test: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest $(ARGS)

# Regenerate the dashboards, the rules file and the README's configuration table from their
# Python sources (the test suite fails when a committed copy differs).
generate: venv
	$(VENV)/bin/python -m dashboards.generate
	$(VENV)/bin/python scripts/readme_tables.py
	$(VENV)/bin/python helm/generate_readme.py

# Every benchmark of docs/performance.md, printed as one table (needs Debian's wrk and taskset:
# apt-get install wrk util-linux). ARGS=--quick for a shorter run.
bench: venv
	$(VENV)/bin/pip install --quiet -e .
	$(VENV)/bin/python -m bench $(ARGS)
	$(VENV)/bin/python -m bench.overload $(ARGS)
