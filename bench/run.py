#!/usr/bin/env python3
"""eumirror benchmark: eumirror against rclone, curl, aria2c and md5sum on one nginx upstream.

    python3 bench/run.py [--corpus big|small|catalog|link|all] [--runs 3]
                         [--scale full|quick|tiny|F] [--rss-scale] [--out bench/out/results.json]
                         [--link-rate 8m] [--connections N]

Prints one table per corpus and the issue's targets with PASS/FAIL, and writes the whole of it as
JSON. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import report
from corpus import Corpus, ensure, params_for
from tools import (
    FIRST_SYNC_PEER,
    GNU_TIME,
    LINK_PEERS,
    PEERS,
    Peer,
    Sample,
    eumirror_argv,
    eumirror_config,
    measure,
    missing,
    peer_script,
    rclone_env_note,
    rss_method,
    tail,
    write_peer_inputs,
)
from upstream import Nginx, find_nginx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCALES = {"full": 1.0, "quick": 0.1, "tiny": 0.001}
APT_PACKAGES = {
    "nginx": "nginx",
    "rclone": "rclone",
    "curl": "curl",
    "aria2c": "aria2",
    GNU_TIME: "time",
}


def parse_scale(text: str) -> float:
    if text in SCALES:
        return SCALES[text]
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number or one of {list(SCALES)}") from None
    if not 0 < value <= 16:
        raise argparse.ArgumentTypeError("scale must be in (0, 16]")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark eumirror against download+verify peers on a local nginx upstream.",
    )
    p.add_argument(
        "--corpus",
        choices=("big", "small", "catalog", "link", "all"),
        default="all",
        help="all: big, small, catalog and link (the link and the 100k first sync without a "
        "warm-up round)",
    )
    p.add_argument("--runs", type=int, default=3, help="measured runs per contender (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default 1)")
    p.add_argument(
        "--scale",
        type=parse_scale,
        default=1.0,
        help="shrink the corpora: full (1.0, the issue's sizes), quick (0.1), tiny (0.001), or F",
    )
    p.add_argument(
        "--rss-scale",
        action="store_true",
        help="also run eumirror once on big files 4x larger, to check peak RSS stays flat",
    )
    p.add_argument("--out", type=Path, default=BENCH / "out" / "results.json")
    p.add_argument("--corpus-dir", type=lambda t: Path(t).resolve(), default=BENCH / "corpus")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH / "out" / "work",
        help="mirror roots and peer downloads (emptied at the end)",
    )
    p.add_argument("--eumirror", help="eumirror executable (default: .venv/bin, then PATH)")
    p.add_argument(
        "--only",
        type=lambda text: frozenset(filter(None, text.split(","))),
        default=frozenset(),
        metavar="KEY[,KEY]",
        help="run only these peers beside eumirror (keys: "
        + ", ".join(peer.key for peer in PEERS)
        + "); targets that need the others are not judged",
    )
    p.add_argument("--concurrency", type=int, default=4, help="eumirror's and the peers' (4)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per command, seconds")
    p.add_argument(
        "--no-install", action="store_true", help="never apt-get install a missing nginx or peer"
    )
    p.add_argument(
        "--healthz",
        action="store_true",
        help="after the catalog corpus: /healthz p99 latency while the daemon syncs it",
    )
    p.add_argument(
        "--link-rate",
        default="8m",
        help="the link corpus: nginx's limit_rate per request, i.e. per connection (8m)",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=None,
        metavar="N",
        help="write [limits] connections_per_download = N into eumirror's config for the link "
        "corpus (default: not written, eumirror's own default)",
    )
    args = p.parse_args(argv)
    if args.connections is not None and args.connections < 1:
        p.error("--connections must be >= 1")
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
    return args


def say(text: str = "") -> None:
    print(text, flush=True)


# -- environment -----------------------------------------------------------------------------------
def install_missing(allowed: bool) -> None:
    """apt-get install nginx and the peers when missing, if we may (root with apt-get)."""
    wanted = [pkg for exe, pkg in APT_PACKAGES.items() if not _have(exe)]
    if wanted and allowed and os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"installing {' '.join(wanted)} with apt-get ...")
        if _apt("install", "-y", "-q", *wanted) != 0:
            _apt("update", "-q")
            _apt("install", "-y", "-q", *wanted)
        wanted = [pkg for exe, pkg in APT_PACKAGES.items() if not _have(exe)]
    if wanted:
        say(f"not installed: {' '.join(wanted)} (apt-get install {' '.join(wanted)}); see below")


def _apt(*args: str) -> int:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        check=False,
    ).returncode


def _have(exe: str) -> bool:
    if exe == "nginx":
        return find_nginx() is not None
    return shutil.which(exe) is not None


def find_eumirror(explicit: str | None) -> str | None:
    candidates = [explicit, os.environ.get("EUMIRROR"), str(REPO / ".venv" / "bin" / "eumirror")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return shutil.which("eumirror")


def version_of(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "?"


def environment(eumirror: str, nginx: str) -> dict[str, Any]:
    commit = version_of(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = version_of(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        },
        "versions": {
            "eumirror": version_of([eumirror, "--version"]),
            "eumirror_commit": commit + ("" if dirty in ("", "?") else " (work tree modified)"),
            "python": platform.python_version(),
            "nginx": version_of([nginx, "-v"]),
            "rclone": version_of(["rclone", "version"]),
            "curl": version_of(["curl", "--version"]),
            "aria2c": version_of(["aria2c", "--version"]),
            "md5sum": version_of(["md5sum", "--version"]),
        },
    }


# -- helpers ---------------------------------------------------------------------------------------
def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class Outputs:
    """A new empty destination for every run; they are all deleted at the end.

    On ext4 without a journal (the VM this was built on), inodes freed in the last 30 s are
    skipped one by one when new ones are allocated: deleting the previous run's 2000 files right
    before a run made that run's file creation up to 2x slower. That is a cost of the harness,
    not of the contender (and it hits hardest whoever creates the most inodes), so nothing is
    deleted between runs unless the disk runs short of room (then the oldest output goes).
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.kept: list[Path] = []
        self.made = 0

    def next(self, run_bytes: int) -> Path:
        while self.kept and not self._room(run_bytes):
            shutil.rmtree(self.kept.pop(0), ignore_errors=True)
        self.made += 1
        path = fresh(self.base / f"dest-{self.made}")
        self.kept.append(path)
        return path

    def settle(self) -> None:
        """Drop the page cache of the last output (flushed by then): every run starts with the
        memory as the first one found it, whether its predecessor wrote through the cache or
        not, just as deleting the output used to do."""
        if not self.kept:
            return
        os.sync()
        for folder, _, files in os.walk(self.kept[-1]):
            for name in files:
                with contextlib.suppress(OSError):
                    fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)

    def clear(self) -> None:
        for path in self.kept:
            shutil.rmtree(path, ignore_errors=True)
        self.kept.clear()

    def _room(self, run_bytes: int) -> bool:
        usage = shutil.disk_usage(self.base)
        return usage.free - 2 * run_bytes > max(usage.total // 20, 4 << 30)


def published_images(root: Path) -> int | None:
    """How many images the published catalog of upstream `bench` lists (None: none published)."""
    try:
        return len(json.loads((root / "bench" / "catalog").read_bytes())["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def eumirror_events(log: Path) -> list[dict[str, Any]]:
    events = []
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict):
                    events.append(ev)
    except OSError:
        pass
    return events


def download_phase(events: list[dict[str, Any]]) -> tuple[float, int]:
    """Span from the first download's start to the last one's end, and how many downloads.

    Each `image_downloaded` event is logged when its download ends ("timestamp") and says how
    long it took since it got a download slot ("duration"), so its start is the difference.
    """
    starts: list[float] = []
    ends: list[float] = []
    for ev in events:
        if ev.get("event") == "image_downloaded":
            end = datetime.fromisoformat(str(ev["timestamp"])).timestamp()
            ends.append(end)
            starts.append(end - float(ev.get("duration") or 0.0))
    return (max(ends) - min(starts) if ends else 0.0), len(ends)


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Warnings and errors eumirror logged (first few), to report with the run."""
    bad = [ev for ev in events if ev.get("level") in ("warning", "error", "critical")]
    return [
        f"{ev.get('event')}: {ev.get('error') or ev.get('result') or ''}".strip() for ev in bad[:3]
    ]


class Runner:
    """Runs contenders against one corpus and one nginx, with the options of the command line."""

    def __init__(self, args: argparse.Namespace, eumirror: str, work: Path) -> None:
        self.args = args
        self.eumirror = eumirror
        self.work = work
        self.outputs = Outputs(work)

    def run_eumirror(
        self,
        root: Path,
        catalog_url: str,
        tag: str,
        *,
        expect_images: int | None,
        per_image_events: bool = False,
        connections: int | None = None,
    ) -> tuple[Sample, list[dict[str, Any]]]:
        config = self.work / f"eumirror-{tag}.toml"
        eumirror_config(config, root, catalog_url, self.args.concurrency, connections)
        log = self.work / f"eumirror-{tag}.log"
        os.sync()  # earlier runs' writeback must not land on this one
        argv = eumirror_argv(self.eumirror, config)
        if per_image_events:  # image_downloaded is a debug event
            argv += ["--log-level", "debug"]
        sample = measure(
            argv,
            cwd=self.work,
            stdout=self.work / f"eumirror-{tag}.out",
            stderr=log,
            timeout=self.args.timeout,
        )
        events = eumirror_events(log)
        if sample.rc != 0:
            sample.note = f"exit {sample.rc}: {tail(log, 2)}"
        elif expect_images is not None and published_images(root) != expect_images:
            sample.note = f"published {published_images(root)} images, expected {expect_images}"
        return sample, events

    # -- big and small -----------------------------------------------------------------------------
    def files_corpus(
        self,
        corpus: Corpus,
        nginx: Nginx,
        *,
        peers: tuple[Peer, ...] = PEERS,
        warmup: int | None = None,
        connections: int | None = None,
        count_connections: bool = False,
    ) -> dict[str, Any]:
        """Rounds of eumirror and each peer, alternating who goes first.

        `connections`: eumirror's connections_per_download (written only when given);
        `count_connections`: count each run's connections from nginx's access log."""
        args = self.args
        warmup = args.warmup if warmup is None else warmup
        nginx.serve_catalog(corpus.catalog)
        write_peer_inputs(corpus, nginx.url, self.work)
        contenders: list[tuple[str, str]] = [("eumirror", "eumirror sync --once")]
        result: dict[str, Any] = {
            "files": corpus.files,
            "file_bytes": corpus.params.size,
            "bytes": corpus.bytes,
            "tools": {},
            "ratios": {},
        }
        for peer in peers:
            gone = missing(peer)
            if args.only and peer.key not in args.only:
                continue
            if gone:
                result["tools"][peer.key] = {
                    "label": peer.label,
                    "skipped": f"not installed: {', '.join(gone)}",
                }
            else:
                contenders.append((peer.key, peer.label))
        samples: dict[str, list[Sample]] = {key: [] for key, _ in contenders}
        conns: dict[str, dict[str, list[int]]] = {
            key: {"used": [], "peak": []} for key, _ in contenders
        }
        rounds = warmup + args.runs
        for rnd in range(rounds):
            shift = rnd % len(contenders)
            order = contenders[shift:] + contenders[:shift]  # alternate who goes first
            for key, _ in order:
                dest = self.outputs.next(corpus.bytes)
                nginx.log.mark()
                if key == "eumirror":
                    sample, _ = self.run_eumirror(
                        dest,
                        f"{nginx.url}/catalog",
                        corpus.params.kind,
                        expect_images=corpus.files,
                        connections=connections,
                    )
                else:
                    script = peer_script(key, corpus, nginx.url, dest, self.work, args.concurrency)
                    log = self.work / f"{key}.log"
                    os.sync()  # the previous run's deletions and writeback, before the timer
                    sample = measure(
                        ["bash", "-c", script],
                        cwd=self.work,
                        stdout=log,
                        stderr=log,
                        timeout=args.timeout,
                    )
                    if sample.rc != 0:
                        sample.note = f"exit {sample.rc}: {tail(log, 2)}"
                used, peak = nginx.log.connections_since_mark() if count_connections else (0, 0)
                self.outputs.settle()
                measured = rnd >= warmup
                if measured:
                    samples[key].append(sample)
                    conns[key]["used"].append(used)
                    conns[key]["peak"].append(peak)
                status = "ok" if sample.ok else "FAILED " + sample.note
                which = f"run {rnd - warmup + 1}" if measured else "warm-up"
                shown = f"  connections {peak} at once ({used} in all)" if count_connections else ""
                say(
                    f"  {corpus.params.kind} {which}"
                    f" {key:<12} {sample.wall:8.3f} s  {corpus.bytes / sample.wall / 1e6:8.1f} MB/s"
                    f"  {sample.rss_kib / 1024:7.1f} MiB  load {sample.load1:4.1f}{shown}  {status}"
                )
        for key, label in contenders:
            doc = report.summarise(samples[key], corpus.bytes) | {"label": label}
            if count_connections:
                doc["connections"] = conns[key]
            bad = [s.note for s in samples[key] if not s.ok]
            if bad:
                doc["error"] = bad[0]
            result["tools"][key] = doc
        # keep the printed order: eumirror first, then the peers as listed
        printed = ["eumirror", *(p.key for p in peers)]
        result["tools"] = {k: result["tools"][k] for k in printed if k in result["tools"]}
        eum = result["tools"]["eumirror"].get("median_s")
        # each eumirror run against the peer's median: the targets judge every run (issue 15)
        result["run_ratios"] = {}
        eum_walls = [s.wall for s in samples["eumirror"]]
        for key, doc in result["tools"].items():
            if key != "eumirror" and eum and doc.get("median_s"):
                result["ratios"][key] = round(doc["median_s"] / eum, 3)
                result["run_ratios"][key] = [round(doc["median_s"] / w, 3) for w in eum_walls]
        return result

    def link_corpus(self, corpus: Corpus, nginx: Nginx) -> dict[str, Any]:
        """4 x 512 MiB through nginx's per-connection rate cap: eumirror against peers that split
        files over ranged connections; every run's connections counted from the access log.

        Within `--corpus all` it has no warm-up round (the budget: a full `all` stays under 30
        minutes); the corpus is read once instead, so nginx serves it from the page cache."""
        _read_through(corpus.files_dir)
        return self.files_corpus(
            corpus,
            nginx,
            peers=LINK_PEERS,
            warmup=0 if self.args.corpus == "all" else self.args.warmup,
            connections=self.args.connections,
            count_connections=True,
        ) | {"link_rate": self.args.link_rate, "connections_per_download": self.args.connections}

    def rss_scale(self, corpus: Corpus, nginx: Nginx) -> dict[str, Any]:
        """One eumirror run on 4x bigger big files: peak RSS should not grow with file size."""
        nginx.serve_catalog(corpus.catalog)
        dest = self.outputs.next(corpus.bytes)
        sample, _ = self.run_eumirror(
            dest, f"{nginx.url}/catalog", "big4x", expect_images=corpus.files
        )
        say(
            f"  big 4x eumirror {sample.wall:8.3f} s"
            f"  {corpus.bytes / sample.wall / 1e6:8.1f} MB/s"
            f"  {sample.rss_kib / 1024:7.1f} MiB  {'ok' if sample.ok else 'FAILED ' + sample.note}"
        )
        return report.summarise([sample], corpus.bytes) | {
            "files": corpus.files,
            "file_bytes": corpus.params.size,
            "bytes": corpus.bytes,
        }

    # -- the 100k catalog --------------------------------------------------------------------------
    def catalog_corpus(self, corpus: Corpus, nginx: Nginx) -> dict[str, Any]:
        args = self.args
        nxt = corpus.manifest["next"]
        root = self.work / "catalog-root"
        pristine = self.work / "catalog-synced"
        url = f"{nginx.url}/catalog"
        result: dict[str, Any] = {
            "images": corpus.files,
            "file_bytes": corpus.params.size,
            "next": nxt,
        }

        # first sync into an empty root, beside rclone --files-from-raw of the same files; the
        # last good eumirror root is the mirror the other cases start from
        nginx.serve_catalog(corpus.catalog)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pristine, ignore_errors=True)
        names = {img["name"] for img in json.loads(corpus.catalog.read_bytes())["images"]}
        if len(names) < corpus.files:
            say(
                f"  note: {corpus.files - len(names)} images share a name with another one (crc32"
                " collisions); a mirror that dedups by name fetches only one tarball per name"
            )
        first, peer, good = self._first_syncs(corpus, nginx, root)
        result["first_sync"] = first | {"distinct_names": len(names)}
        result["first_sync_peer"] = peer
        if good is None:
            return result
        os.replace(good, pristine)

        copies = 0

        def restore() -> Path:
            """A fresh copy of the synced root. Earlier copies are kept until the end: deleting
            100k files right before a run slows its file creation (see Outputs)."""
            nonlocal copies
            copies += 1
            fresh_root = self.work / f"catalog-root-{copies}"
            subprocess.run(["cp", "-a", str(pristine), str(fresh_root)], check=True)
            return fresh_root

        # no-op: the same catalog again on the synced root
        root = restore()
        noop: list[Sample] = []
        noop_reqs: list[int] = []
        catalog_status: list[int] = []
        noop_problems: list[str] = []
        for rnd in range(args.warmup + args.runs):
            nginx.log.mark()
            sample, events = self.run_eumirror(
                root, url, "catalog-noop", expect_images=corpus.files
            )
            reqs = _tarball_requests(nginx)
            status = [s for _, uri, s in nginx.log.since_mark() if uri == "/catalog"]
            measured = rnd >= args.warmup
            if measured:
                noop.append(sample)
                noop_reqs.append(reqs)
                catalog_status += status
                noop_problems += problems(events)
            say(
                f"  catalog no-op {'run' if measured else 'warm-up'} {sample.wall:8.3f} s"
                f"  {sample.rss_kib / 1024:7.1f} MiB  tarball requests {reqs}"
                f"  catalog {status}  {'ok' if sample.ok else 'FAILED ' + sample.note}"
            )
        result["noop"] = report.summarise(noop) | {
            "tarball_requests": noop_reqs,
            "catalog_status": catalog_status,
            "problems": noop_problems,
        }

        # 1 % change: the next catalog on a fresh copy of the synced root, each run
        nginx.serve_catalog(corpus.next_catalog)
        change: list[Sample] = []
        change_reqs: list[int] = []
        spans: list[Sample] = []
        phases: list[dict[str, Any]] = []
        change_problems: list[str] = []
        for rnd in range(args.warmup + args.runs):
            root = restore()
            nginx.log.mark()
            sample, events = self.run_eumirror(
                root, url, "catalog-change", expect_images=nxt["images"], per_image_events=True
            )
            reqs = _tarball_requests(nginx)
            span, downloads = download_phase(events)
            done = next((ev for ev in events if ev.get("event") == "upstream_done"), {})
            if downloads != nxt["new_tarballs"] and sample.ok:
                sample.note = f"downloaded {downloads} tarballs, expected {nxt['new_tarballs']}"
            measured = rnd >= args.warmup
            if measured:
                change.append(sample)
                change_reqs.append(reqs)
                spans.append(
                    Sample(sample.wall - span, sample.rss_kib, sample.rc, sample.note, sample.load1)
                )
                phases.append(
                    {
                        "wall_s": round(sample.wall, 4),
                        "download_phase_s": round(span, 4),
                        "downloads": downloads,
                        "upstream_done_duration_s": done.get("duration"),
                    }
                )
                change_problems += problems(events)
            say(
                f"  catalog 1% change {'run' if measured else 'warm-up'} {sample.wall:8.3f} s"
                f" (downloads {span:.3f} s)  {sample.rss_kib / 1024:7.1f} MiB"
                f"  tarball requests {reqs}  {'ok' if sample.ok else 'FAILED ' + sample.note}"
            )
        pp = report.summarise(spans)
        result["change"] = report.summarise(change) | {
            "tarball_requests": change_reqs,
            "plan_publish": {k: pp[k] for k in ("median_s", "min_s", "max_s") if k in pp}
            | {"runs_s": [round(one.wall, 4) for one in spans]},
            "phases": phases,
            "problems": change_problems,
        }
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pristine, ignore_errors=True)
        for leftover in self.work.glob("catalog-root-first-*"):  # the other first syncs' roots
            shutil.rmtree(leftover, ignore_errors=True)
        return result

    def _first_syncs(
        self, corpus: Corpus, nginx: Nginx, root: Path
    ) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
        """eumirror's first sync of the 100k catalog and the rclone --files-from-raw peer, in
        rounds that alternate who goes first; (eumirror's summary, the peer's, a synced root).

        Within `--corpus all` there is no warm-up round (the corpus is read into the page cache
        instead), as for the link corpus. Each eumirror run syncs into a new empty root, all kept
        to the end (deleting 100k files would slow the file creation of the cases after it); the
        last good one becomes the synced mirror."""
        args = self.args
        url = f"{nginx.url}/catalog"
        peer = FIRST_SYNC_PEER
        gone = "not installed: " + ", ".join(missing(peer)) if missing(peer) else ""
        if args.only and peer.key not in args.only:
            gone = "not in --only"
        write_peer_inputs(corpus, nginx.url, self.work)
        order = ["eumirror"] + ([] if gone else [peer.key])
        mine: list[Sample] = []
        theirs: list[Sample] = []
        reqs: list[int] = []
        found: list[str] = []
        good: Path | None = None
        # within `all` no warm-up round (the 30-minute budget): the corpus is read once instead
        warmup = 0 if args.corpus == "all" else args.warmup
        if warmup == 0:
            _read_through(corpus.files_dir)
        for rnd in range(warmup + args.runs):
            measured = rnd >= warmup
            which = f"run {rnd - warmup + 1}" if measured else "warm-up"
            for key in order[rnd % len(order) :] + order[: rnd % len(order)]:
                nginx.log.mark()
                if key == "eumirror":
                    dest = root.with_name(f"{root.name}-first-{rnd}")
                    shutil.rmtree(dest, ignore_errors=True)
                    sample, events = self.run_eumirror(
                        dest, url, "catalog-first", expect_images=corpus.files
                    )
                    if sample.ok:
                        good = dest
                    if measured:
                        mine.append(sample)
                        reqs.append(_tarball_requests(nginx))
                        found += problems(events)
                else:
                    dest = self.outputs.next(corpus.bytes)
                    script = peer_script(
                        peer.key, corpus, nginx.url, dest, self.work, args.concurrency
                    )
                    log = self.work / f"{peer.key}.log"
                    os.sync()
                    sample = measure(
                        ["bash", "-c", script],
                        cwd=self.work,
                        stdout=log,
                        stderr=log,
                        timeout=args.timeout,
                    )
                    if sample.rc != 0:
                        sample.note = f"exit {sample.rc}: {tail(log, 2)}"
                    self.outputs.settle()
                    if measured:
                        theirs.append(sample)
                say(
                    f"  catalog first sync {which} {key:<17} {sample.wall:8.3f} s"
                    f"  {sample.rss_kib / 1024:7.1f} MiB  load {sample.load1:4.1f}"
                    f"  {'ok' if sample.ok else 'FAILED ' + sample.note}"
                )
        mine_doc = report.summarise(mine) | {"tarball_requests": reqs, "problems": found}
        if gone:
            return mine_doc, {"label": peer.label, "skipped": gone}, good
        return mine_doc, report.summarise(theirs) | {"label": peer.label}, good


def _read_through(folder: Path) -> None:
    """Read every file once, so that it is in the page cache (as a warm-up round leaves it)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass


def _tarball_requests(nginx: Nginx) -> int:
    return sum(1 for _, uri, _ in nginx.log.since_mark() if uri != "/catalog")


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_missing(not args.no_install)
    nginx_bin = find_nginx()
    if nginx_bin is None:
        say("nginx is required for the upstream: apt-get install nginx (or nginx-light)")
        return 2
    eumirror = find_eumirror(args.eumirror)
    if eumirror is None:
        say("eumirror not found: pip install -e . (from the repository), or pass --eumirror PATH")
        return 2
    rclone_env_note()
    kinds = ["big", "small", "catalog", "link"] if args.corpus == "all" else [args.corpus]
    work = args.work_dir.resolve()
    stale = work.with_name(f".{work.name}.stale-{os.getpid()}")
    if work.exists():  # an earlier run's leftovers: deleted at the end, not before measuring
        work.rename(stale)
    work = fresh(work)
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "corpus": args.corpus,
            "runs": args.runs,
            "warmup": args.warmup,
            "scale": args.scale,
            "concurrency": args.concurrency,
            "link_rate": args.link_rate,
            "connections_per_download": args.connections,
            "eumirror": eumirror,
            "rss_method": rss_method(),
        },
        "environment": environment(eumirror, nginx_bin),
        "corpora": {},
    }
    if args.scale != 1.0:
        say(f"NOTE: scale {args.scale}: corpora are not the issue's sizes; targets are indicative")
    runner = Runner(args, eumirror, work)
    began = time.monotonic()
    try:
        for kind in kinds:
            corpus = ensure(params_for(kind, args.scale), args.corpus_dir)
            warm = 0 if kind == "link" and args.corpus == "all" else args.warmup
            say(f"\n== {kind}: {_describe(corpus)}; {args.runs} runs after {warm} warm-up")
            if kind == "link":
                say(
                    f"   nginx limit_rate {args.link_rate} per connection; eumirror's"
                    " connections_per_download: "
                    + ("its default" if args.connections is None else str(args.connections))
                )
            rate = args.link_rate if kind == "link" else None
            started = time.monotonic()
            with Nginx(nginx_bin, corpus.path, limit_rate=rate) as nginx:
                if kind == "link":
                    res = runner.link_corpus(corpus, nginx)
                    results["corpora"][kind] = res
                    say("\n" + report.files_table(res))
                elif kind == "catalog":
                    res = runner.catalog_corpus(corpus, nginx)
                    results["corpora"][kind] = res
                    say("\n" + report.catalog_table(res))
                    if args.healthz:
                        import healthz_latency

                        say("\n== /healthz latency while the daemon syncs the catalog corpus")
                        hz = healthz_latency.measure(
                            eumirror, corpus, nginx, work, timeout=args.timeout
                        )
                        results["healthz"] = hz
                        say(healthz_latency.table(hz))
                else:
                    res = runner.files_corpus(corpus, nginx)
                    results["corpora"][kind] = res
                    say("\n" + report.files_table(res))
            results["corpora"][kind]["elapsed_s"] = round(time.monotonic() - started, 1)
        if args.rss_scale and "big" in kinds:
            # last: its 8 GiB corpus fills the page cache the other corpora's peers write through;
            # the others' outputs go first (it needs 8 GiB free, and it creates only 8 files)
            runner.outputs.clear()
            for leftover in work.glob("catalog-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            bigger = ensure(params_for("big", args.scale, size_factor=4), args.corpus_dir)
            say(f"\n== big 4x (RSS check): {_describe(bigger)}; 1 run")
            with Nginx(nginx_bin, bigger.path) as nginx:
                results["rss_scale"] = runner.rss_scale(bigger, nginx)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    results["targets"] = report.targets(results)
    say("\n== targets (round 1: issue 9, round 2: issue 15; PASS only when every run meets it)")
    say(report.targets_table(results["targets"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"\nresults: {args.out}")
    return 0


def _describe(corpus: Corpus) -> str:
    size = corpus.params.size
    each = f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size / 1024:g} KiB"
    return f"{corpus.files} x {each} = {corpus.bytes / 1e6:.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
