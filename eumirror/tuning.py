"""Switches that turn one speed measure off, for the benchmark's A/B runs (bench/ab.py, and
bench/healthz_latency.py for `short-switch`, the heavy phases' short GIL turns) only.

Each measure in the hot path stays only with a measured gain; to measure it, the benchmark runs
eumirror with it off and on, side by side (`EUMIRROR_BENCH_DISABLE=` any of gc-freeze,
big-reads, worker-pool, short-switch, stat-check). `EUMIRROR_BENCH_DURABILITY=fdatasync`
flushes each download on its own instead of one `syncfs` per batch, for the same comparison.
Operators never need these.
"""

from __future__ import annotations

import os

DISABLED = frozenset(filter(None, os.environ.get("EUMIRROR_BENCH_DISABLE", "").split(",")))
PER_FILE_FLUSH = os.environ.get("EUMIRROR_BENCH_DURABILITY", "") == "fdatasync"


def enabled(measure: str) -> bool:
    return measure not in DISABLED
