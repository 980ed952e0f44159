#!/usr/bin/env python3
"""p99 latency of the daemon's `GET /healthz` while it syncs the catalog corpus (issue 9, item 12).

    python3 bench/healthz_latency.py [--scale full|quick|tiny|F] [--interval 0.01]
                                     [--eumirror PATH] [--out bench/out/healthz.json]
                                     [--disable short-switch]

The daemon (`eumirror sync`) starts on an empty root against the catalog corpus on nginx (the
100k-image catalog at full scale): its first sync, then (SIGUSR1) the 1 % change. Meanwhile one
client asks `/healthz` on 127.0.0.1 every `--interval` seconds, each on a new connection as a
monitoring probe would, and records how long each answer took. Target: p99 under 100 ms in both
phases. `bench/run.py --healthz` runs it after the catalog corpus. `--disable short-switch` runs
the daemon without the short GIL turns of its heavy phases (eumirror/engine/gcpause.py), for the
A/B figure that keeps them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from corpus import Corpus, ensure, params_for
from upstream import Nginx, find_nginx

BENCH = Path(__file__).resolve().parent
TARGET_P99_MS = 100.0


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency some request really had)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(latencies_ms: list[float], errors: int, wall: float) -> dict[str, Any]:
    return {
        "requests": len(latencies_ms),
        "errors": errors,
        "phase_s": round(wall, 3),
        "p50_ms": round(percentile(latencies_ms, 0.50), 2),
        "p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "max_ms": round(max(latencies_ms, default=float("nan")), 2),
        "pass": bool(latencies_ms) and percentile(latencies_ms, 0.99) < TARGET_P99_MS,
    }


class Log:
    """The daemon's JSON log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[dict[str, Any]] = []

    def poll(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        for line in data[:complete].splitlines():
            if line.startswith(b"{"):
                self.events.append(json.loads(line))

    def count(self, name: str) -> int:
        return sum(1 for e in self.events if e.get("event") == name)

    def first(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == name), None)


def probe(host: str, port: int, timeout: float) -> float | None:
    """One `GET /healthz` on a new connection: its latency in ms, None when it failed."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
    except OSError:
        return None
    finally:
        conn.close()
    return (time.perf_counter() - began) * 1000.0


def probe_until(
    log: Log,
    syncs: int,
    address: tuple[str, int],
    *,
    interval: float,
    timeout: float,
    proc: subprocess.Popen[bytes],
) -> dict[str, Any]:
    """Probe /healthz until the daemon has logged `syncs` sync_done events (bounded)."""
    latencies: list[float] = []
    stamps: list[float] = []
    errors = 0
    began = time.monotonic()
    deadline = began + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        log.poll()
        if log.count("sync_done") >= syncs:
            break
        sent = time.time()
        took = probe(*address, timeout=5.0)
        if took is None:
            errors += 1
        else:
            latencies.append(took)
            stamps.append(sent)
        time.sleep(max(interval - (took or 0) / 1000.0, 0.0))
    else:
        raise RuntimeError(f"sync #{syncs} not done within {timeout:.0f}s (rc={proc.poll()})")
    done = [e for e in log.events if e.get("event") == "sync_done"]
    return summary(latencies, errors, time.monotonic() - began) | {
        "sync": done[-1],
        "slowest": slowest(latencies, stamps, log.events),
    }


def slowest(
    latencies: list[float], stamps: list[float], events: list[dict[str, Any]], count: int = 5
) -> list[dict[str, Any]]:
    """The slowest probes, each with the daemon's last log event before it was sent: a hint of
    which step held the event loop."""
    timed = [(epoch(e.get("timestamp")), str(e.get("event"))) for e in events]
    out = []
    for ms, sent in sorted(zip(latencies, stamps, strict=True), reverse=True)[:count]:
        before = [name for at, name in timed if at is not None and at <= sent]
        out.append({"ms": round(ms, 1), "after_event": before[-1] if before else None})
    return out


def epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def measure(
    eumirror: str,
    corpus: Corpus,
    nginx: Nginx,
    work: Path,
    *,
    interval: float = 0.01,
    timeout: float = 3600.0,
    disable: str = "",
) -> dict[str, Any]:
    """The daemon's first sync, then the 1 % change, each with /healthz probed throughout."""
    root = work / "healthz-root"
    shutil.rmtree(root, ignore_errors=True)
    config = work / "healthz.toml"
    config.write_text(
        f'[mirror]\nroot = "{root}"\n'
        '[schedule]\ninterval = "1d"\n'
        '[status]\nlisten = "127.0.0.1:0"\n'
        f'[[upstream]]\nname = "bench"\ncatalog = "{nginx.url}/catalog"\n'
    )
    nginx.serve_catalog(corpus.catalog)
    log = Log(work / "healthz-daemon.log")
    with open(log.path, "wb") as stderr:
        proc = subprocess.Popen(
            [eumirror, "sync", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            env=os.environ | {"EUMIRROR_BENCH_DISABLE": disable} if disable else None,
        )
    result: dict[str, Any] = {"images": corpus.files, "interval_s": interval}
    if disable:
        result["disabled"] = disable
    try:
        deadline = time.monotonic() + 60
        while (listening := log.first("status_listening")) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not listen (rc={proc.poll()}): {log.path}")
            time.sleep(0.02)
            log.poll()
        host, _, port = str(listening["listen"]).rpartition(":")
        address = (host.strip("[]"), int(port))
        result["first_sync"] = probe_until(
            log, 1, address, interval=interval, timeout=timeout, proc=proc
        )
        nginx.serve_catalog(corpus.next_catalog)
        proc.send_signal(signal.SIGUSR1)
        result["change"] = probe_until(
            log, 2, address, interval=interval, timeout=timeout, proc=proc
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> str:
    head = ("phase", "requests", "errors", "p50 ms", "p99 ms", "max ms")
    rows = [f"{head[0]:<12} {head[1]:>8} {head[2]:>6}" + "".join(f" {h:>8}" for h in head[3:])]
    for phase in ("first_sync", "change"):
        r = result.get(phase)
        if not r:
            continue
        verdict = "PASS" if r["pass"] else "FAIL"
        rows.append(
            f"{phase:<12} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.2f}"
            f" {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f}  {verdict} (p99 < {TARGET_P99_MS:.0f} ms)"
        )
        hints = ", ".join(f"{s['ms']:.0f} ms after {s['after_event']}" for s in r["slowest"][:3])
        rows.append(f"{'':<12} slowest: {hints}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from run import find_eumirror, parse_scale

    p = argparse.ArgumentParser(prog="bench/healthz_latency.py", description=__doc__)
    p.add_argument("--scale", type=parse_scale, default=1.0, help="full (1.0), quick, tiny or F")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between probes (0.01)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per sync, seconds")
    p.add_argument("--eumirror", help="eumirror executable (default: .venv/bin, then PATH)")
    p.add_argument("--corpus-dir", type=Path, default=BENCH / "corpus")
    p.add_argument("--work-dir", type=Path, default=BENCH / "out" / "healthz-work")
    p.add_argument("--out", type=Path, default=BENCH / "out" / "healthz.json")
    p.add_argument("--disable", default="", help="speed measures to turn off (short-switch)")
    args = p.parse_args(argv)
    nginx_bin = find_nginx()
    eumirror = find_eumirror(args.eumirror)
    if nginx_bin is None or eumirror is None:
        print("needs nginx (apt-get install nginx) and eumirror (pip install -e .)")
        return 2
    corpus = ensure(params_for("catalog", args.scale), args.corpus_dir)
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        with Nginx(nginx_bin, corpus.path) as nginx:
            result = measure(
                eumirror,
                corpus,
                nginx,
                work,
                interval=args.interval,
                timeout=args.timeout,
                disable=args.disable,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    off = f", {args.disable} off" if args.disable else ""
    load1 = os.getloadavg()[0]
    print(f"/healthz while the daemon syncs {corpus.files} images{off} (load1 {load1:.2f})")
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0 if all(result[k]["pass"] for k in ("first_sync", "change")) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
