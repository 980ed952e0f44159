"""structlog set-up, always on stderr, in one of three formats.

`console` is for people at a terminal, `json` one object per line for log shippers and `docker
logs`, `journal` the same lines behind the `<N>` syslog priority prefix that systemd's journal
reads, so `journalctl -p warning` finds the warnings and errors. Without a choice (`--log-format`,
else `$EUMIRROR_LOG_FORMAT`) a terminal gets `console` and anything else `json`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from .core.errors import ConfigError
from .logchoices import FORMATS

log: Any = structlog.get_logger("eumirror")
FORMAT_VARIABLE = "EUMIRROR_LOG_FORMAT"
# syslog(3) priorities, as sd-daemon(3) prefixes: the journal strips them and keeps the level.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


def choose_format(flag: str | None, stream: TextIO) -> str:
    """--log-format, else $EUMIRROR_LOG_FORMAT, else console on a terminal and json elsewhere."""
    if flag:
        return flag
    chosen = os.environ.get(FORMAT_VARIABLE, "").strip().lower()
    if not chosen:
        return "console" if stream.isatty() else "json"
    if chosen not in FORMATS:
        raise ConfigError(
            f"{FORMAT_VARIABLE}={chosen!r} is not a log format",
            hint=f"use one of {', '.join(FORMATS)}",
        )
    return chosen


def _priority_prefix(_logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    """Remember the level before the renderer turns the event into a line."""
    event["_priority"] = PRIORITY.get(method, 6)
    return event


_JSON = structlog.processors.JSONRenderer()


def _journal_line(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    priority = event.pop("_priority", 6)
    event.pop("timestamp", None)  # the journal stamps every line itself
    line = _JSON(logger, method, event)
    return f"<{priority}>{line if isinstance(line, str) else line.decode()}"


def configure(
    level: str = "info",
    *,
    stream: TextIO | None = None,
    json: bool | None = None,
    fmt: str | None = None,
) -> str:
    """Set up the `log` above; returns the format chosen (`json=` is kept for older callers)."""
    out = stream or sys.stderr
    if fmt is None and json is not None:
        fmt = "json" if json else "console"
    chosen = choose_format(fmt, out)
    tty = out.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if chosen == "journal":
        processors += [_priority_prefix, _journal_line]
    elif chosen == "json":
        processors.append(_JSON)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=tty))
        if tty:
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
    return chosen


def debug_enabled() -> bool:
    """Whether debug events are written (asked once by a caller with a per-item event: with
    them filtered, building the event's fields is the only cost left, and it is not free)."""
    import logging

    probe = log.bind()
    return not hasattr(probe, "is_enabled_for") or bool(probe.is_enabled_for(logging.DEBUG))
