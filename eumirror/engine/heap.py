"""glibc malloc settings for a process that moves gigabytes through short-lived buffers.

Every socket read allocates a buffer of up to 1 MiB (asyncio's transport reads into a fresh
bytes object). By default glibc serves such sizes with mmap, or trims them off the heap when
freed, so each read faults its pages in again and unmaps them after: measured, about a third of
the system CPU of a sync of many small tarballs. Keeping those sizes on the heap and not
trimming below 32 MiB lets the next read reuse the same, already mapped pages.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20


def keep_buffers_mapped() -> bool:
    """Apply the settings where glibc is the allocator; True when it was."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
