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
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = proc.stdout
    for heading in ("== big:", "== small:", "== catalog:", "== targets"):
        assert heading in printed
    assert "eumirror sync --once" in printed
    assert "peak RSS MiB" in printed

    results = json.loads(out.read_text())
    assert set(results["corpora"]) == {"big", "small", "catalog"}
    for kind in ("big", "small"):
        tools = results["corpora"][kind]["tools"]
        assert len(tools["eumirror"]["runs"]) == 1
        for key, tool in tools.items():
            assert tool.get("skipped") or len(tool["runs"]) == 1, key
    catalog = results["corpora"]["catalog"]
    assert len(catalog["first_sync"]["runs"]) == 1
    if catalog["first_sync"]["ok"]:  # the harness counts requests and the download phase
        assert catalog["noop"]["tarball_requests"] == [0]
        assert catalog["change"]["tarball_requests"] == [catalog["next"]["new_tarballs"]]
        assert catalog["change"]["plan_publish"]["median_s"] > 0
    assert {t["result"] for t in results["targets"]} <= {"PASS", "FAIL", "N/A"}
    assert not (tmp_path / "work").exists()
