"""The cheap check of the published files, started before `sync --once` imports its engine.

A sync that changes nothing spends about as long on one `lstat` per published tarball (100k of
them on a large mirror) as on importing aiohttp and the engine: CPU work either way, which one
process does one after the other. Forked as soon as the configuration is read, child processes
check the files against each upstream's stat index (`filesindex`) while the parent imports; the
run takes their answer for the very index it reads (the same token) and checks by itself
whenever there is none (a child failed or was too late to matter, or the index changed since).

Started only from a single-threaded process (the console script): fork with threads running
could copy a lock some thread holds.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import orjson

from .filesindex import files_match, read_index

PARTS = 2
"""Child processes, each checking its share of every index: the parent's imports and two
halves of the check share the two cores of a small frontend about evenly."""


@dataclass(frozen=True)
class Job:
    """One upstream's paths, as the folder storage lays them out."""

    upstream: str
    folder: Path
    index: Path
    state: Path
    dirty: Path


@dataclass
class _Child:
    pid: int
    fd: int
    reaped: bool = False


@dataclass
class StatCheck:
    children: list[_Child]
    _answers: list[dict[str, list[object]]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, jobs: Sequence[Job], parts: int = PARTS) -> StatCheck | None:
        """The children checking `jobs`, or None where they cannot all be forked."""
        if not jobs or threading.active_count() > 1:
            return None
        children: list[_Child] = []
        for part in range(parts):
            try:
                read, write = os.pipe()
            except OSError:
                break
            try:
                pid = os.fork()
            except OSError:
                os.close(read)
                os.close(write)
                break
            if pid == 0:
                _child(jobs, slice(part, None, parts), write, [c.fd for c in children] + [read])
            os.close(write)
            children.append(_Child(pid, read))
        check = cls(children)
        if len(children) < parts:  # a share of the files would go unchecked: no answers
            check.close()
            return None
        return check

    def answer(self, upstream: str, token: str, cancelled: threading.Event) -> bool | None:
        """Whether every file of `upstream`'s index (the one with `token`) was found as
        verified; None when the children cannot say (check by yourself)."""
        with self._lock:
            if self._answers is None:
                self._answers = self._collect(cancelled)
        found = [answers.get(upstream) for answers in self._answers]
        if len(found) != len(self.children):
            return None
        verdicts = [f[1] for f in found if isinstance(f, list) and f[:1] == [token]]
        if len(verdicts) != len(found) or not all(isinstance(v, bool) for v in verdicts):
            return None
        return all(verdicts)

    def _collect(self, cancelled: threading.Event) -> list[dict[str, list[object]]]:
        """Every child's answers (each writes one JSON object, then exits)."""
        found: list[dict[str, list[object]]] = []
        for child in self.children:
            data = b""
            while not cancelled.is_set():
                if not select.select([child.fd], [], [], 0.1)[0]:
                    continue
                chunk = os.read(child.fd, 65536)
                if not chunk:
                    break
                data += chunk
            else:
                return []
            try:
                answers = orjson.loads(data)
            except ValueError:
                return []  # the child failed before writing all of it
            if not isinstance(answers, dict):
                return []
            found.append(answers)
        return found

    def close(self) -> None:
        """Stop children still checking (a run that ended early) and reap them."""
        for child in self.children:
            if child.reaped:
                continue
            with contextlib.suppress(ChildProcessError):  # reaped elsewhere: never signalled
                if os.waitpid(child.pid, os.WNOHANG) == (0, 0):
                    os.kill(child.pid, signal.SIGKILL)  # still ours: not reaped, so not reused
                    os.waitpid(child.pid, 0)
            child.reaped = True
            os.close(child.fd)


def _child(jobs: Sequence[Job], part: slice, out: int, inherited: list[int]) -> NoReturn:
    """Check, write the answers, exit at once (nothing of the parent's runs here: no atexit,
    no buffered output flushed twice)."""
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        _detach_stdio()
        answers: dict[str, list[object]] = {}
        for job in jobs:
            if job.dirty.exists():
                continue  # the run re-checks everything: no index is read
            index = read_index(job.index, job.state)
            if index is not None:
                answers[job.upstream] = [index.token, files_match(job.folder, index, part)]
        data = orjson.dumps(answers)
        while data:
            data = data[os.write(out, data) :]
        code = 0
    finally:
        os._exit(code)


def _detach_stdio() -> None:
    """/dev/null for stdin, stdout and stderr: a caller reading the command's output until
    it closes must not wait for the children."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
