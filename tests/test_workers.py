"""The worker threads: results, errors and context come back to the awaiting coroutine."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from eumirror.engine.workers import in_worker, submit

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


async def test_the_result_comes_back_from_another_thread() -> None:
    value, name = await in_worker(lambda a, b: (a + b, threading.current_thread().name), 2, 3)
    assert value == 5 and name != threading.current_thread().name


async def test_an_error_is_raised_in_the_caller() -> None:
    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        await in_worker(fail)


async def test_the_callers_context_goes_along() -> None:
    where.set("caller")
    assert await in_worker(where.get) == "caller"


async def test_many_jobs_at_once_all_finish() -> None:
    results = await asyncio.gather(*(in_worker(pow, n, 2) for n in range(200)))
    assert results == [n * n for n in range(200)]


async def test_a_cancelled_caller_leaves_the_workers_serving() -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "late"

    task = asyncio.ensure_future(in_worker(slow))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await in_worker(str, 7) == "7"


async def test_a_submitted_job_runs_to_its_end_when_its_waiter_is_cancelled() -> None:
    """`submit` is how a download keeps its sealing job in view: a cancelled waiter stops
    waiting, but the job is never cancelled under the file it owns, and settles after."""
    started, release = threading.Event(), threading.Event()

    def job() -> str:
        started.set()
        release.wait(10)
        return "done"

    future = submit(job)
    waiter = asyncio.ensure_future(asyncio.shield(future))
    await asyncio.to_thread(started.wait, 10)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not future.done()
    release.set()
    assert await future == "done"


async def test_the_inventory_goes_once_every_run_is_through_with_it() -> None:
    """Built once for the runs that offered their files; kept while one of them may still
    need it (for links), let go when the last one is through (17 MB for 100k files)."""
    from pathlib import Path
    from typing import Any, cast

    from eumirror.core.config import Config
    from eumirror.engine.context import RunContext

    offered: list[str] = []

    def source(name: str) -> Any:
        async def offer() -> tuple[str, dict[str, list[Any]]]:
            offered.append(name)
            return name, {"images/0000000001/a.tgz": ["0000000001", 1, 1, "m"]}

        return offer

    unused = cast(Any, None)
    config = Config(path=Path("eumirror.toml"), root=Path("mirror"))
    ctx = RunContext(config, unused, unused, unused, unused)
    ctx.offer_verified(source("a"))
    ctx.offer_verified(source("b"))
    first = await ctx.inventory()
    assert first.find("0000000001") == ["a/images/0000000001/a.tgz", "b/images/0000000001/a.tgz"]
    ctx.through_with_inventory()
    assert await ctx.inventory() is first  # one run may still link from it
    ctx.through_with_inventory()
    assert offered == ["a", "b"]
    again = await ctx.inventory()  # gone: asked again (never, in a run), it is built afresh
    assert again is not first and offered == ["a", "b", "a", "b"]
