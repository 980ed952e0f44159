"""Generations of an upstream's published catalog, in the form they had before urls were rewritten.

Pure. A generation is the catalog's top-level fields and, per image, its fields with the dest of
its file (not its url): rendering it again with the current `public_url` gives the catalog a
client would get, so a rolled-back generation follows a later `public_url` change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
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
    return b"".join(encode_chunks(top, rows))


def encode_chunks(top: Mapping[str, Any], rows: Sequence[Row]) -> Iterator[bytes]:
    """`encode`'s bytes as a stream, a thousand rows a chunk: a 100k-image generation is
    written and hashed without ever being held whole (37 MB, twice while joined), and no
    single call holds the GIL (and stalls the status endpoint) for a tenth of a second."""
    head = {k: ([] if k == "images" else v) for k, v in top.items()}
    yield b"["
    yield _dumps(head)
    yield b",["
    for start in range(0, len(rows), _ROWS_PER_CALL):
        pairs = [[fields, dest] for fields, dest in rows[start : start + _ROWS_PER_CALL]]
        yield (b"," if start else b"") + _dumps(pairs)[1:-1]
    yield b"]]"


def _dumps(value: Any) -> bytes:
    """orjson; the standard library for what orjson refuses (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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


def name_changes(
    now: AbstractSet[str], before: AbstractSet[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The image names `now`'s dests add to and remove from `before`'s, sorted: `names_of(now)
    - names_of(before)` and back, without a set of every name (two of 100k each, 20 MB at the
    peak of a large catalog's publish). Only a name with a dest in one set and not the other
    can change, so only those names are looked up."""
    candidates = names_of(now - before) | names_of(before - now)
    if not candidates:
        return (), ()
    in_now = {n for d in now if (n := d[7:17]) in candidates}
    in_before = {n for d in before if (n := d[7:17]) in candidates}
    return tuple(sorted(in_now - in_before)), tuple(sorted(in_before - in_now))


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
