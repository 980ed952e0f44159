"""The S3 benchmark harness (bench/s3.py) end to end on a tiny corpus, with its own RGW."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rgwcluster
from s3kit import unavailable
from test_bench import bench_tools

REPO = Path(__file__).resolve().parent.parent
S3 = REPO / "bench" / "s3.py"


def test_bench_s3_tiny_prints_tables_targets_and_json(tmp_path: Path) -> None:
    """One tiny run of each contender into a fresh bucket each: every run verified, the tables
    and the judged targets printed, the JSON written, the work folder (and RGW) gone after."""
    eumirror = bench_tools()
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (apt-get install rclone): the benchmark's peer")
    if rgwcluster.missing_tools() and os.geteuid() != 0:
        unavailable(f"Ceph tools missing: {', '.join(rgwcluster.missing_tools())}")
    out = tmp_path / "s3.json"
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            str(S3),
            "--scale",
            "tiny",
            "--runs",
            "1",
            "--eumirror",
            eumirror,
            "--out",
            str(out),
            "--corpus-dir",
            str(tmp_path / "corpus"),
            "--work-dir",
            str(work),
            "--timeout",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = proc.stdout
    for heading in ("== big:", "== small:", "== targets", "peak RSS MiB", "MB/s median"):
        assert heading in printed
    results = json.loads(out.read_text())
    assert set(results["corpora"]) == {"big", "small"}
    for kind in ("big", "small"):
        tools = results["corpora"][kind]["tools"]
        assert set(tools) == {"eumirror", "rclone", "rclone-copy"}
        for key, tool in tools.items():
            assert len(tool["runs"]) == 1, key
            assert tool["ok"], (key, tool["runs"])  # exit 0 and every object's md5 checked
    judged = {t["target"]: t["result"] for t in results["targets"]}
    assert len(judged) == 4 and set(judged.values()) <= {"PASS", "FAIL"}
    assert not work.exists()
