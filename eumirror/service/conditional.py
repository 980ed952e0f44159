"""Conditional requests and single ranges (RFC 9110), as a pure decision over the headers.

`decide` takes the request's headers and the file's validators and says what to answer: 304, 416,
206 with a byte span, or 200. Multiple ranges and malformed Range headers are ignored (a 200), as
RFC 9110 allows; an If-Range that does not match strongly also gives the whole file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*\Z", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    status: int  # 200, 206, 304 or 416
    start: int = 0
    end: int = 0  # exclusive


def http_date(mtime: float) -> str:
    return _http_date(int(mtime))


@functools.lru_cache(maxsize=1024)
def _http_date(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


def etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match uses: `W/"x"` matches `"x"`; `*` matches anything."""
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def _not_after(header: str, mtime: float) -> bool:
    """True when the file was not modified after the date in `header` (whole seconds)."""
    try:
        when = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(mtime) <= when


def decide(headers: Mapping[str, str], *, etag: str, mtime: float, size: int) -> Answer:
    none_match = headers.get("If-None-Match")
    if none_match is not None:
        if etag_matches(none_match, etag):
            return Answer(304)
    elif (since := headers.get("If-Modified-Since")) is not None and _not_after(since, mtime):
        return Answer(304)
    header = headers.get("Range")
    if header is None or not _if_range_holds(headers.get("If-Range"), etag, mtime):
        return Answer(200, 0, size)
    m = _RANGE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return Answer(200, 0, size)
    first, last = m.group(1), m.group(2)
    if not first:  # a suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            return Answer(416)
        return Answer(206, max(0, size - count), size)
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return Answer(200, 0, size)
    if start >= size:
        return Answer(416)
    return Answer(206, start, end)


def _if_range_holds(value: str | None, etag: str, mtime: float) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        return value == etag
    return value == http_date(mtime)
