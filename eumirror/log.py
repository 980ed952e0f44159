"""structlog set-up: readable on a terminal, JSON lines otherwise, always on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

log: Any = structlog.get_logger("eumirror")
LEVELS = ("debug", "info", "warning", "error")


def configure(
    level: str = "info", *, stream: TextIO | None = None, json: bool | None = None
) -> None:
    out = stream or sys.stderr
    as_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    if not as_json and out.isatty():
        # Each line first clears the terminal line that the live progress display uses.
        processors.append(lambda _logger, _name, line: "\r\x1b[K" + line)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
