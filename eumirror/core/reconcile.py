"""Whether an upstream's published state already is what the upstream and the configuration call
for, or why it must be rebuilt.

Pure. "Nothing to do" is decided from what is published, not from whether the upstream changed:
a configuration change, a damaged or missing tarball, an unfinished previous sync or an altered
catalog file all call for a rebuild, even when the upstream answers 304.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def published_fingerprint(*, public_base: str, **shaping: Any) -> str:
    """The part of the configuration that shapes an upstream's published catalog, hashed.

    `shaping` takes what later features add (filters, a pin) as plain JSON-able values.
    """
    doc = {"public_base": public_base, **shaping}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Published:
    """What the state says about the last publish, and what the cheap checks found now."""

    has_catalog: bool
    """The catalog file exists and is the one eumirror wrote (size and mtime as recorded)."""
    complete: bool
    """The last publish had every image verified."""
    fingerprint: str
    """published_fingerprint() of the configuration that publish was built with."""
    dirty: bool
    """A sync was cut off between placing files and saving the state."""
    missing: int
    """Published tarballs that are missing or no longer match their recorded size and mtime."""
    state_lost: bool = False
    """The state was missing or unreadable and was rebuilt from the files."""


def rebuild_reason(published: Published, *, fingerprint: str, upstream_changed: bool) -> str:
    """Why this sync must plan and publish again, or "" when what is published is up to date."""
    if upstream_changed:
        return "the upstream catalog changed"
    if published.state_lost:
        return "the state was rebuilt from the files"
    if not published.has_catalog:
        return "no catalog published yet, or it was altered"
    if published.dirty:
        return "the last sync was interrupted"
    if published.fingerprint != fingerprint:
        return "the configuration that shapes the catalog changed"
    if published.missing:
        return f"{published.missing} published tarballs are missing or damaged"
    if not published.complete:
        return "the last sync left images to retry"
    return ""


def catalog_matches(meta: Mapping[str, Any], size: int | None, mtime_ns: int | None) -> bool:
    """The published catalog file is the one the state recorded writing."""
    recorded = meta.get("catalog_stat")
    return (
        isinstance(recorded, list)
        and len(recorded) == 2
        and size is not None
        and recorded == [size, mtime_ns]
    )
