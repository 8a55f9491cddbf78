# syntax=docker/dockerfile:1
# Production image for the Kryptos BFF.
#
#   docker build -t bff .
#   docker run --read-only --tmpfs /tmp -p 8000:8000 -e BFF_CLIENT_ID=... bff
#
# Two stages on the same base image (the venv's interpreter is a symlink into it):
#   build    installs uv and the locked dependencies into /opt/venv, then the project itself;
#   runtime  receives /opt/venv only: no uv, no compiler, no pip cache, no source tree.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

# Same uv as scripts/bootstrap, so the lock is read exactly as in development and CI.
RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /src

# Dependencies first: this layer is rebuilt only when pyproject.toml or uv.lock change, not on every code edit.
# devtools/ (the emulator and the demo) is a workspace member the lock names: only its pyproject.toml is
# copied, so uv can read the lock; --no-dev installs none of it.
COPY pyproject.toml uv.lock ./
COPY devtools/pyproject.toml ./devtools/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project

# Then the project, installed as a regular (non-editable) package so the runtime needs no source tree.
# README.md is the package's readme in pyproject.toml: the build backend reads it.
COPY README.md ./
COPY bff/ ./bff/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable


FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="bff" \
      org.opencontainers.image.description="OAuth 2.0 / OpenID Connect backend-for-frontend for the Kryptos Connect API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# The app writes nothing outside /tmp, so the root filesystem can be mounted read-only.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Root-owned and read-only for the app user: the running process cannot modify its own code.
COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# 8000: HTTP (the only port the ingress routes to); 9464: Prometheus /metrics (BFF_METRICS_PORT), cluster-internal.
EXPOSE 8000 9464

# For plain Docker/Compose; Kubernetes uses the chart's probes instead. The slim image has no curl.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

ENTRYPOINT ["bff"]
CMD ["serve"]
