"""The files state's stat index: a sync that changes nothing checks every file against it without
parsing the state; any difference (a file, the state file, a bad record) falls back to the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from conftest import Mirror as CliMirror
from conftest import Upstream, events, tarball
from faultserver import ThreadedFaultServer
from test_sync_e2e import assert_published_verifies

from eumirror.engine.inventory import load_files
from eumirror.storage.fs import Files, FsStorage, Mirror, hash_file, record_of


def mirror_with(tmp_path: Path, count: int = 3) -> tuple[Mirror, Files]:
    """A mirror root whose upstream `up` has `count` verified tarballs, all published."""
    mirror = Mirror(tmp_path / "root")
    mirror.prepare()
    files = Files()
    for i in range(count):
        scratch = tmp_path / f"img{i}.tgz"
        scratch.write_bytes(os.urandom(100 + i))
        digest = hash_file(scratch)
        dest = f"images/{digest.name}/img{i}.tgz"
        final = mirror.root / "up" / dest
        final.parent.mkdir(parents=True)
        scratch.rename(final)
        files.files[dest] = record_of(final, digest)
        files.published[f"http://up/img{i}.tgz"] = [dest, dest]
    mirror.save_state("up", "files", files.to_doc())
    return mirror, files


def load(mirror: Mirror) -> tuple[bool, Files, list[str]]:
    """(used the index, the state as the sync sees it, what it found damaged)."""
    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())
    indexed = loaded.index is not None
    return indexed, loaded.files, loaded.damaged


def test_an_unchanged_mirror_is_checked_from_the_index_and_parsed_only_on_demand(
    tmp_path: Path,
) -> None:
    mirror, files = mirror_with(tmp_path)
    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())
    assert loaded.index is not None and loaded.trusted
    assert loaded.referenced == set(files.files) and loaded.missing == 0
    assert loaded.untouched(frozenset(files.files))
    assert not loaded.untouched(frozenset(list(files.files)[1:]))  # one would be collected
    assert loaded.files.files == files.files and loaded.files.published == files.published
    assert loaded.index is None and not loaded.untouched(frozenset(files.files))


def test_a_changed_file_falls_back_to_the_full_check(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    dest = sorted(files.files)[0]
    with open(mirror.root / "up" / dest, "ab") as f:
        f.write(b"x")  # size changed: damaged

    indexed, seen, damaged = load(mirror)

    assert not indexed and damaged == [dest] and dest not in seen.files


def test_a_touched_file_is_rehashed_and_kept(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    dest = sorted(files.files)[0]
    os.utime(mirror.root / "up" / dest, ns=(1, 1))

    indexed, seen, damaged = load(mirror)

    assert not indexed and damaged == [] and seen.files[dest][2] == 1


def test_a_missing_file_falls_back_and_counts_as_missing(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    dest = sorted(files.files)[0]
    (mirror.root / "up" / dest).unlink()

    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())

    assert loaded.index is None and loaded.missing == 1 and dest not in loaded.files.files


def test_a_published_dest_without_a_record_is_missing_per_the_index(tmp_path: Path) -> None:
    """The index keeps what the catalog points to with no verified file (to download again)."""
    mirror, files = mirror_with(tmp_path)
    dest = sorted(files.files)[0]
    del files.files[dest]
    mirror.save_state("up", "files", files.to_doc())

    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())

    assert loaded.index is not None and loaded.index.extra_refs == [dest]
    assert loaded.missing == 1 and dest in loaded.referenced


def test_a_state_rewritten_behind_eumirrors_back_is_parsed_not_the_index(tmp_path: Path) -> None:
    mirror, _ = mirror_with(tmp_path)
    path = mirror.state_path("up", "files")
    doc = json.loads(path.read_bytes())
    dest = sorted(doc["files"])[0]
    del doc["files"][dest]  # same token at the start, different content
    path.write_text(json.dumps(doc, separators=(",", ":")))

    indexed, seen, _ = load(mirror)

    assert not indexed and dest not in seen.files


def test_a_state_without_an_index_is_parsed_and_saving_writes_one(tmp_path: Path) -> None:
    mirror, _ = mirror_with(tmp_path)
    mirror.index_path("up").unlink()

    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())

    assert loaded.index is None and loaded.rebuilt  # rebuilt: the run saves it, with an index
    mirror.save_state("up", "files", loaded.files.to_doc())
    assert load(mirror)[0]


def test_a_malformed_record_gets_no_index(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    doc = files.to_doc()
    dest = sorted(doc["files"])[0]
    doc["files"][dest] = [doc["files"][dest][0], "big", 0, ""]

    mirror.save_state("up", "files", doc)

    assert not mirror.index_path("up").exists()
    indexed, seen, _ = load(mirror)
    assert not indexed and dest not in seen.files


# -- the check in child processes (sync --once starts it before importing the engine) ---------
# Each case runs in a fresh single-threaded interpreter, as the console script does: the check
# refuses to fork from a process with threads (this test process has some under xdist).
CHECK = """
import json, os, sys, threading
from pathlib import Path
from eumirror.storage.fs import Mirror
from eumirror.storage.statcheck import StatCheck

mirror, token, mode = Mirror(Path(sys.argv[1])), sys.argv[2], sys.argv[3]
if mode == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
forked = []
if mode == "forkfail":  # the second fork fails (no memory, a process limit)
    real_fork = os.fork

    def fork():
        if forked:
            raise OSError("no more processes")
        forked.append(real_fork())
        return forked[-1]

    os.fork = fork
check = StatCheck.start([mirror.check_job("up")])
found = {"started": check is not None}
if check is not None and mode == "close":
    check.close()  # before any answer was read: the children are stopped and reaped
    gone = []
    for child in check.children:
        try:
            os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            gone.append(child.pid)
    found["reaped"] = len(gone) == len(check.children) == 2
elif check is not None:
    found["answer"] = check.answer("up", token, threading.Event())
    check.close()
if forked and forked[0]:
    try:
        os.waitpid(forked[0], os.WNOHANG)
    except ChildProcessError:
        found["first_reaped"] = True
print(json.dumps(found))
"""


def check_in_child(mirror: Mirror, mode: str = "answer", token: str | None = None) -> Any:
    index = mirror.load_files_index("up")
    token = token or (index.token if index is not None else "none")
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(mirror.root), token, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_child_processes_vouch_for_an_unchanged_mirror(tmp_path: Path) -> None:
    mirror, _ = mirror_with(tmp_path)
    assert check_in_child(mirror) == {"started": True, "answer": True}


def test_a_changed_file_in_either_childs_share_makes_the_answer_false(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    for dest in files.files:  # dests 0 and 2 are one child's, dest 1 the other's
        path = mirror.root / "up" / dest
        before = path.read_bytes()
        path.write_bytes(before + b"x")
        assert check_in_child(mirror) == {"started": True, "answer": False}, dest
        path.write_bytes(before)
        os.utime(path, ns=(files.files[dest][2], files.files[dest][2]))
    assert check_in_child(mirror) == {"started": True, "answer": True}


def test_no_answer_for_another_index_a_dirty_run_or_no_index(tmp_path: Path) -> None:
    """The run then checks by itself (or, dirty, re-checks everything from the state)."""
    mirror, _ = mirror_with(tmp_path)
    assert check_in_child(mirror, token="0123456789abcdef")["answer"] is None
    mirror.state_path("up", "dirty").touch()
    assert check_in_child(mirror)["answer"] is None
    mirror.state_path("up", "dirty").unlink()
    mirror.index_path("up").unlink()
    assert check_in_child(mirror)["answer"] is None


def test_no_fork_from_a_process_with_threads(tmp_path: Path) -> None:
    mirror, _ = mirror_with(tmp_path)
    assert check_in_child(mirror, "thread") == {"started": False}


def test_no_answers_when_only_one_child_could_be_forked(tmp_path: Path) -> None:
    """Half the files would go unchecked: the run checks by itself; the one child is reaped."""
    mirror, _ = mirror_with(tmp_path)
    assert check_in_child(mirror, "forkfail") == {"started": False, "first_reaped": True}


def test_closing_early_stops_and_reaps_the_children(tmp_path: Path) -> None:
    mirror, _ = mirror_with(tmp_path)
    assert check_in_child(mirror, "close") == {"started": True, "reaped": True}


def test_sync_once_takes_the_childrens_answer_and_still_repairs_damage(
    upstream: Upstream, server: ThreadedFaultServer, mirror: CliMirror
) -> None:
    for i in range(3):
        upstream.add(f"a/{i}.tgz", tarball(i))
    upstream.write()
    assert mirror.sync().returncode == 0

    quiet = mirror.sync("--log-level", "debug")

    checked = [e for e in events(quiet.stderr) if e["event"] == "files_checked"]
    assert checked == [checked[0]] and checked[0]["by"] == "stat_check"
    assert checked[0]["verified"] is True and quiet.returncode == 0
    path = mirror.root / "up" / unquote(mirror.catalog()["images"][1]["url"])
    path.write_bytes(b"truncated")
    server.reset_counters()

    repaired = mirror.sync("--log-level", "debug")

    checked = [e for e in events(repaired.stderr) if e["event"] == "files_checked"]
    assert [(e["by"], e["verified"]) for e in checked] == [("stat_check", False)]
    assert repaired.returncode == 0 and server.requests("/a/1.tgz") == 1
    assert_published_verifies(mirror)

    # The benchmark's switch (bench/ab.py stat-check): the run checks by itself.
    alone = mirror.sync("--log-level", "debug", env={"EUMIRROR_BENCH_DISABLE": "stat-check"})

    checked = [e for e in events(alone.stderr) if e["event"] == "files_checked"]
    assert [(e["by"], e["verified"]) for e in checked] == [("run", True)]
    assert alone.returncode == 0


EARLY = """
import json, sys
from eumirror import cli
from eumirror.storage import statcheck

seen = {}
start = statcheck.StatCheck.start.__func__

def spy(cls, jobs, parts=statcheck.PARTS):
    seen["heavy"] = sorted(m for m in ("asyncio", "structlog", "aiohttp") if m in sys.modules)
    seen["upstreams"] = [job.upstream for job in jobs]
    return start(cls, jobs, parts)

statcheck.StatCheck.start = classmethod(spy)
code = cli.main(sys.argv[1:])
print(json.dumps(seen | {"code": code}))
"""


def test_sync_once_starts_the_check_before_its_heavy_imports(
    upstream: Upstream, mirror: CliMirror
) -> None:
    """The sooner the children fork, the more of their lstats overlap the imports: they start
    once the configuration is read, before structlog, asyncio and aiohttp are imported."""
    upstream.add("a/0.tgz", tarball(0))
    upstream.write()
    assert mirror.sync().returncode == 0
    args = ["--config", str(mirror.config), "sync", "--once"]

    done = subprocess.run(
        [sys.executable, "-c", EARLY, *args], capture_output=True, text=True, check=False
    )

    assert json.loads(done.stdout.splitlines()[-1]) == {
        "heavy": [],
        "upstreams": ["up"],
        "code": 0,
    }, done.stderr
