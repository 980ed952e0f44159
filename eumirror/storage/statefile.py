"""The files state's on-disk layout: one JSON document, written and read in chunks.

A 100k-tarball mirror's files state is ~25 MB of JSON. orjson parses it in one call that holds
the GIL for a quarter of a second or more, and the status endpoint, on the event loop, waits that
long. So the big maps are written a thousand records to a line (still one valid JSON document,
readable by jq) and read back line by line: the same work, with the GIL free between lines.

Pure: bytes in, plain data out. Anything that is not exactly this layout (a state written before
it, an edited file) is parsed whole, as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson

RECORDS_PER_LINE = 1000
"""~250 KB of JSON a line: a few milliseconds of parsing each."""


def iter_chunked(doc: dict[str, Any]) -> Iterator[bytes]:
    """`doc` as JSON, piece by piece (a writer streams it: no second copy of 25 MB): its scalar
    members on the first line (in order), then each map member, RECORDS_PER_LINE entries a
    line."""
    head = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    yield orjson.dumps(head)[:-1]
    for key, value in doc.items():
        if not isinstance(value, dict):
            continue
        yield b"\n," + orjson.dumps(key) + b":{\n"
        items = iter(value.items())
        separator = b""
        while chunk := dict(itertools.islice(items, RECORDS_PER_LINE)):
            yield separator + orjson.dumps(chunk)[1:-1]
            separator = b",\n"
        yield b"\n}"
    yield b"\n}\n"


def loads_chunked(data: bytes) -> Any:
    """Parse a document `iter_chunked` wrote, a line at a time; any other JSON whole.
    Raises ValueError (orjson.JSONDecodeError) for what is not JSON at all."""
    try:
        found = _by_lines(data)
    except ValueError:
        found = None
    return orjson.loads(data) if found is None else found


def _lines(data: bytes, stop: int) -> Iterator[bytes]:
    """The lines of `data[:stop]`, one copy at a time (split() would copy all 25 MB at once)."""
    start = 0
    while (end := data.find(b"\n", start, stop)) >= 0:
        yield data[start:end]
        start = end + 1
    yield data[start:stop]


def _by_lines(data: bytes) -> dict[str, Any] | None:
    if not (data.startswith(b"{") and data.endswith(b"\n}\n")):
        return None
    lines = _lines(data, len(data) - 3)  # the closing "}" is checked above
    doc = orjson.loads(next(lines) + b"}")
    if not isinstance(doc, dict):
        return None
    loads = orjson.loads
    for header in lines:
        if not (header.startswith(b',"') and header.endswith(b'":{')):
            return None
        key = loads(header[1:-2])
        section: dict[str, Any] = {}
        for line in lines:
            if line == b"}":
                break
            part = loads(b"{" + (line[:-1] if line.endswith(b",") else line) + b"}")
            if not isinstance(part, dict):
                return None
            section.update(part)
        else:
            return None  # a section without its closing line
        doc[key] = section
    return doc
