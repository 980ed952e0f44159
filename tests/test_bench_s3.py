"""The S3 benchmark harness (bench/s3.py) end to end on a tiny corpus, against the session's RGW
(--rgw-dir: booting its own would double the test's time; `rgwcluster.start` has its own tests)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rgwcluster
from s3kit import RGW
from test_bench import bench_tools

REPO = Path(__file__).resolve().parent.parent
S3 = REPO / "bench" / "s3.py"


def test_bench_s3_tiny_prints_tables_targets_and_json(rgw: RGW, tmp_path: Path) -> None:
    """One tiny run of each contender into a fresh bucket each: every run verified, the tables
    and the judged targets printed, the JSON written, the work folder gone after and the
    borrowed RGW still running, with none of the harness's buckets left in it."""
    eumirror = bench_tools()
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (apt-get install rclone): the benchmark's peer")
    buckets_before = {b["Name"] for b in rgw.client().list_buckets()["Buckets"]}
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
            "--rgw-dir",
            rgw.cluster.dir,
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
    assert results["settings"]["rgw_dir"] == rgw.cluster.dir
    assert all(rgwcluster.alive(pid) for pid in rgw.cluster.pids.values())
    assert {b["Name"] for b in rgw.client().list_buckets()["Buckets"]} == buckets_before
