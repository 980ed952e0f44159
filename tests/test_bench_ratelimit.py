"""bench/ratelimit.py stays runnable: a short limited transfer and one A/B round print both
tables (the figures the lead publishes come from the full 60 s run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "ratelimit.py"


def test_ratelimit_bench_prints_both_tables(tmp_path: Path) -> None:
    """A 2 s run at 2MiB prints the limited and the unlimited table and writes the figures."""
    out = tmp_path / "ratelimit.json"
    argv = [sys.executable, str(SCRIPT), "--rate", "2MiB", "--seconds", "2"]
    argv += ["--unlimited-bytes", "64MiB", "--rounds", "1", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode in (0, 1), done.stderr
    assert "| limit MiB/s |" in done.stdout and "| A | this tree, max_rate unset |" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["limited"]["bytes"] == 2 * (2 << 20) // 8 * 8
    assert len(figures["unlimited"]["A"]) == 1 and len(figures["unlimited"]["B"]) == 1
