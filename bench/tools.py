"""The contenders: eumirror and the peers that do the same work, and how one run is measured.

Every contender runs as one subprocess tree (a peer's steps are one bash script), timed by wall
clock around it. Its peak RSS comes from GNU time (`/usr/bin/time -f %M`): the largest resident set
of any single process of the tree. GNU time is needed because a child forked (or vforked) by this
Python process starts with the harness's own memory map, and the kernel folds that map's high-water
mark into the child's `ru_maxrss` at exec; a small forking parent like GNU time avoids that. Without
GNU time, `wait4()` is used and the figure is only an upper bound (the JSON says which).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corpus import Corpus

GNU_TIME = "/usr/bin/time"


@dataclass
class Sample:
    """One measured run."""

    wall: float  # seconds
    rss_kib: int  # peak RSS of the largest process of the tree, KiB
    rc: int
    note: str = ""
    load1: float = 0.0  # the 1-minute load average just before the run (other work on the host)
    cpu_s: float = 0.0  # user + system CPU seconds of the tree (GNU time %U + %S; 0 without it)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.note


def rss_method() -> str:
    if os.access(GNU_TIME, os.X_OK):
        return "GNU time %M (largest process of the tree)"
    return "wait4 ru_maxrss (upper bound: includes the harness's own peak; install 'time')"


def measure(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    stdout: Path | None = None,
    stderr: Path | None = None,
    timeout: float = 3600.0,
    env: dict[str, str] | None = None,
) -> Sample:
    """Run `argv` to completion (killed after `timeout` s): wall time, peak RSS, exit code."""
    use_time = os.access(GNU_TIME, os.X_OK)
    rss_file = Path(str(stderr or stdout or "/tmp/bench") + ".rss")
    command = list(argv)
    if use_time:
        command = [GNU_TIME, "-f", "%U %S %M", "-o", str(rss_file), "--", *command]
    load1 = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(stdout or os.devnull, "wb"))
        err = out if stderr == stdout else stack.enter_context(open(stderr or os.devnull, "wb"))
        began = time.perf_counter()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - began
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    rss = usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime
    if use_time:
        try:
            fields = rss_file.read_text().split()
            rss = int(fields[-1])
            cpu = float(fields[-3]) + float(fields[-2])
        except (OSError, ValueError, IndexError):
            rss = 0
        rss_file.unlink(missing_ok=True)
    killed = rc in (-signal.SIGKILL, 128 + signal.SIGKILL) and wall >= timeout
    note = f"killed after {timeout:.0f} s" if killed else ""
    return Sample(wall, rss, rc, note, load1, cpu)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


# -- eumirror --------------------------------------------------------------------------------------
def eumirror_config(
    path: Path, root: Path, catalog_url: str, concurrency: int, connections: int | None = None
) -> None:
    """A config with [limits] left at their defaults, but `connections_per_download` when given
    (written only then, so the harness also runs an eumirror that does not know the key)."""
    limits = (
        "" if connections is None else f"\n[limits]\nconnections_per_download = {connections}\n"
    )
    path.write_text(
        "[mirror]\n"
        f'root = "{root}"\n'
        f"concurrency = {concurrency}\n" + limits + "\n[[upstream]]\n"
        'name = "bench"\n'
        f'catalog = "{catalog_url}"\n'
    )


def eumirror_argv(binary: str, config: Path) -> list[str]:
    return [binary, "sync", "--once", "--config", str(config)]


# -- peers -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    needs: tuple[str, ...]
    """Executables it runs, to skip it when one is missing."""


PEERS: tuple[Peer, ...] = (
    Peer("rclone", "rclone copy + md5sum -c", ("rclone", "md5sum", "sync")),
    Peer("curl", "curl --parallel + md5sum -c", ("curl", "md5sum", "sync")),
    Peer("aria2c", "aria2c -j + md5sum -c", ("aria2c", "md5sum", "sync")),
    Peer("rclone-2md5", "rclone copy + 2x md5sum -c", ("rclone", "md5sum", "sync")),
    Peer("md5sum-2p", "limit: 2x md5sum, page cache", ("md5sum",)),
)
LIMIT = "md5sum-2p"

# The link corpus's peers: each splits or parallelises as its own defaults and flags say.
LINK_PEERS: tuple[Peer, ...] = (
    Peer("aria2c-x8", "aria2c -x8 -s8 -j4 + md5sum -c", ("aria2c", "md5sum", "sync")),
    Peer("rclone", "rclone copy (multi-thread) + md5sum -c", ("rclone", "md5sum", "sync")),
    # without --parallel-immediate curl waits for its first connection to learn whether it can
    # multiplex, and meanwhile queues a second transfer on it: 3 connections for 4 files here
    Peer(
        "curl-immediate",
        "curl --parallel --parallel-immediate + md5sum -c",
        ("curl", "md5sum", "sync"),
    ),
)

# The catalog corpus's first-sync peer (issue 15): the same 100k files from the same nginx.
FIRST_SYNC_PEER = Peer(
    "rclone-files-from", "rclone copy --files-from-raw + md5sum -c", ("rclone", "md5sum", "sync")
)


def missing(peer: Peer) -> list[str]:
    return [exe for exe in peer.needs if shutil.which(exe) is None]


def write_peer_inputs(corpus: Corpus, base_url: str, folder: Path) -> None:
    """curl's config and aria2c's input file for this server's port."""
    files_url = f"{base_url}/files/"
    with (
        open(folder / "curl.cfg", "w") as curl,
        open(folder / "aria2.txt", "w") as aria,
        open(folder / "files-from.txt", "w") as raw,
    ):
        for rel in corpus.relpaths:
            curl.write(f'url = "{files_url}{rel}"\noutput = "{rel}"\n')
            aria.write(f"{files_url}{rel}\n  out={rel}\n")
            raw.write(f"{rel}\n")


def peer_script(
    key: str, corpus: Corpus, base_url: str, dest: Path, inputs: Path, concurrency: int
) -> str:
    """The bash script of one peer run: download into `dest`, verify with md5sum -c, sync -f."""
    q = shlex.quote
    n = concurrency
    check, half1, half2 = (q(str(corpus.check_file(i))) for i in (0, 1, 2))
    rclone = (
        f"rclone copy -q --transfers {n} --http-url {q(base_url + '/files/')} :http: {q(str(dest))}"
    )
    verify = f"cd {q(str(dest))}\nmd5sum -c --quiet {check}\nsync -f .\n"
    two_md5 = (
        f"md5sum -c --quiet {half1} & a=$!\nmd5sum -c --quiet {half2} & b=$!\nwait $a\nwait $b\n"
    )
    head = "set -euo pipefail\n"
    if key == "rclone":
        return head + rclone + "\n" + verify
    if key in ("curl", "curl-immediate"):
        curl_cfg = q(str(inputs / "curl.cfg"))
        immediate = " --parallel-immediate" if key == "curl-immediate" else ""
        return (
            head
            + f"cd {q(str(dest))}\n"
            + f"curl -sS --fail --parallel --parallel-max {n}{immediate} --create-dirs"
            + f" --config {curl_cfg}\n"
            + verify
        )
    if key == "aria2c":
        aria = q(str(inputs / "aria2.txt"))
        return (
            head
            + f"aria2c -q -j{n} --input-file={aria} --dir={q(str(dest))} "
            + "--auto-file-renaming=false --allow-overwrite=true\n"
            + verify
        )
    if key == "aria2c-x8":  # the link corpus: 8 ranged connections per file, 4 files at once
        aria = q(str(inputs / "aria2.txt"))
        return (
            head
            + f"aria2c -q -x8 -s8 -j4 --input-file={aria} --dir={q(str(dest))} "
            + "--auto-file-renaming=false --allow-overwrite=true\n"
            + verify
        )
    if key == "rclone-files-from":  # the 100k first sync: no listing, the list of files given
        raw = q(str(inputs / "files-from.txt"))
        return (
            head
            + f"rclone copy -q --transfers {n} --files-from-raw {raw}"
            + f" --http-url {q(base_url + '/files/')} :http: {q(str(dest))}\n"
            + verify
        )
    if key == "rclone-2md5":
        return head + rclone + "\n" + f"cd {q(str(dest))}\n" + two_md5 + "sync -f .\n"
    if key == LIMIT:
        return head + f"cd {q(str(corpus.files_dir))}\n" + two_md5
    raise ValueError(key)


def rclone_env_note() -> None:
    """rclone needs no config file for a `:http:` remote; silence its 'not found' notice."""
    os.environ.setdefault("RCLONE_CONFIG", os.devnull)
