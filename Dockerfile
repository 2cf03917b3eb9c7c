# syntax=docker/dockerfile:1
# txlake worker image: `txlake worker` (Faust) landing Kafka streams into the Parquet lake and MySQL.
#
#   docker build -t REGISTRY/txlake:0.1.0 .
#
# Base image: pinned by tag (Python 3.11 patch release + Debian release). Pin it by digest too in
# your registry/CI (`FROM python:3.11.14-slim-bookworm@sha256:...`); the digest cannot be looked up
# from the offline machine this file was written on, so it is not here. Both stages use the same
# image so the venv's interpreter path (/usr/local/bin/python3.11) exists in the final stage.

# ---------------------------------------------------------------------------------------------
# builder: resolves and installs the pinned dependencies into /opt/venv. Build tools live only
# here. Every runtime dependency in constraints.txt ships a manylinux wheel for CPython 3.11 on
# linux/amd64 (checked), so no compiler is needed and `--only-binary=:all:` makes a missing wheel
# fail loudly instead of silently needing one. (If a platform ever lacks a wheel, add
# `apt-get install --no-install-recommends build-essential` to this stage only.)
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# 1. Dependencies only (cached until pyproject.toml or constraints.txt change): the runtime
#    dependency list is read from pyproject.toml, versions come from constraints.txt.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir --only-binary=:all: -c constraints.txt -r /tmp/requirements.txt

# 2. The application itself (a regular, non-editable install into the venv's site-packages;
#    bytecode is compiled now because the pod's root filesystem is read-only).
COPY README.md ./
COPY app ./app
COPY agents ./agents
COPY models ./models
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
 && python -m compileall -q /opt/venv \
 && txlake --help > /dev/null

# ---------------------------------------------------------------------------------------------
# runtime: the interpreter from the base image, the venv (dependencies + txlake), nothing else.
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="txlake" \
      org.opencontainers.image.description="Lands Kafka transaction streams into a Parquet lake and a MySQL warehouse, exactly once." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# TXLAKE_DATADIR is Faust's local state: under /tmp, an emptyDir in Kubernetes (the root
# filesystem is read-only there). TXLAKE_LAKE__ROOT is where the lake volume is mounted. Secret
# files are read from /run/secrets/txlake (the code default; the chart mounts the Secret there).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TXLAKE_LAKE__ROOT=/data/lake \
    TXLAKE_DATADIR=/tmp/txlake \
    TXLAKE_WEB__PORT=6066

# Non-root user with a fixed uid/gid (the Helm chart runs as 10001 and sets fsGroup 10001).
RUN groupadd --system --gid 10001 txlake \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin txlake \
 && mkdir -p /data/lake /tmp/txlake \
 && chown 10001:10001 /data/lake /tmp/txlake

COPY --from=builder /opt/venv /opt/venv

WORKDIR /opt/txlake
USER 10001:10001
EXPOSE 6066

# For `docker run`; Kubernetes ignores HEALTHCHECK and uses the chart's /livez and /readyz probes.
# (No curl in the slim image: the interpreter does the request.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('TXLAKE_WEB__PORT', '6066'), timeout=4)"]

ENTRYPOINT ["txlake"]
CMD ["worker"]
