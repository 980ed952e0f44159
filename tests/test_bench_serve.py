"""The serving benchmark (bench/serve.py) end to end on a tiny corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_bench import bench_tools

REPO = Path(__file__).resolve().parent.parent
SERVE = REPO / "bench" / "serve.py"


def test_serve_bench_tiny_prints_table_and_writes_json(tmp_path: Path) -> None:
    """A tiny run measures both servers on both loads, prints the table and writes the JSON."""
    eumirror = bench_tools(curl=True)
    out = tmp_path / "serve.json"
    proc = subprocess.run(
        [
            *(sys.executable, str(SERVE), "--scale", "tiny", "--runs", "1", "--requests", "400"),
            *("--eumirror", eumirror, "--out", str(out), "--corpus-dir", str(tmp_path / "corpus")),
            *("--root", str(tmp_path / "root")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for row in ("8 x big tarball", "catalog 304s", "p99 latency", "peak RSS of eumirror serve"):
        assert row in proc.stdout
    results = json.loads(out.read_text())
    for load in ("big", "304"):
        for server in ("eumirror", "nginx"):
            assert len(results["results"][load][server]) == 1
    assert results["results"]["304"]["eumirror"][0]["requests"] == 400
    assert 0 < results["peak_rss_mib"] < 1024
