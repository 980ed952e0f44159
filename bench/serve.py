#!/usr/bin/env python3
"""eumirror's content server against nginx, serving the same mirror root, side by side.

    python3 bench/serve.py [--scale full|quick|tiny|F] [--runs 3] [--requests 20000]

Two loads, each run against both servers in alternating order:
- big: 8 concurrent clients (`curl --parallel`) each fetching one of the 8 x 256 MiB tarballs;
  throughput in MiB/s (eumirror's target: >= 0.95x nginx's).
- 304: 200 concurrent clients (`curl --parallel --parallel-max 200`) fetching the 100k-image
  catalog with If-None-Match (every answer a 304); requests/s and p99 latency.
Then the peak RSS (VmHWM) of `eumirror serve` over both loads (target: <= 150 MiB).

The root has the layout `eumirror sync` publishes (`<U>/catalog`, `<U>/images/<name>/<file>`),
built by hard-linking the corpus files (bench/corpus.py) rather than downloading them: the servers
are measured, not the sync. Everything is on 127.0.0.1. Prints a table; writes bench/out/serve.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import Corpus, ensure, params_for
from upstream import Nginx, find_nginx, free_port

BENCH = Path(__file__).resolve().parent
SCALES = {"full": 1.0, "quick": 0.1, "tiny": 0.001}
RSS_LIMIT_MIB = 150
MiB = 1 << 20


def say(text: str = "") -> None:
    print(text, flush=True)


def build_root(root: Path, upstream: str, corpus: Corpus) -> None:
    """`<root>/<upstream>/` as eumirror publishes it, the tarballs hard-linked from the corpus."""
    base = root / upstream
    marker = base / ".." / f".{upstream}.{corpus.path.name}.done"
    if marker.exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    doc = json.loads(corpus.catalog.read_text())
    for image in doc["images"]:
        rel = image["url"]
        file_name = rel.rsplit("/", 1)[-1]
        dest = base / "images" / image["name"] / file_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = corpus.path / rel
        try:
            os.link(source, dest)
        except FileExistsError:
            pass
        except OSError:
            shutil.copyfile(source, dest)
        image["url"] = f"images/{image['name']}/{file_name}"
    (base / "catalog").write_text(json.dumps(doc, indent=1) + "\n")
    marker.write_text("")


class EumirrorServe:
    """`eumirror serve` on a free loopback port; its peak RSS read from /proc before it stops."""

    def __init__(self, binary: str, root: Path) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="eumirror-bench-serve-"))
        self.port = free_port()
        config = self.tmp / "eumirror.toml"
        config.write_text(
            f'[mirror]\nroot = "{root}"\n[status]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[serve]\nlisten = "127.0.0.1:{self.port}"\n'
        )
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "stderr.log", "wb"),  # noqa: SIM115 (closed with the process)
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "eumirror serve did not start: "
                        + (self.tmp / "stderr.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def curl_parallel(urls: list[str], parallel: int, work: Path, headers: list[str]) -> list[str]:
    """One `curl --parallel` over `urls`, bodies to /dev/null; one `-w` line per transfer."""
    listing = work / "urls.txt"
    with open(listing, "w") as f:
        for url in urls:
            f.write(f'url = "{url}"\noutput = "/dev/null"\n')
    argv = ["curl", "-sS", "--parallel", "--parallel-max", str(parallel), "--parallel-immediate"]
    for header in headers:
        argv += ["-H", header]
    argv += ["-w", "%{http_code} %{time_total} %{size_download}\\n", "-K", str(listing)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"curl failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout.splitlines()


def big_load(base: str, relpaths: list[str], work: Path) -> dict[str, float]:
    urls = [f"{base}/big/{rel}" for rel in relpaths]
    began = time.perf_counter()
    lines = curl_parallel(urls, 8, work, [])
    wall = time.perf_counter() - began
    codes = {line.split()[0] for line in lines}
    total = sum(int(float(line.split()[2])) for line in lines)
    if codes != {"200"}:
        raise RuntimeError(f"big load: unexpected answers {codes}")
    return {"seconds": wall, "bytes": total, "mib_s": total / MiB / wall}


def not_modified_load(base: str, requests: int, work: Path) -> dict[str, float]:
    url = f"{base}/catalog/catalog"
    head = subprocess.run(["curl", "-sSI", url], capture_output=True, text=True, check=True).stdout
    tags = [line.split(":", 1)[1] for line in head.splitlines() if line.lower().startswith("etag:")]
    etag = tags[0].strip()
    began = time.perf_counter()
    lines = curl_parallel([url] * requests, 200, work, [f"If-None-Match: {etag}"])
    wall = time.perf_counter() - began
    codes = {line.split()[0] for line in lines}
    if codes != {"304"}:
        raise RuntimeError(f"304 load: unexpected answers {codes}")
    latencies = sorted(float(line.split()[1]) for line in lines)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {"seconds": wall, "requests": len(lines), "rps": len(lines) / wall, "p99_ms": p99 * 1e3}


def best(runs: list[dict[str, float]], key: str, *, low: bool = False) -> float:
    values = [r[key] for r in runs]
    return min(values) if low else statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="full", help="full, quick, tiny or a factor")
    parser.add_argument("--runs", type=int, default=3, help="runs of each load per server")
    parser.add_argument("--requests", type=int, default=20000, help="304 requests per run")
    parser.add_argument("--corpus-dir", type=Path, default=BENCH / "corpus")
    parser.add_argument("--root", type=Path, default=BENCH / "out" / "serve-root")
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "serve.json")
    parser.add_argument("--eumirror", default=None, help="default: .venv/bin/eumirror")
    args = parser.parse_args(argv)
    scale = SCALES.get(args.scale) or float(args.scale)
    eumirror = args.eumirror or str(BENCH.parent / ".venv" / "bin" / "eumirror")
    nginx_bin = find_nginx()
    if nginx_bin is None or shutil.which("curl") is None:
        say("nginx and curl are required: apt-get install nginx curl")
        return 2
    big = ensure(params_for("big", scale), args.corpus_dir)
    catalog = ensure(params_for("catalog", scale), args.corpus_dir)
    build_root(args.root, "big", big)
    build_root(args.root, "catalog", catalog)
    big_doc = json.loads((args.root / "big" / "catalog").read_text())
    relpaths = [image["url"] for image in big_doc["images"]]
    work = Path(tempfile.mkdtemp(prefix="eumirror-bench-load-"))
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        "big": {"eumirror": [], "nginx": []},
        "304": {"eumirror": [], "nginx": []},
    }
    serve = EumirrorServe(eumirror, args.root.resolve())
    try:
        with Nginx(nginx_bin, args.root) as nginx:
            servers = {"eumirror": serve.url, "nginx": nginx.url}
            order = ["eumirror", "nginx"]
            # One warm-up pass each: the page cache holds the tarballs for both.
            for who in order:
                big_load(servers[who], relpaths, work)
            for run in range(args.runs):
                for who in order if run % 2 == 0 else order[::-1]:
                    res = big_load(servers[who], relpaths, work)
                    results["big"][who].append(res)
                    say(f"big   {who:<8} run {run + 1}: {res['mib_s']:8.0f} MiB/s")
                for who in order if run % 2 == 0 else order[::-1]:
                    res = not_modified_load(servers[who], args.requests, work)
                    results["304"][who].append(res)
                    say(
                        f"304   {who:<8} run {run + 1}: {res['rps']:8.0f} req/s, "
                        f"p99 {res['p99_ms']:.1f} ms"
                    )
        rss_mib = serve.peak_rss_kib() / 1024
    finally:
        serve.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = summarise(results, rss_mib)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"scale": scale, "results": results, "peak_rss_mib": rss_mib, "table": table},
            indent=1,
        )
        + "\n"
    )
    return 0


def paired(results: dict[str, list[dict[str, float]]], key: str) -> float:
    """The median over rounds of eumirror's figure / nginx's in the same round: the two runs of a
    round are back to back, so load from elsewhere on the machine touches both alike."""
    pairs = zip(results["eumirror"], results["nginx"], strict=True)
    return statistics.median(e[key] / n[key] for e, n in pairs if n[key])


def summarise(results: dict[str, dict[str, list[dict[str, float]]]], rss_mib: float) -> str:
    e_big, n_big = (best(results["big"][w], "mib_s") for w in ("eumirror", "nginx"))
    e_rps, n_rps = (best(results["304"][w], "rps") for w in ("eumirror", "nginx"))
    e_p99, n_p99 = (best(results["304"][w], "p99_ms") for w in ("eumirror", "nginx"))
    ratio = paired(results["big"], "mib_s")
    rows = [
        "| load (medians; ratio: median of the per-round ratios) | eumirror serve | nginx "
        "| eumirror / nginx | target |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| 8 x big tarball, 8 parallel | {e_big:.0f} MiB/s | {n_big:.0f} MiB/s | {ratio:.2f} "
        f"| >= 0.95: {'PASS' if ratio >= 0.95 else 'FAIL'} |",
        f"| catalog 304s, 200 parallel | {e_rps:.0f} req/s | {n_rps:.0f} req/s "
        f"| {paired(results['304'], 'rps'):.2f} | reported |",
        f"| 304 p99 latency | {e_p99:.1f} ms | {n_p99:.1f} ms | | reported |",
        f"| peak RSS of eumirror serve | {rss_mib:.0f} MiB | | | <= {RSS_LIMIT_MIB} MiB: "
        f"{'PASS' if rss_mib <= RSS_LIMIT_MIB else 'FAIL'} |",
    ]
    table = "\n".join(rows)
    say()
    say(table)
    return table


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
