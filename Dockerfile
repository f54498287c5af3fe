# syntax=docker/dockerfile:1
#
# twilio-insights-exporter: build with
#   docker build -t twilio-insights-exporter:0.1.0 .
# Two stages: the first builds a virtualenv with pip, the second copies only that virtualenv onto
# a clean slim Python, without pip, compilers or the source tree.

# Both stages must use the same Python: the virtualenv's interpreter links to /usr/local/bin/python.
# Pin a digest in production: --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Only what the package build reads (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY exporter/ ./exporter/
# Every dependency ships manylinux wheels: no compiler is needed, even in this stage.
RUN /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

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
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in Kubernetes (readOnlyRootFilesystem);
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
