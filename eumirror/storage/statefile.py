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
from typing import Any

import orjson

RECORDS_PER_LINE = 1000
"""~250 KB of JSON a line: a few milliseconds of parsing each."""


def dumps_chunked(doc: dict[str, Any]) -> bytes:
    """`doc` as JSON: its scalar members on the first line (in order), then each map member,
    RECORDS_PER_LINE entries a line."""
    head = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    out = [orjson.dumps(head)[:-1]]
    for key, value in doc.items():
        if not isinstance(value, dict):
            continue
        out.append(b"\n," + orjson.dumps(key) + b":{\n")
        items = iter(value.items())
        lines = []
        while chunk := dict(itertools.islice(items, RECORDS_PER_LINE)):
            lines.append(orjson.dumps(chunk)[1:-1])
        out.append(b",\n".join(lines))
        out.append(b"\n}")
    out.append(b"\n}\n")
    return b"".join(out)


def loads_chunked(data: bytes) -> Any:
    """Parse a document `dumps_chunked` wrote, a line at a time; any other JSON whole.
    Raises ValueError (orjson.JSONDecodeError) for what is not JSON at all."""
    try:
        found = _by_lines(data)
    except (ValueError, IndexError):
        found = None
    return orjson.loads(data) if found is None else found


def _by_lines(data: bytes) -> dict[str, Any] | None:
    lines = data.split(b"\n")
    if len(lines) < 3 or lines[-2:] != [b"}", b""] or not lines[0].startswith(b"{"):
        return None
    doc = orjson.loads(lines[0] + b"}")
    if not isinstance(doc, dict):
        return None
    loads, end, i = orjson.loads, len(lines) - 2, 1
    while i < end:
        header = lines[i]
        if not (header.startswith(b',"') and header.endswith(b'":{')):
            return None
        key = loads(header[1:-2])
        i += 1
        section: dict[str, Any] = {}
        while lines[i] != b"}":
            line = lines[i]
            if line.endswith(b","):
                line = line[:-1]
            part = loads(b"{" + line + b"}")
            if not isinstance(part, dict):
                return None
            section.update(part)
            i += 1
        doc[key] = section
        i += 1
    return doc if i == end else None
