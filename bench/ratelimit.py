#!/usr/bin/env python3
"""`[limits] max_rate` measured: a long limited transfer keeps to the limit, and an unlimited one
loses no speed to the feature.

    python3 bench/ratelimit.py                         # 20MiB for 60 s, 8 streams; A/B x3
    python3 bench/ratelimit.py --against d4b0fd4       # B = that commit's eumirror (no max_rate)
    python3 bench/ratelimit.py --rate 5MiB --seconds 10 --unlimited-bytes 1GiB --rounds 2

1. limited: `--streams` concurrent downloads through eumirror's Fetcher at `--rate`, sized so the
   whole takes `--seconds`: the average rate must be within ±10 % of the limit; the table also
   shows the slowest and fastest whole second.
2. unlimited: `--unlimited-bytes` over the same streams with max_rate unset (A) against B, in
   alternating rounds (ABBA...). B is `--against REV` (that commit of this repository, checked out
   into a temporary worktree: eumirror without the feature) or, without it, this tree with a
   max_rate far above reach (1 TiB/s, so the bucket is charged on every chunk but never waits).

The upstream is an aiohttp server in its own process on 127.0.0.1 (bytes from memory, so the disk
is out of the picture); the Fetcher hands chunks to a sink that only counts them. Each transfer
runs in a fresh process that imports eumirror from the tree under test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
BLOCK = 1 << 20


def size(text: str) -> int:
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * UNITS[unit])
    return int(text)


# -- the upstream (its own process) ---------------------------------------------------------
def serve() -> None:
    """GET /N?size=BYTES answers BYTES bytes from a repeated 1 MiB block; prints the port."""
    import asyncio

    from aiohttp import web

    block = os.urandom(BLOCK)

    async def handle(request: web.Request) -> web.StreamResponse:
        total = int(request.query.get("size", "0"))
        resp = web.StreamResponse(headers={"Content-Length": str(total)})
        await resp.prepare(request)
        view = memoryview(block)
        left = total
        while left > 0:
            n = min(left, BLOCK)
            await resp.write(view[:n])
            left -= n
        return resp

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{n}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- one transfer (its own process, eumirror from PYTHONPATH) --------------------------------
def worker(url: str, each: int, streams: int, rate: int | None) -> None:
    import asyncio

    from eumirror.core.config import Limits
    from eumirror.core.policy import Trust
    from eumirror.net.fetch import Fetcher, Validators

    seconds: dict[int, int] = {}
    began = time.monotonic()

    def on_bytes(n: int) -> None:
        second = int(time.monotonic() - began)
        seconds[second] = seconds.get(second, 0) + n

    class Sink:
        offset = 0

        async def write_batch(self, chunks: list[bytes]) -> None:
            pass

        async def write_last(self, chunks: list[bytes]) -> None:
            pass

        async def restart(self) -> None:
            pass

        def expect(self, remaining: int, validators: Any) -> None:
            pass

    async def main() -> float:
        limits = Limits(max_rate=rate) if rate else Limits()
        trust = Trust(hosts=frozenset({"127.0.0.1"}), proxy="")
        async with Fetcher(limits, on_bytes=on_bytes) as fetcher:
            start = time.monotonic()
            await asyncio.gather(
                *(
                    fetcher.download(f"{url}/{i}?size={each}", Sink(), Validators(), trust=trust)
                    for i in range(streams)
                )
            )
            return time.monotonic() - start

    elapsed = asyncio.run(main())
    whole = [seconds[s] for s in sorted(seconds) if s + 1 <= elapsed]
    doc = {"bytes": sum(seconds.values()), "seconds": elapsed, "per_second": whole}
    print(json.dumps(doc), flush=True)


def transfer(tree: Path, url: str, each: int, streams: int, rate: int | None) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", url, str(each)]
    argv += [str(streams), str(rate or 0)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"transfer failed ({tree}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def mib(n: float) -> str:
    return f"{n / (1 << 20):8.2f}"


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev],
        check=True,
        capture_output=True,
    )
    return into


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", default="20MiB")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--unlimited-bytes", default="4GiB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--against", default="", help="a commit without max_rate, as the B side")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    rate = size(args.rate)
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    worktree: Path | None = None
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        figures: dict[str, Any] = {"rate": rate, "streams": args.streams}

        each = int(rate * args.seconds / args.streams)
        limited = transfer(REPO, url, each, args.streams, rate)
        average = limited["bytes"] / limited["seconds"]
        deviation = average / rate - 1
        per_second = limited["per_second"] or [0]
        figures["limited"] = {**limited, "average": average, "deviation": deviation}
        print(f"\nlimited: {args.streams} streams at max_rate {args.rate}")
        print("| limit MiB/s | seconds | average MiB/s | deviation | slowest s | fastest s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        print(
            f"| {mib(rate)} | {limited['seconds']:7.1f} | {mib(average)} | {deviation:+7.1%} "
            f"| {mib(min(per_second))} | {mib(max(per_second))} |"
        )
        within = abs(deviation) <= 0.10

        if args.against:
            worktree = Path(tempfile.mkdtemp(prefix="eumirror-ab-")) / "tree"
            b_tree, b_rate, b_name = checkout(args.against, worktree), None, args.against
        else:
            b_tree, b_rate, b_name = REPO, 1 << 40, "max_rate 1TiB"
        total = size(args.unlimited_bytes)
        each = total // args.streams
        rates: dict[str, list[float]] = {"A": [], "B": []}
        order = ["A", "B", "B", "A"] * ((args.rounds + 1) // 2)
        for side in order[: 2 * args.rounds]:
            tree, r = (REPO, None) if side == "A" else (b_tree, b_rate)
            got = transfer(tree, url, each, args.streams, r)
            rates[side].append(got["bytes"] / got["seconds"])
        a, b = statistics.median(rates["A"]), statistics.median(rates["B"])
        figures["unlimited"] = {"A": rates["A"], "B": rates["B"], "b": b_name}
        print(f"\nunlimited: {args.unlimited_bytes} over {args.streams} streams, median of rounds")
        print("| side | what | MiB/s (median) | runs MiB/s |")
        print("| --- | --- | ---: | --- |")
        print(
            f"| A | this tree, max_rate unset | {mib(a)} | {' '.join(mib(x) for x in rates['A'])} |"
        )
        print(f"| B | {b_name} | {mib(b)} | {' '.join(mib(x) for x in rates['B'])} |")
        print(f"\nA against B: {a / b - 1:+.1%} (noise on a shared machine is a few %)")
        print(f"limited average within ±10 % of the limit: {'yes' if within else 'NO'}")
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2))
        return 0 if within else 1
    finally:
        server.terminate()
        server.wait(10)
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve()
    elif len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, each, streams, rate = sys.argv[2], *map(int, sys.argv[3:6])
        worker(url, each, streams, rate or None)
    else:
        sys.exit(main())
