"""The benchmark harness (bench/run.py) end to end on a tiny corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "bench" / "run.py"


def _nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _eumirror() -> str | None:
    venv = Path(sys.executable).parent / "eumirror"
    return str(venv) if venv.exists() else shutil.which("eumirror")


def bench_tools(*, curl: bool = False) -> str:
    """The eumirror command the bench scripts run; skips (with the reason) where nginx, curl
    or eumirror itself is missing."""
    if _nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx): the benchmark's upstream")
    if curl and shutil.which("curl") is None:
        pytest.skip("curl is not installed: the benchmark's clients")
    eumirror = _eumirror()
    if eumirror is None:
        pytest.skip("the eumirror command is not installed (pip install -e .)")
    return eumirror


def test_bench_tiny_prints_table_and_writes_json(tmp_path: Path) -> None:
    """A tiny one-run benchmark prints its tables and targets and writes valid JSON results."""
    eumirror = bench_tools()
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--scale",
            "tiny",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--no-install",
            "--eumirror",
            eumirror,
            "--out",
            str(out),
            "--corpus-dir",
            str(tmp_path / "corpus"),
            "--work-dir",
            str(tmp_path / "work"),
            "--timeout",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=240,  # four corpora of many runs on a shared machine
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = proc.stdout
    for heading in ("== big:", "== small:", "== catalog:", "== link:", "== targets"):
        assert heading in printed
    assert "eumirror sync --once" in printed
    assert "peak RSS MiB" in printed

    results = json.loads(out.read_text())
    assert set(results["corpora"]) == {"big", "small", "catalog", "link"}
    for kind in ("big", "small"):
        tools = results["corpora"][kind]["tools"]
        assert len(tools["eumirror"]["runs"]) == 1
        for key, tool in tools.items():
            assert tool.get("skipped") or len(tool["runs"]) == 1, key
    catalog = results["corpora"]["catalog"]
    assert len(catalog["first_sync"]["runs"]) == 1
    peer = catalog["first_sync_peer"]
    assert peer.get("skipped") or len(peer["runs"]) == 1
    if catalog["first_sync"]["ok"]:  # the harness counts requests and the download phase
        assert catalog["noop"]["tarball_requests"] == [0]
        assert catalog["change"]["tarball_requests"] == [catalog["next"]["new_tarballs"]]
        assert catalog["change"]["plan_publish"]["median_s"] > 0
    link = results["corpora"]["link"]
    assert link["link_rate"] == "8m"
    for key, tool in link["tools"].items():  # every run's connections, from nginx's log
        if not tool.get("skipped"):
            assert len(tool["connections"]["peak"]) == 1, key
            assert 1 <= tool["connections"]["peak"][0] <= tool["connections"]["used"][0], key
    assert {t["result"] for t in results["targets"]} <= {"PASS", "FAIL", "N/A"}
    ids = {t["id"]: t for t in results["targets"]}
    # issue 9's ten targets (rss-flat-4x needs --rss-scale) and issue 15's
    assert {"big-vs-rclone", "noop-time", "change-plan-publish", "rss-c4"} <= set(ids)
    assert {"small-vs-best", "first-sync-vs-rclone", "link-vs-best", "link-connections"} <= set(ids)
    assert len(ids["link-connections"]["values"]) == 1
    assert len(ids["link-connections"]["loads"]) == 1
    assert "load1 before each" in printed
    assert not (tmp_path / "work").exists()
