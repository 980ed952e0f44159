"""Pausing the cyclic garbage collector while large acyclic structures are built."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

from ..tuning import enabled

_gc_pauses = 0
_FREEZE = enabled("gc-freeze")
_gc_lock = threading.Lock()


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic GC while large acyclic structures (catalogs, plans, state) are built.

    Each collection would walk every one of the 100k image objects; these phases create no
    cycles, so pausing costs nothing and halves their time. Pauses nest, across threads too. The
    objects built are then frozen (`gc.freeze`); the daemon releases them after each run.
    """
    global _gc_pauses
    with _gc_lock:
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
            with _gc_lock:
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
