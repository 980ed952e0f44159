# syntax=docker/dockerfile:1
# eumirror: mirror of Eucalyptus eustore image catalogs, as a container.
#
#   docker build -t eumirror .
#   docker run -d --name eumirror -v eumirror:/var/lib/eumirror -p 127.0.0.1:9105:9105 eumirror
#
# No `--init` needed: tini is PID 1 (it forwards signals and reaps orphans).
# The mirror lives in the volume at /var/lib/eumirror (files 0644, folders 0755): mount the same
# volume read-only into a web server to publish it. Override the configuration by mounting a file
# at /etc/eumirror/eumirror.toml. Logs are JSON lines on stderr (docker logs).
# Signals: `docker stop` (SIGTERM) stops cleanly; `docker kill -s HUP` reloads the configuration;
# `docker kill -s USR1` syncs now.
#
# Stages: `deps` installs requirements.lock (exact versions, hash-checked) into a venv, a layer
# rebuilt only when the lock changes; `wheel` builds eumirror's wheel from the sources; the final
# image gets the venv and installs the wheel from a bind mount, so no source tree stays in a layer.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/eumirror \
    && /opt/eumirror/bin/pip install --require-hashes -r /tmp/requirements.lock

FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY eumirror ./eumirror
RUN pip wheel --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/eumirror/bin:$PATH \
    EUMIRROR_LOG_FORMAT=json

# tini as PID 1: signals reach eumirror, and zombies are reaped, without `docker run --init`.
# A fixed system user (uid/gid 10001, for a web server sharing the volume) owns the mirror; its
# home is the mirror root, as in the systemd units.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 eumirror \
    && useradd --system --uid 10001 --gid eumirror --home-dir /var/lib/eumirror --no-create-home \
        --shell /usr/sbin/nologin --comment "eumirror mirror" eumirror \
    && install -d -o eumirror -g eumirror -m 0755 /var/lib/eumirror

# The dependencies: their own layer, unchanged (and cached) while requirements.lock is.
COPY --from=deps /opt/eumirror /opt/eumirror
# eumirror itself, from its wheel (mounted for this step only, never stored in a layer).
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    /opt/eumirror/bin/pip install --no-deps /dist/eumirror-*.whl \
    && eumirror --version

COPY config/docker.toml /etc/eumirror/eumirror.toml

# Declared after the directory is created and chowned, so a fresh named volume inherits the
# ownership and mode.
VOLUME ["/var/lib/eumirror"]
WORKDIR /var/lib/eumirror
USER 10001:10001
EXPOSE 9105

# /healthz is 200 while every upstream's catalog is fresh (synced within twice the schedule's
# period) and 503 before the first sync finishes; the start period covers a first sync of
# moderate size. No curl in -slim: ask Python.
HEALTHCHECK --interval=1m --timeout=10s --start-period=30m --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u, urllib.error as e\ntry:\n    u.urlopen('http://127.0.0.1:9105/healthz', timeout=5)\nexcept e.HTTPError as x:\n    sys.exit(x.read(300).decode(errors='replace').strip() or str(x))\nexcept OSError as x:\n    sys.exit(str(x))"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["eumirror", "sync", "--config", "/etc/eumirror/eumirror.toml"]
