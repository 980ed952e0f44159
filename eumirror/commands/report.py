"""`eumirror status`: a human table of each upstream, from the daemon or from the state on disk."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from typing import Any

from ..core.config import Config
from ..core.errors import ExitCode
from ..storage.fs import Mirror
from .progress import human_bytes

DAEMON_ADDRESS = "daemon.json"
"""Under `.eumirror/`: the running daemon's pid and real listen address (written by the daemon)."""


def daemon_urls(config: Config) -> list[str]:
    """Where a daemon on this root may listen: the address it recorded, then the configured one.

    The recorded address is the real one (also when `[status] listen` asks for port 0); the
    configured one covers a daemon whose `.eumirror/` this user cannot read.
    """
    urls: list[str] = []
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        recorded = json.loads((Mirror(config.root).work / DAEMON_ADDRESS).read_bytes())
        host, _, port = str(recorded["listen"]).rpartition(":")
        urls.append(status_url(host.strip("[]"), int(port)))
    if config.status.port != 0:
        url = status_url(config.status.host, config.status.port)
        if url not in urls:
            urls.append(url)
    return urls


def status_url(host: str, port: int) -> str:
    """The /status url of a daemon listening on host:port (a wildcard means this machine)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""The daemon is local: never ask an http_proxy from the environment for it."""


def from_daemon(config: Config, timeout: float = 2.0) -> dict[str, Any] | None:
    for url in daemon_urls(config):
        try:
            with _DIRECT.open(url, timeout=timeout) as resp:
                doc = json.loads(resp.read())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and str(doc.get("root")) == str(config.root):
            return doc
    return None


def from_disk(config: Config) -> dict[str, Any]:
    mirror = Mirror(config.root)
    upstreams: dict[str, Any] = {}
    for up in config.upstreams:
        meta = mirror.load_state(up.name, "meta") or {}
        upstreams[up.name] = {
            "last_run": meta.get("last_run"),
            "last_success": meta.get("last_success"),
        }
    return {"source": "disk", "root": str(config.root), "upstreams": upstreams}


def when(ts: Any) -> str:
    if not isinstance(ts, int | float) or ts <= 0:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def table(doc: dict[str, Any]) -> str:
    rows = [("UPSTREAM", "LAST SYNC", "RESULT", "IMAGES", "FAILED", "BYTES", "ERROR")]
    for name, info in doc.get("upstreams", {}).items():
        run = info.get("last_run") or {}
        rows.append(
            (
                name,
                when(run.get("ended")),
                str(run.get("result", "-")) if run else "-",
                str(run.get("images", "-")) if run else "-",
                str(len(run.get("failures", []))) if run else "-",
                human_bytes(run.get("downloaded_bytes", 0)) if run else "-",
                str(run.get("error", ""))[:80] if run else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def show_status(config: Config) -> int:
    doc = from_daemon(config) or from_disk(config)
    source = "daemon" if doc.get("source") != "disk" else "state on disk"
    print(f"mirror {config.root} (from the {source})")
    if doc.get("next_run"):
        print(f"next run: {doc['next_run']}")
    print(table(doc))
    return int(ExitCode.OK)
