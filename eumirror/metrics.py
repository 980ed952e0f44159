"""Prometheus metrics: placeholder."""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .store import Mirror
from .sync import RunReport


def write_textfile(path: Path, config: Config, mirror: Mirror, report: RunReport) -> None:
    raise NotImplementedError
