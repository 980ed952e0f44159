"""The speed measures' mechanisms do what they claim (their gains are measured by bench/ab.py)."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import gc
import importlib
import os
import subprocess
import sys

from eumirror.core.names import CHUNK
from eumirror.engine.gcpause import freeze_survivors, paused_gc, release_frozen


def test_objects_built_while_the_gc_is_paused_are_frozen_then_released() -> None:
    """What a paused phase builds is moved out of the collector's sight, and the daemon's
    release between runs hands it back."""
    release_frozen()
    before = gc.get_freeze_count()
    with paused_gc():
        assert not gc.isenabled()
        built = [[i] for i in range(1000)]
    assert gc.get_freeze_count() >= before + len(built)
    release_frozen()
    assert gc.get_freeze_count() < len(built)


def test_survivors_of_a_long_run_are_frozen_then_released() -> None:
    """Between batches of a long run, what survived leaves the collector's sight (so a full
    pass does not walk it again), and the release after the run hands it back."""
    release_frozen()
    kept = [[i] for i in range(1000)]
    freeze_survivors()
    assert gc.get_freeze_count() >= len(kept)
    release_frozen()
    assert gc.get_freeze_count() < len(kept)


def with_and_without(code: str, measure: str) -> tuple[str, str]:
    """What `code` prints in a fresh interpreter, with the measure on and with it switched off."""
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "EUMIRROR_BENCH_DISABLE": measure},
    )
    return on.stdout, off.stdout


def test_heavy_phases_take_short_gil_turns_and_give_the_default_back() -> None:
    """While a phase builds large structures (with the GC paused), a busy thread hands the GIL
    over after 1 ms, so the event loop answers /healthz between its turns; phases overlapping
    in two threads keep it until the last one ends; the benchmark switch leaves Python's 5 ms
    alone."""
    code = (
        "import sys, threading; from eumirror.engine.gcpause import paused_gc\n"
        "inside, leave = threading.Event(), threading.Event()\n"
        "def other():\n"
        "    with paused_gc(): inside.set(); leave.wait()\n"
        "t = threading.Thread(target=other)\n"
        "with paused_gc():\n"
        "    print(sys.getswitchinterval()); t.start(); inside.wait()\n"
        "print(sys.getswitchinterval()); leave.set(); t.join()\n"
        "print(sys.getswitchinterval())"
    )
    on, off = with_and_without(code, "short-switch")
    assert on.split() == ["0.001", "0.001", "0.005"]
    assert off.split() == ["0.005", "0.005", "0.005"]


def test_socket_reads_are_one_mib_once_a_fetcher_starts() -> None:
    """The fetcher raises asyncio's per-read size to the hashing chunk (1 MiB); the benchmark
    switch leaves asyncio's default alone."""
    code = (
        "import asyncio, asyncio.selector_events as s;"
        "from eumirror.net.fetch import _larger_socket_reads;"
        "_larger_socket_reads(); print(s._SelectorSocketTransport.max_size)"
    )
    on, off = with_and_without(code, "big-reads")
    assert int(on) == CHUNK
    assert int(off) == 256 * 1024


def test_the_benchmark_switch_turns_the_worker_pool_into_to_thread() -> None:
    """With the pool off, jobs run through asyncio.to_thread (the A/B baseline)."""
    code = (
        "import asyncio, threading;"
        "from eumirror.engine.workers import in_worker;"
        "print(asyncio.run(in_worker(lambda: threading.current_thread().name)))"
    )
    on, off = with_and_without(code, "worker-pool")
    assert on.startswith("eumirror-worker-")
    assert off.startswith("asyncio_")


def test_tuning_switches_are_read_from_the_environment(monkeypatch: object) -> None:
    """Unset, every measure is on."""
    import eumirror.tuning as tuning

    saved = os.environ.pop("EUMIRROR_BENCH_DISABLE", None)
    try:
        importlib.reload(tuning)
        assert tuning.enabled("gc-freeze") and tuning.enabled("worker-pool")
        assert not tuning.PER_FILE_FLUSH
    finally:
        if saved is not None:
            os.environ["EUMIRROR_BENCH_DISABLE"] = saved
        importlib.reload(tuning)
    assert asyncio.selector_events is not None
