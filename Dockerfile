# eumirror: mirror of Eucalyptus eustore image catalogs, as a container.
#
#   docker build -t eumirror .
#   docker run -d --name eumirror --init -v eumirror:/var/lib/eumirror -p 127.0.0.1:9105:9105 eumirror
#
# The mirror lives in the volume at /var/lib/eumirror (files 0644, folders 0755): mount the same
# volume read-only into a web server to publish it. Override the configuration by mounting a file
# at /etc/eumirror/eumirror.toml. Logs are JSON lines on stderr (docker logs).
# Signals: `docker stop` (SIGTERM) stops cleanly; `docker kill -s HUP` reloads the configuration;
# `docker kill -s USR1` syncs now.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A fixed system user that owns the mirror; its home is the mirror root, as in the systemd units.
RUN groupadd --system eumirror \
    && useradd --system --gid eumirror --home-dir /var/lib/eumirror --no-create-home \
        --shell /usr/sbin/nologin --comment "eumirror mirror" eumirror \
    && install -d -o eumirror -g eumirror -m 0755 /var/lib/eumirror

COPY . /tmp/eumirror-src
RUN pip install --no-cache-dir /tmp/eumirror-src \
    && rm -rf /tmp/eumirror-src \
    && eumirror --help >/dev/null

COPY config/docker.toml /etc/eumirror/eumirror.toml

# Declared after the directory is created and chowned, so a fresh named volume inherits the
# ownership and mode.
VOLUME ["/var/lib/eumirror"]
WORKDIR /var/lib/eumirror
USER eumirror:eumirror
EXPOSE 9105

# /healthz is 200 while every upstream's catalog is fresh (synced within twice the schedule's
# period) and 503 before the first sync finishes; the start period covers a first sync of
# moderate size. No curl in -slim: ask Python.
HEALTHCHECK --interval=1m --timeout=10s --start-period=30m --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u, urllib.error as e\ntry:\n    u.urlopen('http://127.0.0.1:9105/healthz', timeout=5)\nexcept e.HTTPError as x:\n    sys.exit(x.read(300).decode(errors='replace').strip() or str(x))\nexcept OSError as x:\n    sys.exit(str(x))"]

STOPSIGNAL SIGTERM
CMD ["eumirror", "sync", "--config", "/etc/eumirror/eumirror.toml"]
