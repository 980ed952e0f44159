"""Which images of an upstream are mirrored: `include` / `exclude` tables of field -> globs.

Pure. An image is kept when, for every key of `include`, its field matches one of that key's
globs, and no key of `exclude` matches. Matching is case-insensitive (both sides casefolded, then
`fnmatchcase`); a string matches as itself, a number or boolean as its JSON text, a list when any
element does; null and objects never match, and a missing field matches nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

Rules = tuple[tuple[str, tuple[str, ...]], ...]
"""(field, casefolded globs) pairs, in the order the configuration gave them."""


@dataclass(frozen=True)
class Filters:
    include: Rules = ()
    exclude: Rules = ()

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def dropped_by(self, fields: Any) -> str:
        """The rule that leaves this image out, as the operator wrote it ("" when it is kept)."""
        if not isinstance(fields, Mapping):
            return ""
        for key, globs in self.include:
            if not _matches(fields, key, globs):
                return f"include {key} = {_show(globs)}"
        for key, globs in self.exclude:
            if _matches(fields, key, globs):
                return f"exclude {key} = {_show(globs)}"
        return ""

    def doc(self) -> dict[str, Any]:
        """A JSON-able form for the published catalog's configuration fingerprint."""
        return {
            "include": [[k, list(g)] for k, g in self.include],
            "exclude": [[k, list(g)] for k, g in self.exclude],
        }


def parse_filters(include: Any, exclude: Any) -> Filters:
    """From the TOML tables; ValueError("include.os: ...") names the offending key."""
    return Filters(_rules("include", include), _rules("exclude", exclude))


def _rules(kind: str, table: Any) -> Rules:
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise ValueError(f'{kind}: must be a table of field = [globs], e.g. {{ os = ["debian*"] }}')
    rules = []
    for key, globs in table.items():
        if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            raise ValueError(f'{kind}.{key}: must be a list of strings, e.g. ["x86_64"]')
        rules.append((key, tuple(g.casefold() for g in globs)))
    return tuple(rules)


def _matches(fields: Mapping[str, Any], key: str, globs: tuple[str, ...]) -> bool:
    if key not in fields:
        return False
    return any(fnmatchcase(text, glob) for text in _texts(fields[key]) for glob in globs)


def _texts(value: Any) -> Iterator[str]:
    """The casefolded texts a field's value matches as; null and objects give none."""
    if isinstance(value, str):
        yield value.casefold()
    elif isinstance(value, bool | int | float):
        yield json.dumps(value)
    elif isinstance(value, list):
        for element in value:
            yield from _texts(element)


def _show(globs: tuple[str, ...]) -> str:
    return json.dumps(list(globs))
