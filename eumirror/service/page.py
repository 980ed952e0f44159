"""`GET /` of the status endpoint: the status document as one small HTML page.

Pure (document in, text out). Every value from the document is escaped; the page loads nothing
from elsewhere and runs no script; it wraps long urls and errors so that a 375 px phone screen
needs no horizontal scroll.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from ..commands.progress import human_bytes, human_duration, render
from .status import epoch, iso

MAX_FAILURES = 50
"""Failed images listed per upstream; the rest are counted."""

STYLE = """
*{box-sizing:border-box}
body{margin:0 auto;max-width:50rem;padding:.75rem;font:16px/1.45 system-ui,sans-serif;
color:#1d1d1f;background:#fff}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:0 0 .3rem}
p,dd,li,summary{overflow-wrap:anywhere}
.meta{color:#555;font-size:.9rem;margin:.2rem 0}
.health{padding:.4rem .6rem;border-radius:.3rem;font-weight:600}
.up{border:1px solid #ccc;border-radius:.4rem;padding:.6rem .75rem;margin:.75rem 0}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15rem .75rem;margin:.4rem 0}
dt{color:#555}dd{margin:0}
.badge{font-size:.85rem;padding:.05rem .45rem;border-radius:.8rem;vertical-align:middle}
.good{background:#dff3e3;color:#0b5d1e}.warn{background:#fff1cc;color:#6b4b00}
.bad{background:#fbe0e0;color:#8a1010}
progress{width:100%;height:1rem}
ul{padding-left:1.2rem;margin:.3rem 0}
@media (prefers-color-scheme:dark){body{color:#eee;background:#151515}
.meta,dt{color:#aaa}.up{border-color:#444}}
"""

TONE = {"ok": "good", "partial": "warn", "failed": "bad", "stale": "bad", "never synced": "warn"}
TONE["damaged"] = "bad"
"""The badge colour of each state; a state added later falls back to `warn`."""


def render_page(doc: Mapping[str, Any]) -> str:
    health: Mapping[str, Any] = doc.get("health") or {}
    ok = bool(health.get("ok"))
    verdict = "healthy" if ok else f"unhealthy: {health.get('reason', '')}"
    now = epoch(doc.get("generated"))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="refresh" content="30">',
        f"<title>eumirror: {'ok' if ok else 'unhealthy'}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header><h1>eumirror</h1>",
        f'<p class="health {"good" if ok else "bad"}">{e(verdict)}</p>',
        f'<p class="meta">root {e(doc.get("root", ""))} · version {e(doc.get("version", ""))}',
    ]
    if doc.get("next_run"):
        parts.append(f" · next sync {e(short(doc['next_run']))}")
    parts.append(f" · as of {e(short(doc.get('generated')))}</p></header>")
    parts.append(progress_block(doc))
    for name, info in (doc.get("upstreams") or {}).items():
        parts.append(upstream_block(str(name), info, now, running=bool(doc.get("in_progress"))))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def progress_block(doc: Mapping[str, Any]) -> str:
    snap = doc.get("progress")
    if not doc.get("in_progress") or not isinstance(snap, Mapping):
        return ""
    bar = ""
    if snap.get("percent") is not None:
        bar = f'<progress max="100" value="{float(snap["percent"]):.1f}"></progress>'
    return (
        f'<section class="up"><h2>{e(str(snap.get("phase", "sync")).capitalize())} running</h2>'
        f"{bar}<p>{e(render(dict(snap)))}</p></section>"
    )


def upstream_block(name: str, info: Mapping[str, Any], now: float | None, *, running: bool) -> str:
    state = str(info.get("state", ""))
    run: Mapping[str, Any] = info.get("last_run") or {}
    rows = [("Catalog", e(info.get("catalog", ""))), ("Freshness", freshness(info, now))]
    if run:
        took = run.get("duration_seconds")
        ended = e(short(run.get("ended") or run.get("started")))
        rows.append(("Last run", ended + (f" ({e(human_duration(took))})" if took else "")))
        rows.append(("Result", e(run.get("result", ""))))
    else:
        rows.append(("Last run", "none yet"))
    rows.append(("Images", images(info, run)))
    if run.get("error"):
        rows.append(("Error", e(run["error"])))
    if running:
        rows.append(("Now", "a sync is running"))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<section class="up"><h2>{e(name)} '
        f'<span class="badge {TONE.get(state, "warn")}">{e(state)}</span></h2>'
        f"<p>{e(info.get('reason', ''))}</p><dl>{body}</dl>"
        f"{failures(run.get('failures') or [])}</section>"
    )


def freshness(info: Mapping[str, Any], now: float | None) -> str:
    last = info.get("last_success")
    when = epoch(last)
    if when is None:
        return "no successful sync yet"
    age = f" ({human_duration(max(now - when, 0.0))} ago)" if now is not None else ""
    return f"last success {e(short(last))}{e(age)}"


def images(info: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    text = f"{info.get('images', 0)} published"
    counts = [f"{run[k]} {k}" for k in ("downloaded", "reused", "linked", "dropped") if run.get(k)]
    if counts:
        text += "; last run: " + ", ".join(counts)
    if run.get("downloaded_bytes"):
        text += f" ({human_bytes(float(run['downloaded_bytes']))})"
    return e(text)


def failures(lines: list[Any]) -> str:
    if not lines:
        return ""
    shown = "".join(f"<li>{e(line)}</li>" for line in lines[:MAX_FAILURES])
    more = f"<li>and {len(lines) - MAX_FAILURES} more</li>" if len(lines) > MAX_FAILURES else ""
    count = len(lines)
    return (
        f"<details open><summary>{count} failed image{'s' if count != 1 else ''}</summary>"
        f"<ul>{shown}{more}</ul></details>"
    )


def short(value: Any) -> str:
    """A time as `2026-11-28T08:30:00Z` (seconds are enough on a page)."""
    return iso(epoch(value), precise=False) or ""


def e(value: Any) -> str:
    return escape(str(value), quote=True)
