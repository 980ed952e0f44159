"""bench/s3client.py on a tiny workload against the session's real RGW: it uploads, checks and
reports every figure (the full-size comparison is for the bench, not for the tests)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from s3kit import RGW

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "s3client.py"


def test_s3client_bench_reports_each_client_and_workload(rgw: RGW) -> None:
    """One run per installed client: multipart and small PUTs, each row with wall, CPU and RSS."""
    clients = ["aiobotocore"] + (["obstore"] if importlib.util.find_spec("obstore") else [])
    argv = [
        sys.executable, SCRIPT, "--endpoint", rgw.endpoint, "--access-key", rgw.access_key,
        "--secret-key", rgw.secret_key, "--runs", "1", "--clients", ",".join(clients),
        "--big-count", "2", "--big-mib", "10", "--part-mib", "5", "--small-count", "5",
        "--small-kib", "4",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {(r["client"], r["workload"]) for r in rows} == {
        (c, w) for c in clients for w in ("multipart", "small")
    }
    for r in rows:
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_rss_MiB"] > 10
    assert {r["objects"] for r in rows if r["workload"] == "multipart"} == {2}
