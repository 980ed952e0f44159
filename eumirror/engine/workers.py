"""Worker threads for the per-file disk and hashing jobs, handed work with as little locking
as possible.

asyncio.to_thread goes through concurrent.futures: a work item, a Future guarded by a Condition,
an idle-thread Semaphore, a callback chain. Each of those takes a Python-level lock that the
event loop thread and the workers contend for, and with thousands of small tarballs the GIL
hand-offs around them (futex calls, measured with strace) cost more than the jobs' own Python.
Here a job is one SimpleQueue put, one get, and one call_soon_threadsafe back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..tuning import enabled

T = TypeVar("T")

_jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
_threads: list[threading.Thread] = []
_lock = threading.Lock()
_POOL = enabled("worker-pool")
SIZE = min(32, (os.cpu_count() or 1) + 4)
"""As many as asyncio's default executor has."""


async def in_worker(func: Callable[..., T], /, *args: Any) -> T:
    """Run func(*args) in a worker thread (in this context, like asyncio.to_thread)."""
    return await submit(func, *args)


def submit(func: Callable[..., T], /, *args: Any) -> asyncio.Future[T]:
    """Start func(*args) in a worker thread; the future settles when it returns. The job runs
    to its end whatever happens to the future, so never cancel the future itself (it would look
    done while the job still runs): wait for it through `asyncio.shield` or `asyncio.wait`. For
    a job that must be kept in view on its own, cheaper than a task around `in_worker`."""
    if not _POOL:
        return asyncio.ensure_future(asyncio.to_thread(func, *args))
    _start()
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    context = contextvars.copy_context()
    _jobs.put((future, lambda: context.run(func, *args)))
    return future


def _start() -> None:
    if len(_threads) >= SIZE:
        return
    with _lock:
        while len(_threads) < SIZE:
            thread = threading.Thread(target=_work, name=f"eumirror-worker-{len(_threads)}")
            thread.daemon = True
            thread.start()
            _threads.append(thread)


def _work() -> None:
    while (job := _jobs.get()) is not None:
        future, call = job
        loop = future.get_loop()
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting coroutine
            _hand_back(loop, _settle_error, future, exc)
        else:
            _hand_back(loop, _settle, future, result)


def _hand_back(loop: asyncio.AbstractEventLoop, settle: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits, the worker stays
        loop.call_soon_threadsafe(settle, *args)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():
        future.set_result(result)


def _settle_error(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)
