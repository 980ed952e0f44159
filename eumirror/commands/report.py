"""`eumirror status`: a human table of each upstream, from the daemon or from the state on disk."""

from __future__ import annotations

import contextlib
import json
import shutil
import textwrap
import urllib.request
from typing import Any

from ..core.config import Config
from ..core.errors import ExitCode
from ..storage.base import work_area
from .progress import human_bytes, render

DAEMON_ADDRESS = "daemon.json"
"""Under `.eumirror/`: the running daemon's pid and real listen address (written by the daemon)."""


def daemon_urls(config: Config) -> list[str]:
    """Where a daemon on this root may listen: the address it recorded, then the configured one.

    The recorded address is the real one (also when `[status] listen` asks for port 0); the
    configured one covers a daemon whose `.eumirror/` this user cannot read.
    """
    urls: list[str] = []
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        recorded = json.loads((work_area(config).work / DAEMON_ADDRESS).read_bytes())
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
        if isinstance(doc, dict) and str(doc.get("root")) == config.where:
            return doc
    return None


def from_disk(config: Config) -> dict[str, Any]:
    from ..service.status import status_document

    return {**status_document(config, work_area(config)), "source": "disk"}


def when(value: Any) -> str:
    """An ISO time (or unix time) as `2026-11-28T08:30:00Z`; `never` when there is none."""
    from ..service.status import epoch, iso

    return iso(epoch(value), precise=False) or "never"


COLUMNS = ("UPSTREAM", "STATE", "LAST RUN", "RESULT", "IMAGES", "FAILED", "DOWNLOADED")


def table(doc: dict[str, Any]) -> str:
    """One row per upstream; the last column is the last success (never cut: it is the end)."""
    rows = [(*COLUMNS, "LAST SUCCESS")]
    for name, info in doc.get("upstreams", {}).items():
        run = info.get("last_run") or {}
        rows.append(
            (
                name,
                str(info.get("state", "-")),
                when(run.get("ended")) if run else "never",
                str(run.get("result", "-")) if run else "-",
                str(info.get("images", run.get("images", "-"))),
                str(len(run.get("failures") or [])) if run else "-",
                human_bytes(run.get("downloaded_bytes") or 0) if run else "-",
                when(info.get("last_success")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def details(doc: dict[str, Any], width: int) -> list[str]:
    """Below the table: for each upstream that is not plainly ok, its reason, its last run's
    full error and every failed image, wrapped rather than cut."""
    out: list[str] = []
    for name, info in doc.get("upstreams", {}).items():
        run = info.get("last_run") or {}
        failures = [str(f) for f in run.get("failures") or []]
        if info.get("state", "ok") == "ok" and not failures and not run.get("error"):
            continue
        out.append("")
        out += wrap(f"{name}: {info.get('state', '')}: {info.get('reason', '')}", width, "    ")
        if run.get("error") and str(run["error"]) not in str(info.get("reason", "")):
            out += wrap(f"  error: {run['error']}", width, "    ")
        if failures:
            out.append(f"  failed images ({len(failures)}):")
            for line in failures:
                out += wrap(f"    - {line}", width, "      ")
    return out


def wrap(text: str, width: int, indent: str) -> list[str]:
    return textwrap.wrap(
        text, width=width, subsequent_indent=indent, break_long_words=True, break_on_hyphens=False
    ) or [text]


def show_status(config: Config, *, as_json: bool = False) -> int:
    """The summary (or `--json`: the document itself); exit 1 when an upstream's last run
    failed or its catalog is stale, as /healthz judges."""
    doc = from_daemon(config)
    if doc is not None:
        doc["source"] = "daemon"
    else:
        doc = from_disk(config)
    code = ExitCode.FAILED if needs_attention(doc) else ExitCode.OK
    if as_json:
        print(json.dumps(doc, indent=2))
        return int(code)
    source = "daemon" if doc.get("source") == "daemon" else "state on disk"
    print(f"mirror {config.where} (from the {source})")
    if doc.get("next_run"):
        print(f"next run: {when(doc['next_run'])}")
    if doc.get("in_progress") and isinstance(doc.get("progress"), dict):
        print(f"running: {render(doc['progress'])}")
    print(table(doc))
    width = max(shutil.get_terminal_size((100, 24)).columns, 60)
    for line in details(doc, width):
        print(line)
    return int(code)


def needs_attention(doc: dict[str, Any]) -> list[str]:
    """Upstreams whose last run failed or whose catalog is stale (or was never synced)."""
    return [
        name
        for name, info in (doc.get("upstreams") or {}).items()
        if not info.get("healthy", False) or (info.get("last_run") or {}).get("result") == "failure"
    ]
