"""bench/healthz_latency.py end to end on the tiny catalog corpus: it runs, probes /healthz
through both phases and prints and writes its figures (the figures themselves are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_bench import bench_tools

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "healthz_latency.py"


def test_healthz_latency_tiny_prints_and_writes_both_phases(tmp_path: Path) -> None:
    """The script probes /healthz during the first sync and the 1 % change and reports p99 (here
    with the daemon's short GIL turns off, as for the A/B figure that keeps them)."""
    eumirror = bench_tools()
    out = tmp_path / "healthz.json"

    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--scale",
            "tiny",
            "--interval",
            "0.005",
            "--timeout",
            "40",
            "--eumirror",
            eumirror,
            "--out",
            str(out),
            "--corpus-dir",
            str(tmp_path / "corpus"),
            "--work-dir",
            str(tmp_path / "work"),
            "--disable",
            "short-switch",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "p99 ms" in proc.stdout and "first_sync" in proc.stdout
    result = json.loads(out.read_text())
    assert result["disabled"] == "short-switch" and "short-switch off" in proc.stdout
    for phase in ("first_sync", "change"):
        figures = result[phase]
        assert figures["requests"] > 0 and figures["errors"] == 0, figures
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
        assert figures["sync"]["event"] == "sync_done" and figures["slowest"]
    assert not (tmp_path / "work").exists()
