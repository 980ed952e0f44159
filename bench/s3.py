#!/usr/bin/env python3
"""eumirror into an S3 bucket against `rclone copy`, from one nginx upstream into one Ceph RGW.

    python3 bench/s3.py [--corpus big|small|all] [--runs 3] [--scale full|quick|tiny|F]
                        [--eumirror PATH] [--corpus-dir DIR] [--out bench/out/s3.json]

Starts its own one-node RGW (tests/rgwcluster.py), or with --rgw-dir uses one already running
(`python3 tests/rgwcluster.py start DIR`; the tests pass their session's), uses a fresh bucket
for every run and empties it afterwards (objects purged and RGW's garbage collected, so memstore
never fills). Prints one line per run, a table per corpus and issue 14's targets, judged run by
run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import report
from corpus import Corpus, ensure, params_for
from run import environment, find_eumirror, fresh, parse_scale, say
from tools import Sample, measure, rclone_env_note, rss_method, tail
from upstream import Nginx, find_nginx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
import rgwcluster  # noqa: E402

PREFIX = "mirror"
UPSTREAM = "bench"
RATIO_TARGET = 1.2
RSS_TARGET_MIB = 150.0
CONTENDERS = {
    "eumirror": "eumirror sync --once (s3 root)",
    "rclone": "rclone copy + rclone checksum --download",
    "rclone-copy": "rclone copy alone (unverified)",
}
"""`rclone` does eumirror's work (every object checked against the catalog's md5 before the
timer stops); `rclone-copy` is shown for scale: a copy nobody verified."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/s3.py", description="eumirror vs rclone copy, nginx upstream -> Ceph RGW."
    )
    p.add_argument("--corpus", choices=("big", "small", "all"), default="all")
    p.add_argument("--runs", type=int, default=3, help="measured runs per contender (3)")
    p.add_argument("--warmup", type=int, default=0, help="unmeasured rounds first (0)")
    p.add_argument("--scale", type=parse_scale, default=1.0, help="full, quick, tiny or F")
    p.add_argument("--eumirror", help="eumirror executable (default: .venv/bin, then PATH)")
    p.add_argument("--corpus-dir", type=lambda t: Path(t).resolve(), default=BENCH / "corpus")
    p.add_argument("--work-dir", type=Path, default=BENCH / "out" / "s3work")
    p.add_argument("--out", type=Path, default=BENCH / "out" / "s3.json")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=1800.0, help="per command, seconds")
    p.add_argument(
        "--only",
        type=lambda text: [k for k in text.split(",") if k],
        default=list(CONTENDERS),
        metavar="KEY[,KEY]",
        help="contenders (" + ", ".join(CONTENDERS) + ")",
    )
    p.add_argument("--no-rclone-copy", action="store_true", help="skip the unverified rclone row")
    p.add_argument(
        "--rgw-dir",
        type=lambda t: Path(t).resolve(),
        help="use the RGW running under DIR (tests/rgwcluster.py start DIR) and leave it running,"
        " instead of booting (and stopping) one of our own",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
    if args.no_rclone_copy and "rclone-copy" in args.only:
        args.only.remove("rclone-copy")
    unknown = set(args.only) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    return args


class Bucket:
    """S3 operations of the harness, through rclone's :s3: backend (the harness needs no SDK)."""

    def __init__(self, cluster: rgwcluster.Cluster) -> None:
        self.cluster = cluster
        self.env = {
            "RCLONE_CONFIG": os.devnull,
            "RCLONE_S3_PROVIDER": "Ceph",
            "RCLONE_S3_ENDPOINT": cluster.endpoint,
            "RCLONE_S3_ACCESS_KEY_ID": cluster.access_key,
            "RCLONE_S3_SECRET_ACCESS_KEY": cluster.secret_key,
            "RCLONE_S3_REGION": "us-east-1",
            "RCLONE_S3_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": cluster.access_key,
            "AWS_SECRET_ACCESS_KEY": cluster.secret_key,
        }

    def rclone(self, *argv: str, timeout: float = 600) -> str:
        done = subprocess.run(
            ["rclone", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ | self.env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rclone {' '.join(argv)}: {done.stderr.strip()[-400:]}")
        return done.stdout

    def create(self, name: str) -> None:
        self.rclone("mkdir", f":s3:{name}")

    def md5s(self, path: str) -> dict[str, str]:
        """basename -> md5 of every object under `path`, by reading the objects back."""
        out = self.rclone("md5sum", "--download", "--checkers", "4", f":s3:{path}")
        found: dict[str, str] = {}
        for line in out.splitlines():
            md5, _, key = line.partition("  ")
            found[key.rsplit("/", 1)[-1]] = md5
        return found

    def remove(self, name: str) -> None:
        """Delete the bucket and collect RGW's garbage now (RGW frees an object's tail only
        after `rgw gc obj min wait`, two hours, unless told): memstore gets its memory back."""
        self.rclone("purge", f":s3:{name}")
        rgwcluster.Runner(Path(self.cluster.dir)).run(
            "radosgw-admin", "gc", "process", "--include-all", timeout=600
        )


def expected_md5s(corpus: Corpus) -> dict[str, str]:
    found = {}
    for line in corpus.check_file(0).read_text().splitlines():
        md5, _, rel = line.partition("  ")
        found[rel.rsplit("/", 1)[-1]] = md5
    return found


def eumirror_s3_config(
    path: Path, bucket: str, state: Path, catalog_url: str, endpoint: str, concurrency: int
) -> None:
    """An s3 root with [limits] at their defaults; keys come from the environment."""
    path.write_text(
        "[mirror]\n"
        f'root = "s3://{bucket}/{PREFIX}"\n'
        f'state_dir = "{state}"\n'
        f"concurrency = {concurrency}\n"
        "\n[s3]\n"
        f'endpoint_url = "{endpoint}"\n'
        'region = "us-east-1"\n'
        'addressing_style = "path"\n'
        "\n[[upstream]]\n"
        f'name = "{UPSTREAM}"\n'
        f'catalog = "{catalog_url}"\n'
    )


def rclone_script(key: str, corpus: Corpus, base_url: str, bucket: str, n: int) -> str:
    q = shlex.quote
    copy = (
        f"rclone copy -q --checksum --transfers {n} --checkers {n}"
        f" --http-url {q(base_url + '/files/')} :http: :s3:{bucket}\n"
    )
    if key == "rclone-copy":
        return "set -euo pipefail\n" + copy
    check = q(str(corpus.check_file(0)))
    return (
        "set -euo pipefail\n"
        + copy
        + f"rclone checksum -q md5 {check} :s3:{bucket} --download --checkers {n}\n"
    )


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds the processes used so far (/proc/PID/stat), for RGW's share."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class Runner:
    def __init__(self, args: argparse.Namespace, eumirror: str, work: Path, bucket: Bucket):
        self.args = args
        self.eumirror = eumirror
        self.work = work
        self.s3 = bucket
        self.serial = 0
        self.rgw_cpu = 0.0

    def one(self, key: str, corpus: Corpus, nginx: Nginx) -> Sample:
        """One measured run of `key` into a new bucket, verified, then the bucket removed."""
        self.serial += 1
        name = f"bench-{corpus.params.kind}-{self.serial}"
        self.s3.create(name)
        log = self.work / f"{key}-{self.serial}.log"
        rgw_pids = [self.s3.cluster.pids["rgw"], self.s3.cluster.pids["osd"]]
        rgw_before = cpu_seconds(rgw_pids)
        try:
            if key == "eumirror":
                state = fresh(self.work / f"state-{self.serial}")
                config = self.work / f"eumirror-{self.serial}.toml"
                eumirror_s3_config(
                    config,
                    name,
                    state,
                    f"{nginx.url}/catalog",
                    self.s3.cluster.endpoint,
                    self.args.concurrency,
                )
                argv = [self.eumirror, "sync", "--once", "--config", str(config)]
                sample = measure(
                    argv,
                    cwd=self.work,
                    stdout=log,
                    stderr=log,
                    timeout=self.args.timeout,
                    env=self.s3.env,
                )
            else:
                script = rclone_script(key, corpus, nginx.url, name, self.args.concurrency)
                sample = measure(
                    ["bash", "-c", script],
                    cwd=self.work,
                    stdout=log,
                    stderr=log,
                    timeout=self.args.timeout,
                    env=self.s3.env,
                )
            self.rgw_cpu = cpu_seconds(rgw_pids) - rgw_before
            if sample.rc != 0:
                sample.note = f"exit {sample.rc}: {tail(log, 2)}"
            else:
                sample.note = self.verify(key, corpus, name)
        finally:
            self.s3.remove(name)
        return sample

    def verify(self, key: str, corpus: Corpus, bucket: str) -> str:
        """After the timer: every object read back matches the catalog's md5 ('' when so)."""
        if key == "rclone":
            return ""  # its own pipeline read every object back against check.md5 (rc 0)
        path = bucket if key != "eumirror" else f"{bucket}/{PREFIX}/{UPSTREAM}/images"
        got = self.s3.md5s(path)
        want = expected_md5s(corpus)
        if got != want:
            bad = sorted(set(want.items()) ^ set(got.items()))[:3]
            return f"objects differ from the catalog: {len(got)} of {len(want)}, e.g. {bad}"
        if key == "eumirror":
            catalog = json.loads(self.s3.rclone("cat", f":s3:{bucket}/{PREFIX}/{UPSTREAM}/catalog"))
            if len(catalog.get("images", [])) != corpus.files:
                return f"published catalog lists {len(catalog.get('images', []))} images"
        return ""

    def corpus(self, corpus: Corpus, nginx: Nginx) -> dict[str, Any]:
        args = self.args
        nginx.serve_catalog(corpus.catalog)
        keys = [k for k in CONTENDERS if k in args.only]
        samples: dict[str, list[Sample]] = {k: [] for k in keys}
        cpu: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
        for rnd in range(args.warmup + args.runs):
            shift = rnd % len(keys)
            for key in keys[shift:] + keys[:shift]:  # alternate who goes first
                sample = self.one(key, corpus, nginx)
                measured = rnd >= args.warmup
                if measured:
                    samples[key].append(sample)
                    cpu[key].append(
                        {"cpu_s": round(sample.cpu_s, 2), "rgw_cpu_s": round(self.rgw_cpu, 2)}
                    )
                which = f"run {rnd - args.warmup + 1}" if measured else "warm-up"
                say(
                    f"  {corpus.params.kind} {which} {key:<12} {sample.wall:8.3f} s"
                    f"  {corpus.bytes / sample.wall / 1e6:8.1f} MB/s"
                    f"  {sample.rss_kib / 1024:7.1f} MiB  load {sample.load1:4.1f}"
                    f"  cpu {sample.cpu_s:6.1f} s (rgw+osd {self.rgw_cpu:6.1f} s)"
                    f"  {'ok' if sample.ok else 'FAILED ' + sample.note}"
                )
        tools = {
            k: report.summarise(samples[k], corpus.bytes) | {"label": CONTENDERS[k], "cpu": cpu[k]}
            for k in keys
        }
        return {"files": corpus.files, "bytes": corpus.bytes, "tools": tools}


def table(kind: str, res: dict[str, Any]) -> str:
    rows = []
    for doc in res["tools"].values():
        if doc.get("median_s") is None:
            rows.append([doc["label"], "FAILED", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                doc["label"],
                f"{doc['mb_s_median']:.1f} ({doc['mb_s_min']:.1f}-{doc['mb_s_max']:.1f})",
                f"{doc['median_s']:.2f} ({doc['min_s']:.2f}-{doc['max_s']:.2f})",
                f"{doc['rss_mib_max']:.1f}",
                "{:.1f} / {:.1f}".format(
                    statistics.median(c["cpu_s"] for c in doc["cpu"]),
                    statistics.median(c["rgw_cpu_s"] for c in doc["cpu"]),
                ),
                " ".join(f"{r['load1_before']:.1f}" for r in doc["runs"]),
            ]
        )
    head = [
        "",
        "MB/s median (min-max)",
        "wall s median (min-max)",
        "peak RSS MiB",
        "CPU s: it / rgw+osd",
        "load1",
    ]
    return f"{kind}: {res['files']} files, {res['bytes'] / 1e6:.1f} MB\n" + report.table(head, rows)


def targets(corpora: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's targets, judged run by run: round i's rclone time / eumirror time >= 1.2, and
    every eumirror run's peak RSS <= 150 MiB; a target passes only when every run meets it."""
    out: list[dict[str, Any]] = []
    for kind, res in corpora.items():
        eum = res["tools"].get("eumirror", {}).get("runs", [])
        peer = res["tools"].get("rclone", {}).get("runs", [])
        if eum and peer:
            ratios = [
                round(p["wall_s"] / e["wall_s"], 2) if "note" not in e and "note" not in p else None
                for e, p in zip(eum, peer, strict=False)
            ]
            ok = all(r is not None and r >= RATIO_TARGET for r in ratios)
            out.append(
                {
                    "target": f"{kind}: eumirror >= {RATIO_TARGET}x rclone (verified), every run",
                    "measured": ", ".join("failed" if r is None else f"{r:.2f}x" for r in ratios),
                    "result": "PASS" if ok else "FAIL",
                }
            )
        if eum:
            rss = [r["rss_mib"] for r in eum]
            out.append(
                {
                    "target": f"{kind}: eumirror peak RSS <= {RSS_TARGET_MIB:.0f} MiB, every run",
                    "measured": ", ".join(f"{r:.1f}" for r in rss),
                    "result": "PASS" if all(r <= RSS_TARGET_MIB for r in rss) else "FAIL",
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nginx_bin = find_nginx()
    eumirror = find_eumirror(args.eumirror)
    for what, have in (
        ("nginx", nginx_bin),
        ("rclone", shutil.which("rclone")),
        ("eumirror", eumirror),
    ):
        if have is None:
            say(f"{what} is required (apt-get install nginx rclone; pip install -e '.[s3]')")
            return 2
    assert nginx_bin is not None and eumirror is not None
    rclone_env_note()
    # rclone's S3 SDK refuses a custom CA bundle with its own transport; the RGW is plain http
    os.environ.pop("AWS_CA_BUNDLE", None)
    kinds = ["big", "small"] if args.corpus == "all" else [args.corpus]
    corpora = {k: ensure(params_for(k, args.scale), args.corpus_dir) for k in kinds}
    # memstore holds one run's objects at a time (each bucket is emptied after its run)
    largest = max(c.bytes for c in corpora.values())
    rgwcluster.MEMSTORE_BYTES = max(rgwcluster.MEMSTORE_BYTES, 2 * largest + (1 << 30))
    work = fresh(args.work_dir.resolve())
    rgw_dir = work / "rgw"
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "corpus": args.corpus,
            "runs": args.runs,
            "warmup": args.warmup,
            "scale": args.scale,
            "concurrency": args.concurrency,
            "eumirror": eumirror,
            "rss_method": rss_method(),
            "memstore_bytes": rgwcluster.MEMSTORE_BYTES if args.rgw_dir is None else None,
            "rgw_dir": None if args.rgw_dir is None else str(args.rgw_dir),
        },
        "environment": environment(eumirror, nginx_bin),
        "corpora": {},
    }
    if args.scale != 1.0:
        say(f"NOTE: scale {args.scale}: corpora are not the issue's sizes; targets are indicative")
    began = time.monotonic()
    if args.rgw_dir is not None:
        cluster = rgwcluster.load(args.rgw_dir)
        say(f"RGW at {cluster.endpoint} (already running, from {args.rgw_dir})")
    else:
        say("starting a one-node Ceph RGW ...")
        cluster = rgwcluster.start(rgw_dir)
        say(f"RGW at {cluster.endpoint} (booted in {cluster.boot_seconds:.1f} s)")
    try:
        runner = Runner(args, eumirror, work, Bucket(cluster))
        for kind, corpus in corpora.items():
            say(f"\n== {kind}: {corpus.files} files, {corpus.bytes / 1e6:.1f} MB; {args.runs} runs")
            with Nginx(nginx_bin, corpus.path) as nginx:
                res = runner.corpus(corpus, nginx)
            results["corpora"][kind] = res
            say("\n" + table(kind, res))
    finally:
        if args.rgw_dir is None:
            rgwcluster.stop(rgw_dir)
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    results["targets"] = targets(results["corpora"])
    say("\n== targets (issue 14; a target passes only when every run meets it)")
    say(
        report.table(
            ["target", "measured (per run)", "result"],
            [[t["target"], t["measured"], t["result"]] for t in results["targets"]],
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"\nresults: {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
