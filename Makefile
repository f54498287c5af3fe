# The two commands of the README:
#   make run   installs the exporter into .venv and runs it
#   make test  installs everything the tests need (Debian's prometheus for the server and
#              promtool, Python packages into .venv) and runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
ARGS   ?=

.PHONY: run test test-deps venv bench generate constraints mutants demo release

# Quiet recipes (@): what `make run` prints is the exporter's own output, as the README shows it.
$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --upgrade pip

venv: $(VENV)/bin/python

run: venv
	@$(VENV)/bin/pip install --quiet --constraint constraints.txt .
	@$(VENV)/bin/twilio-insights-exporter $(ARGS)

# Signed synthetic deliveries of every summary type (and a sink test event) to a running exporter,
# so that its dashboards fill: make demo ARGS="--url http://127.0.0.1:8080/events" with
# TWILIO_AUTH_TOKEN set to the exporter's token (python -m exporter.demo --help for the rest).
demo: venv
	@$(VENV)/bin/pip install --quiet --constraint constraints.txt .
	@$(VENV)/bin/python -m exporter.demo $(ARGS)

# Try pull mode or Kinesis mode with no Twilio or AWS account: the local fake the tests use (the
# Voice Insights REST API, or kinesalite with a stream), filled with synthetic Flex calls, and the
# exporter against it in the foreground; it prints where /metrics is. Ctrl-C stops both.
# ARGS go to tests/try_locally.py (--calls, --every, --metrics-port), the rest to the exporter.
.PHONY: try-pull try-kinesis
# (The fakes live under tests/ and need the test extras: installed once, quietly.)
TRY_DEPS = $(VENV)/bin/python -c 'import pytest, exporter' 2>/dev/null || $(VENV)/bin/pip install --quiet --constraint constraints.txt -e '.[test]'
try-pull: venv
	@$(TRY_DEPS)
	@$(VENV)/bin/python -m tests.try_locally pull $(ARGS)

try-kinesis: venv
	@$(TRY_DEPS)
	@command -v npm >/dev/null || { echo "node and npm are needed for kinesalite: sudo apt-get install nodejs npm" >&2; exit 1; }
	@[ -d tests/kinesalite/node_modules ] || npm ci --prefix tests/kinesalite --no-audit --no-fund --loglevel=error
	@$(VENV)/bin/python -m tests.try_locally kinesis $(ARGS)

# Debian's prometheus package brings the real server and promtool; podman, runc and debootstrap
# build and run the image (tests/test_image.py); docker-registry is the local registry `make release`
# pushes to in tests/test_release.py. Root installs them, anyone else must have them already (the
# check below says so instead of failing obscurely later).
TEST_TOOLS = prometheus promtool podman runc debootstrap docker-registry wrk
test-deps: venv
	@missing=""; for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus podman runc debootstrap docker-registry wrk >/dev/null; \
	  else \
	    echo "prometheus, promtool, podman, runc, debootstrap, docker-registry and wrk are needed: sudo apt-get install prometheus podman runc debootstrap docker-registry wrk" >&2; exit 1; \
	  fi; \
	fi
	$(VENV)/bin/pip install --quiet --constraint constraints.txt -e '.[test]'
	@# kinesalite, the local Kinesis-compatible server of tests/test_kinesis*.py (npm, from Debian's nodejs when root)
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else \
	    echo "node and npm are needed for the Kinesis tests: sudo apt-get install nodejs npm" >&2; exit 1; \
	  fi; \
	fi
	npm ci --prefix tests/kinesalite --no-audit --no-fund --loglevel=error

# Build the image (every architecture this machine can build) and package the chart, then push both
# to one registry: the image as REGISTRY/twilio-insights-exporter:<pyproject version>, the chart as
# oci://REGISTRY/charts/twilio-insights-exporter:<chart version> (docs/release.md).
#   make release REGISTRY=registry.example.com/monitoring [PLATFORMS=linux/amd64,linux/arm64]
#                [PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:...] [CA_BUNDLE=/path/ca.crt] [PLAIN_HTTP=1]
REGISTRY ?=
PLATFORMS ?=
PYTHON_IMAGE ?=
CA_BUNDLE ?=
PLAIN_HTTP ?=
release: venv
	@$(VENV)/bin/pip install --quiet --constraint constraints.txt helm-python-sdk PyYAML
	$(VENV)/bin/python scripts/release.py --registry '$(REGISTRY)' \
	  $(if $(PLATFORMS),--platforms '$(PLATFORMS)') $(if $(PYTHON_IMAGE),--python-image '$(PYTHON_IMAGE)') \
	  $(if $(CA_BUNDLE),--ca-bundle '$(CA_BUNDLE)') $(if $(PLAIN_HTTP),--plain-http)

# The suite runs on every core (pytest-xdist), one module per worker at a time: a module's tests
# share its fixtures (the real Prometheus stack, kinesalite) and run in order; every process a test
# starts listens on a free port and writes under its own temporary directory.
# PYTEST_JOBS=0 runs it in one process.
PYTEST_JOBS ?= auto
test: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -n $(PYTEST_JOBS) --dist loadfile $(ARGS)

# Regenerate the dashboards, the rules files and the tables of docs/ from their
# Python sources (the test suite fails when a committed copy differs).
generate: venv
	$(VENV)/bin/pip install --quiet --constraint constraints.txt -e .
	$(VENV)/bin/python -m dashboards.generate
	$(VENV)/bin/python scripts/readme_tables.py
	$(VENV)/bin/python helm/generate_readme.py

# Every benchmark of docs/performance.md, printed as one table (needs Debian's wrk and taskset:
# apt-get install wrk util-linux). ARGS=--quick for a shorter run.
bench: venv
	$(VENV)/bin/pip install --quiet -e .
	$(VENV)/bin/python -m bench $(ARGS)
	$(VENV)/bin/python -m bench.overload $(ARGS)
	$(VENV)/bin/python -m bench.edge $(ARGS)
	$(VENV)/bin/python -m bench.join_memory $(ARGS)
	$(VENV)/bin/python -m bench.scrapes $(ARGS)

# constraints.txt pins every Python package the image and the tests install (the Dockerfile and
# test-deps both install with it). After changing a dependency in pyproject.toml: make constraints.
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet --upgrade pip setuptools
	.venv-constraints/bin/pip install --quiet '.[test]'
	{ echo "# Generated by 'make constraints' from pyproject.toml: every version the image and the tests install."; \
	  .venv-constraints/bin/pip freeze --all --exclude-editable | grep -v -i -E '^(pip==|twilio-insights-exporter)'; } > constraints.txt
	rm -rf .venv-constraints

# Mutation testing of the core (labels, dedup, pipeline, parse, subjects, durable, recorder, webhook, families) with mutmut,
# configured in pyproject.toml's [tool.mutmut]. Not in CI: the whole run takes long (docs/mutants.md
# has the figures and what each surviving mutant is). ARGS narrows it: ARGS='exporter.dedup.*'.
mutants: venv
	$(VENV)/bin/pip install --quiet --constraint constraints.txt -e '.[test]'
	$(VENV)/bin/pip install --quiet mutmut==3.8.1
	rm -rf mutants
	$(VENV)/bin/mutmut run $(ARGS)
	$(VENV)/bin/mutmut results
