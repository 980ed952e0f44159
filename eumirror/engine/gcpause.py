"""The heavy phases of a run (building catalogs, plans, state of 100k images): the cyclic
garbage collector paused, and short GIL turns so the event loop is not starved meanwhile."""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Iterator

from ..tuning import enabled

_gc_pauses = 0
_FREEZE = enabled("gc-freeze")
_lock = threading.Lock()
"""Guards both counters: GC pauses and short GIL turns, each nesting across threads."""

GIL_TURN = 0.001
"""Seconds a busy thread keeps the GIL when another asks for it, during a heavy phase (Python's
default is 0.005)."""
_SHORT = enabled("short-switch")
_turns = 0
_turns_before = 0.005


@contextlib.contextmanager
def short_gil_turns(interval: float = GIL_TURN) -> Iterator[None]:
    """Let the event loop win the GIL back quickly from a worker building large structures.

    Each system call the loop makes for a /healthz request (accept, recv, send, close, epoll)
    gives the GIL up; while a worker planned or serialised a 100k-image catalog, getting it back
    took up to a whole 5 ms turn every time, so one probe waited 20 turns: p99 121-131 ms during
    the 1 % change, 73-88 ms with 1 ms turns here. Only for the heavy phases: for the whole
    daemon, 1 ms turns also made the per-file hand-offs of a first sync 26 % slower (213 s
    against 169 s). Figures: bench/healthz_latency.py with and without `--disable short-switch`.
    Nests, across threads too.
    """
    global _turns, _turns_before
    if not _SHORT:
        yield
        return
    with _lock:
        if _turns == 0:
            _turns_before = sys.getswitchinterval()
            sys.setswitchinterval(interval)
        _turns += 1
    try:
        yield
    finally:
        with _lock:
            _turns -= 1
            if _turns == 0:
                sys.setswitchinterval(_turns_before)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic GC (and short GIL turns) while large acyclic structures (catalogs, plans,
    state) are built.

    Each collection would walk every one of the 100k image objects; these phases create no
    cycles, so pausing costs nothing and halves their time. Pauses nest, across threads too. The
    objects built are then frozen (`gc.freeze`); the daemon releases them after each run.
    """
    with short_gil_turns(), _gc_off():
        yield


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    global _gc_pauses
    with _lock:
        if _gc_pauses == 0 and not gc.isenabled():
            owner = False
        else:
            owner = True
            _gc_pauses += 1
            gc.disable()
    try:
        yield
    finally:
        if owner:
            with _lock:
                _gc_pauses -= 1
                if _gc_pauses == 0:
                    # What was built is long-lived: move it out of the collector's sight, or
                    # the next full collection walks a million objects at once.
                    if _FREEZE:
                        gc.freeze()
                    gc.enable()


def release_frozen() -> None:
    """Between daemon runs: let the collector see what the last sync built. What the run
    dropped was freed by reference counting already; the collector's next full pass finds any
    cycles. No explicit collection here: it would walk the whole heap on the event loop while
    holding the GIL, stalling /healthz for as long (a quarter of a second after a 100k-image
    sync)."""
    gc.unfreeze()


def freeze_survivors() -> None:
    """During a long run (a first sync's downloads): move what survived so far out of the
    collector's sight. Without it each full pass walked every object the run keeps (100k state
    records, partial paths, ...) again: 0.1-0.6 s with the GIL held, more often as the run grew.
    O(1); released with the rest after the run (`release_frozen`)."""
    if _FREEZE and gc.isenabled():
        gc.freeze()
