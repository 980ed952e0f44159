"""The daemon: placeholder until the daemon issue lands."""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .errors import EumirrorError


async def run_daemon(config: Config, path: Path) -> int:
    raise EumirrorError("the daemon is not built yet; use `eumirror sync --once`")
