"""The malloc settings apply where glibc is the C library, and are harmless elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from eumirror.engine.heap import keep_buffers_mapped


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_settings() -> None:
    assert keep_buffers_mapped() is True


def test_a_process_with_the_settings_still_frees_large_buffers_for_reuse() -> None:
    """Many 1 MiB buffers allocated and freed in turn: peak RSS stays near one buffer's worth."""
    code = (
        "import resource\n"
        "from eumirror.engine.heap import keep_buffers_mapped\n"
        "keep_buffers_mapped()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for _ in range(2000):\n"
        "    b = bytearray(1 << 20)\n"
        "    del b\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    grown_kib = int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert grown_kib < 8 * 1024
