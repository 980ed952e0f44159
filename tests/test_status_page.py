"""`GET /`, the status page, as text: escaped, self-contained, showing a running sync. The real
browser test (375 px, no horizontal scroll, screenshot) is in test_status_daemon.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eumirror.service.page import render_page

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PHONE_WIDTH = 375
LONG = "very-long-image-file-name-" * 8 + ".tgz"


def doc_with(**upstream: Any) -> dict[str, Any]:
    return {
        "root": "/srv/m",
        "version": "1",
        "generated": "2026-01-01T00:00:00.000Z",
        "health": {"ok": False, "reason": "up: <b>stale</b>"},
        "upstreams": {"up": {"state": "failed", "reason": "r", **upstream}},
    }


def test_page_escapes_every_value() -> None:
    """Text from upstreams (urls, errors, failure lines) cannot inject markup into the page."""
    page = render_page(
        doc_with(
            catalog='http://x/"><script>alert(1)</script>',
            last_run={"error": "<img src=x onerror=alert(1)>", "failures": ["<i>bad</i> & co"]},
        )
    )
    assert "<script>" not in page and "<img" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;stale&lt;/b&gt;" in page
    assert "&amp; co" in page


def test_page_loads_nothing_from_elsewhere() -> None:
    """No stylesheet, script, image or font is fetched: the page is one self-contained file."""
    page = render_page(doc_with(last_run={"failures": ["x"]}))
    for marker in ("<script", "<link", "<img", "src=", "href=", "@import", "url("):
        assert marker not in page, marker


def test_page_shows_a_running_syncs_progress() -> None:
    """During a sync the page has a progress bar and the terminal line's figures."""
    doc = doc_with()
    doc["in_progress"] = True
    doc["progress"] = {
        "phase": "sync",
        "files_done": 3,
        "files_planned": 8,
        "bytes_done": 1024,
        "bytes_planned": 4096,
        "percent": 25.0,
        "rate_bytes_per_second": 512,
        "eta_seconds": 6,
    }
    page = render_page(doc)
    assert '<progress max="100" value="25.0">' in page
    assert "3/8 files" in page and "ETA 6s" in page
