"""Which request paths the content server answers, decided from the raw path alone (pure).

Only the published layout is reachable: `/`, `/<U>/` (listings), `/<U>` (a redirect),
`/<U>/catalog` and `/<U>/images/<name>/<file>`. Everything else, including `.eumirror/`, any
`.`/`..` segment however it is encoded, an encoded slash or any backslash, is None (404).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from ..core.config import UPSTREAM_NAME

NAME = re.compile(r"[0-9]{10}\Z")
_FORBIDDEN_RAW = re.compile(r"%(2f|5c|00)|\\", re.IGNORECASE)
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class Route:
    """kind: `index` (the root listing), `listing` (`/<U>/`), `redirect` (`/<U>`) or `file`."""

    kind: str
    upstream: str = ""
    parts: tuple[str, ...] = ()

    @property
    def is_catalog(self) -> bool:
        return self.kind == "file" and len(self.parts) == 2


@functools.lru_cache(maxsize=4096)
def route(raw_path: str) -> Route | None:
    """The route for a raw (still percent-encoded) request path, or None for 404 (cached: the
    same few paths, a catalog above all, are asked for again and again)."""
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/") or _FORBIDDEN_RAW.search(path):
        return None
    segments = []
    for raw in path[1:].split("/"):
        try:
            segment = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if segment.startswith(".") or _FORBIDDEN.search(segment):
            return None
        segments.append(segment)
    if segments == [""]:
        return Route("index")
    upstream = segments[0]
    if not UPSTREAM_NAME.match(upstream):
        return None
    rest = segments[1:]
    if not rest:
        return Route("redirect", upstream)
    if rest == [""]:
        return Route("listing", upstream)
    if rest == ["catalog"]:
        return Route("file", upstream, (upstream, "catalog"))
    if len(rest) == 3 and rest[0] == "images" and NAME.match(rest[1]) and rest[2]:
        return Route("file", upstream, (upstream, *rest))
    return None
