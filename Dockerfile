# twilio-insights-exporter: build with
#   podman build -t twilio-insights-exporter:0.1.0 .      (or docker build)
# Two stages: the first builds a virtualenv with pip, the second copies only that virtualenv onto
# a clean slim Python, without pip, compilers or the source tree. No `# syntax=` line: nothing here
# needs a newer frontend, and fetching one needs a registry a build may not reach.
# tests/test_image.py builds and runs this file with podman on every `make test`.

# Both stages must use the same Python: the virtualenv's interpreter links to the base's python,
# and the bytecode compiled in the first stage is for that interpreter.
# Pin a digest in production: --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A CA bundle for pip when the package index is reached through a TLS-inspecting proxy: mount the
# host's bundle read-only and name it, e.g.
#   podman build -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CA_BUNDLE=/run/host-ca.crt .
ARG PIP_CA_BUNDLE=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Only what the package build reads (.dockerignore keeps everything else out of the context).
COPY constraints.txt pyproject.toml README.md ./
COPY exporter/ ./exporter/
# Every version pinned by constraints.txt (the same file `make test` installs with), the build
# backend included (PIP_CONSTRAINT reaches pip's isolated build environment, -c does not), so two
# builds install the same code. Every dependency ships manylinux wheels: no compiler is needed.
# Bytecode is compiled here, once, with unchecked hashes: the root filesystem is read-only at run
# time, so without it every start would compile every module in memory again.
RUN if [ -n "$PIP_CA_BUNDLE" ]; then export PIP_CERT="$PIP_CA_BUNDLE"; fi \
    && PIP_CONSTRAINT=/src/constraints.txt /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="twilio-insights-exporter" \
      org.opencontainers.image.description="Twilio Voice Insights participant summaries as Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# No build tools in the final image: the base's own pip goes too (nothing installs at run time).
RUN python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel \
    && groupadd --system --gid 65532 exporter \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter
COPY --from=build /opt/venv /opt/venv
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only (the bytecode is already there);
# PYTHONUNBUFFERED: log lines reach `kubectl logs` as they are written.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# 9802: /metrics, /-/healthy, /-/ready (internal). 8080: the webhook Twilio calls.
EXPOSE 9802 8080
# The exporter handles SIGTERM itself (stops the webhook listener first), so it can be PID 1.
ENTRYPOINT ["twilio-insights-exporter"]
