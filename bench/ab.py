#!/usr/bin/env python3
"""A/B: is each speed measure worth its place? eumirror with one measure off against eumirror
with all on, alternating runs (ABBA...) on the same nginx upstream and corpus.

    python3 bench/ab.py [--rounds 4] [--scale full|quick|F] [--measures gc-freeze,...]

Measures (see eumirror/tuning.py) and the case each one is meant for:
  gc-freeze     the 100k-image catalog's 1 % change (plan and publish of large structures)
  stat-check    the 100k-image catalog's no-op (sync --once's check of the files in two child
                processes while it imports the engine)
  big-reads     big tarballs (1 MiB socket reads instead of asyncio's 256 KiB)
  worker-pool   small and big tarballs (lean worker threads instead of asyncio.to_thread)
  fdatasync     small and big tarballs: one fdatasync per download instead of one syncfs per
                batch (the durability choice; "gain" here is syncfs's over fdatasync)

Prints, per measure and case, the median wall time with and without it and the gain.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from corpus import Corpus, ensure, params_for
from tools import eumirror_argv, eumirror_config, measure
from upstream import Nginx, find_nginx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

OFF = {
    "gc-freeze": {"EUMIRROR_BENCH_DISABLE": "gc-freeze"},
    "big-reads": {"EUMIRROR_BENCH_DISABLE": "big-reads"},
    "worker-pool": {"EUMIRROR_BENCH_DISABLE": "worker-pool"},
    "stat-check": {"EUMIRROR_BENCH_DISABLE": "stat-check"},
    "fdatasync": {"EUMIRROR_BENCH_DURABILITY": "fdatasync"},
}
CASES = {
    "gc-freeze": ["catalog"],
    "big-reads": ["big"],
    "worker-pool": ["small", "big"],
    "stat-check": ["noop"],
    "fdatasync": ["small", "big"],
}


def run(binary: str, work: Path, root: Path, url: str, env: dict[str, str], tag: str) -> float:
    config = work / f"{tag}.toml"
    eumirror_config(config, root, url, 4)
    os.sync()
    sample = measure(eumirror_argv(binary, config), cwd=work, stderr=work / f"{tag}.log", env=env)
    if sample.rc != 0:
        raise SystemExit(f"{tag}: eumirror exited {sample.rc}; see {work / (tag + '.log')}")
    return sample.wall


def alternate(
    rounds: int, env: dict[str, str], one: Callable[[str, int, dict[str, str]], float]
) -> tuple[list[float], list[float]]:
    """`one(label, round, env)` with the measure on and off, in turns (on/off, off/on, ...)."""
    on: list[float] = []
    off: list[float] = []
    for rnd in range(rounds):
        order = [("on", {}), ("off", env)] if rnd % 2 == 0 else [("off", env), ("on", {})]
        for label, extra in order:
            (on if label == "on" else off).append(one(label, rnd, extra))
    return on, off


def files_case(
    binary: str, work: Path, corpus: Corpus, nginx: Nginx, env: dict[str, str], rounds: int
) -> tuple[list[float], list[float]]:
    nginx.serve_catalog(corpus.catalog)

    def one(label: str, rnd: int, extra: dict[str, str]) -> float:
        root = work / f"{corpus.params.kind}-{label}-{rnd}"
        shutil.rmtree(root, ignore_errors=True)
        wall = run(binary, work, root, f"{nginx.url}/catalog", extra, f"{label}-{rnd}")
        shutil.rmtree(root, ignore_errors=True)
        return wall

    return alternate(rounds, env, one)


def synced(binary: str, work: Path, corpus: Corpus, nginx: Nginx) -> Path:
    """A root holding the whole catalog corpus (one first sync, kept for the next cases)."""
    pristine = work / "catalog-synced"
    if not (pristine / "bench" / "catalog").exists():
        nginx.serve_catalog(corpus.catalog)
        shutil.rmtree(pristine, ignore_errors=True)
        run(binary, work, pristine, f"{nginx.url}/catalog", {}, "catalog-first")
    return pristine


def catalog_case(
    binary: str,
    work: Path,
    corpus: Corpus,
    nginx: Nginx,
    env: dict[str, str],
    rounds: int,
    *,
    change: bool = True,
) -> tuple[list[float], list[float]]:
    """Syncs of the next catalog version, each on a fresh copy of the synced root; without
    `change`, syncs of the same catalog on the synced root itself (they change nothing)."""
    pristine = synced(binary, work, corpus, nginx)
    nginx.serve_catalog(corpus.next_catalog if change else corpus.catalog)
    kind = "c" if change else "n"

    def one(label: str, rnd: int, extra: dict[str, str]) -> float:
        root = pristine
        if change:
            root = work / f"catalog-{label}-{rnd}"
            subprocess.run(["cp", "-a", str(pristine), str(root)], check=True)
        return run(binary, work, root, f"{nginx.url}/catalog", extra, f"{kind}-{label}-{rnd}")

    return alternate(rounds, env, one)


CASE_RUNS = {"catalog": catalog_case, "noop": functools.partial(catalog_case, change=False)}


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/ab.py")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--measures", default=",".join(OFF))
    p.add_argument("--eumirror", default=str(REPO / ".venv" / "bin" / "eumirror"))
    p.add_argument("--corpus-dir", type=Path, default=BENCH / "corpus")
    p.add_argument("--work-dir", type=Path, default=BENCH / "out" / "ab")
    args = p.parse_args()
    nginx_binary = find_nginx()
    if nginx_binary is None:
        print("nginx is not installed (apt-get install nginx)", file=sys.stderr)
        return 2
    work = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows: list[tuple[str, str, float, float, float]] = []
    corpora: dict[str, Corpus] = {}
    try:
        for measure_name in args.measures.split(","):
            for case in CASES[measure_name]:
                kind = "catalog" if case == "noop" else case
                if kind not in corpora:
                    corpora[kind] = ensure(params_for(kind, args.scale), args.corpus_dir)
                corpus = corpora[kind]
                with Nginx(nginx_binary, corpus.path) as nginx:
                    do = CASE_RUNS.get(case, files_case)
                    on, off = do(args.eumirror, work, corpus, nginx, OFF[measure_name], args.rounds)
                m_on, m_off = statistics.median(on), statistics.median(off)
                gain = (m_off - m_on) / m_off * 100
                rows.append((measure_name, case, m_on, m_off, gain))
                print(
                    f"{measure_name:<12} {case:<8} on {m_on:7.3f} s  off {m_off:7.3f} s  "
                    f"gain {gain:+5.1f} %   (on {fmt(on)}; off {fmt(off)})",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nmeasure      case     median with   median without   gain")
    for name, case, m_on, m_off, gain in rows:
        print(f"{name:<12} {case:<8} {m_on:9.3f} s   {m_off:11.3f} s   {gain:+5.1f} %")
    return 0


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    raise SystemExit(main())
