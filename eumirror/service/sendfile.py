"""Bodies handed to the kernel's sendfile, from the event loop or from a sender thread.

A large body on a plain TCP connection is sent by a thread of a small pool: it calls sendfile
and waits for the socket with poll(), both without the GIL, so each transfer refills its socket as
soon as the kernel drains it, on whichever core is free, instead of waiting for its turn in the
one event loop thread (nginx gets the same from its worker processes). The thread works on its
own duplicates of the socket and file descriptors, so nothing the event loop does to the
connection meanwhile (closing it, say) can make it write elsewhere. TLS connections, small bodies
and a busy pool go through `loop.sendfile` in steps instead.

Either way a client that takes nothing for `send_timeout` is dropped (nginx's send_timeout).
"""

from __future__ import annotations

import asyncio
import enum
import os
import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor

THREADED_MIN = 1 << 20
"""Bodies at least this large use a sender thread when one is free."""
SENDERS = 16
STEP = 1 << 20
"""First step of `loop.sendfile`; it doubles while the client keeps up, up to MAX_STEP."""
MAX_STEP = 64 << 20
_POLL_MS = 200  # how often a waiting sender thread looks whether it should give up


class Outcome(enum.Enum):
    DONE = "done"
    SLOW = "slow"  # nothing taken for send_timeout
    GONE = "gone"  # the client closed or reset the connection


class Sender:
    """Sends file spans to connections; one per content server."""

    def __init__(self, send_timeout: float) -> None:
        self.send_timeout = send_timeout
        self.pool = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="eumirror-send")
        self.busy = 0
        self.stops: set[threading.Event] = set()

    def close(self) -> None:
        """Sender threads still at work give up within a poll interval."""
        for stop in self.stops:
            stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def send(
        self, transport: asyncio.Transport, fd: int, start: int, end: int
    ) -> tuple[int, Outcome]:
        """Bytes sent from `fd`'s span [start, end) and how it ended."""
        if (
            end - start >= THREADED_MIN
            and self.busy < SENDERS
            and transport.get_extra_info("sslcontext") is None
            and transport.get_write_buffer_size() == 0
            and transport.get_extra_info("socket") is not None
        ):
            return await self._threaded(transport, fd, start, end)
        return await self._stepped(transport, fd, start, end)

    async def _threaded(
        self, transport: asyncio.Transport, fd: int, start: int, end: int
    ) -> tuple[int, Outcome]:
        sock_fd = os.dup(transport.get_extra_info("socket").fileno())
        file_fd = os.dup(fd)
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        self.busy += 1
        self.stops.add(stop)
        reading = transport.is_reading()  # as loop.sendfile does: restore, don't force
        transport.pause_reading()
        try:
            job = loop.run_in_executor(
                self.pool, _send_span, sock_fd, file_fd, start, end, self.send_timeout, stop
            )
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            stop.set()  # the thread closes its descriptors itself
            raise
        finally:
            self.busy -= 1
            self.stops.discard(stop)
            if reading and not transport.is_closing():
                transport.resume_reading()

    async def _stepped(
        self, transport: asyncio.Transport, fd: int, start: int, end: int
    ) -> tuple[int, Outcome]:
        loop = asyncio.get_running_loop()
        offset = start
        step = STEP
        with os.fdopen(os.dup(fd), "rb", buffering=0) as fobj:
            while offset < end:
                count = min(step, end - offset)
                began = loop.time()
                try:
                    async with asyncio.timeout(self.send_timeout):
                        await loop.sendfile(transport, fobj, offset, count)
                except ConnectionError:
                    return offset - start, Outcome.GONE
                except TimeoutError:
                    return offset - start, Outcome.SLOW
                offset += count
                if loop.time() - began < self.send_timeout / 8:
                    step = min(step * 2, MAX_STEP)
        return offset - start, Outcome.DONE


def _send_span(
    sock_fd: int, file_fd: int, start: int, end: int, timeout: float, stop: threading.Event
) -> tuple[int, Outcome]:
    """The sender thread: sendfile until the span is out, the client stops taking bytes for
    `timeout`, goes away, or `stop` is set. Closes both descriptors (its own duplicates)."""
    offset = start
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    last_progress = time.monotonic()
    outcome = Outcome.DONE
    try:
        while offset < end:
            try:
                sent = os.sendfile(sock_fd, file_fd, offset, end - offset)
            except BlockingIOError:
                sent = -1
            except (BrokenPipeError, ConnectionError):
                outcome = Outcome.GONE
                break
            if sent == 0:  # the file is shorter than it was: nothing more to send
                outcome = Outcome.GONE
                break
            now = time.monotonic()
            if sent > 0:
                offset += sent
                last_progress = now
                continue
            if stop.is_set():
                outcome = Outcome.GONE
                break
            if now - last_progress >= timeout:
                outcome = Outcome.SLOW
                break
            events = poller.poll(_POLL_MS)
            if any(flag & (select.POLLERR | select.POLLHUP) for _, flag in events):
                outcome = Outcome.GONE
                break
    finally:
        os.close(sock_fd)
        os.close(file_fd)
    return offset - start, outcome
