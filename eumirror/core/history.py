"""Generations of an upstream's published catalog, in the form they had before urls were rewritten.

Pure. A generation is the catalog's top-level fields and, per image, its fields with the dest of
its file (not its url): rendering it again with the current `public_url` gives the catalog a
client would get, so a rolled-back generation follows a later `public_url` change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from .plan import Action, Outcome, Plan
from .policy import dest_to_url

_ROWS_PER_CALL = 1000

Row = tuple[Mapping[str, Any], str]
"""An image's fields (its url as upstream or a previous catalog wrote it) and its dest ("" when
the entry was kept without a known file: its url is published as is)."""


def generation_rows(plan: Plan, ready: Iterable[str], outcome: Outcome) -> list[Row]:
    """The published images of `outcome`, in order, each with its dest (build_catalog's walk).

    A verified image keeps its upstream fields; a kept previous entry (its url already local)
    gets an empty url, so the generation does not depend on `public_url`.
    """
    verified = set(ready)
    rows: list[Row] = []
    entries = outcome.images
    for step in plan.steps:
        if step.action is not Action.FAIL and step.dest in verified:
            rows.append((step.fields, step.dest))
        elif step.index in outcome.kept:
            dest = outcome.published[step.source_url][1]
            entry = entries[len(rows)]
            rows.append(({**entry, "url": ""} if dest else entry, dest))
    return rows


def encode(top: Mapping[str, Any], rows: Sequence[Row]) -> bytes:
    """The generation's stored form: `[top without the image list, [[fields, dest], ...]]`."""
    head = {k: ([] if k == "images" else v) for k, v in top.items()}
    pairs = [[fields, dest] for fields, dest in rows]
    try:
        # orjson.dumps(doc)'s bytes, made a thousand rows a call: one call for 100k rows would
        # hold the GIL (and stall the status endpoint) for a tenth of a second or more.
        parts = [
            orjson.dumps(pairs[i : i + _ROWS_PER_CALL])[1:-1]
            for i in range(0, len(pairs), _ROWS_PER_CALL)
        ]
        return b"".join((b"[", orjson.dumps(head), b",[", b",".join(parts), b"]]"))
    except TypeError:  # an integer beyond 64 bits: the standard library takes it
        doc = [head, pairs]
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode(body: bytes) -> tuple[dict[str, Any], list[Row]]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:  # an integer beyond 64 bits
        doc = json.loads(body)
    if not (isinstance(doc, list) and len(doc) == 2 and isinstance(doc[0], dict)):
        raise ValueError("not a stored generation")
    rows: list[Row] = []
    for item in doc[1]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], dict)):
            raise ValueError("malformed image row")
        rows.append((item[0], str(item[1])))
    return doc[0], rows


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def render(
    rows: Iterable[Row], public_base: str, *, encode_plus: bool = False
) -> Iterator[Mapping[str, Any]]:
    """The images as published under `public_base` ("" for relative urls)."""
    for fields, dest in rows:
        url = dest_to_url(dest, public_base, encode_plus=encode_plus) if dest else ""
        yield {**fields, "url": url} if dest else fields


def dests_of(rows: Iterable[Row]) -> list[str]:
    """Each dest once, in the catalog's order."""
    return list(dict.fromkeys(dest for _, dest in rows if dest))


def names_of(dests: Iterable[str]) -> set[str]:
    """Image names of dests (`images/<name>/<file>`, names of ten digits: a slice is enough)."""
    return {d[7:17] for d in dests}


def kept_generations(numbers: Iterable[int], *, live: int | None, keep: int) -> list[int]:
    """Which generations stay: the newest `keep`, the live one always among them."""
    ordered = sorted(set(numbers))
    kept = ordered[-keep:]
    if live is not None and live in ordered and live not in kept:
        kept = [live, *kept[1:]] if keep > 1 else [live]
    return sorted(kept)


def previous_generation(numbers: Iterable[int], live: int | None) -> int | None:
    """The generation before the live one (the default target of a rollback)."""
    older = [n for n in numbers if live is None or n < live]
    return max(older) if older else None
