"""`eumirror history`, `eumirror rollback` and `eumirror unpin`: an upstream's kept generations,
publishing an older one (and pinning the upstream to it), and letting syncs publish again."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..core import history as gen
from ..core.catalog import iter_catalog
from ..core.config import Config
from ..core.errors import ExitCode
from ..engine.history import History, extra_refs, pinned
from ..log import log
from ..service.status import epoch, iso
from ..storage.base import Storage, open_storage, work_area
from ..storage.fs import Files, Mirror


def generations(mirror: Mirror, upstream: str) -> list[dict[str, Any]]:
    """The kept generations as `history --json` shows them, oldest first."""
    meta = mirror.load_state(upstream, "meta") or {}
    live, pin = meta.get("generation"), pinned(meta)
    return [
        {
            "generation": g["generation"],
            "published": iso(epoch(g.get("published")), precise=False),
            "images": int(g.get("images", 0)),
            "added": int(g.get("added", 0)),
            "removed": int(g.get("removed", 0)),
            "live": g["generation"] == live,
            "pinned": g["generation"] == pin,
        }
        for g in History(mirror, upstream).index()
    ]


def show_history(config: Config, upstream: str, *, as_json: bool) -> int:
    rows = generations(work_area(config), upstream)
    if as_json:
        print(json.dumps(rows, indent=2))
        return int(ExitCode.OK)
    if not rows:
        print(f"{upstream}: no generation kept yet (a sync that publishes makes the first)")
        return int(ExitCode.OK)
    print(f"{'GEN':>5}  {'PUBLISHED (UTC)':<20}  {'IMAGES':>7}  {'ADDED':>6}  {'REMOVED':>7}")
    for row in rows:
        mark = " live" if row["live"] else ""
        mark += " (pinned)" if row["pinned"] else ""
        print(
            f"{row['generation']:>5}  {row['published'] or '-':<20}  {row['images']:>7}  "
            f"{row['added']:>6}  {row['removed']:>7}{mark}"
        )
    return int(ExitCode.OK)


def rollback(config: Config, upstream: str, to: int | None) -> int:
    """Publish generation `to` (default: the one before the live one) and pin the upstream.

    The pin is saved durably first, then the catalog is renamed into place: a crash in between
    leaves the old catalog live and the pin set, and the next sync publishes the pinned one.
    """
    mirror = work_area(config)
    if not mirror.work.exists():
        return _refuse(f"{upstream}: nothing published yet, no generation to roll back to")
    with mirror.locked():
        storage = open_storage(config, mirror)
        try:
            return _rollback(config, mirror, storage, upstream, to)
        finally:
            storage.close()


def _rollback(
    config: Config, mirror: Mirror, storage: Storage, upstream: str, to: int | None
) -> int:
    history = History(mirror, upstream)
    meta = mirror.load_state(upstream, "meta") or {}
    live = meta.get("generation")
    target = to if to is not None else gen.previous_generation(history.numbers(), live)
    kept = ", ".join(map(str, history.numbers())) or "none"
    if target is None or history.record(target) is None:
        what = f"generation {target}" if target is not None else "an older generation"
        return _refuse(f"{upstream}: {what} is not kept (kept: {kept})")
    top, rows = history.load(target)
    dests = gen.dests_of(rows)
    missing = sorted(set(dests) - set(storage.scan_unknown(upstream, {})))
    if missing:
        return _refuse(
            f"{upstream}: generation {target} points to {len(missing)} tarballs that are "
            f"no longer there (e.g. {storage.where(upstream, missing[0])}); not rolled back"
        )
    meta["pin"] = target
    mirror.save_state(upstream, "meta", meta)  # durable before the catalog changes
    base = f"{config.public_url}{upstream}/" if config.public_url else ""
    rendered = gen.render(rows, base, encode_plus=storage.plus_encoded)
    storage.publish_catalog(upstream, iter_catalog(top, rendered))
    files = Files.from_doc(mirror.load_state(upstream, "files"))
    meta.update(
        config_fp="",  # whatever happens next (unpin included), the next sync re-plans
        generation=target,
        images=len(rows),
        catalog_stat=list(storage.catalog_stat(upstream) or ()),
        history_refs=extra_refs(history, (d for _, d in files.published.values())),
    )
    mirror.save_state(upstream, "meta", meta)
    log.info("rolled_back", upstream=upstream, generation=target, previous=live, pinned=True)
    print(
        f"{upstream}: generation {target} is live and pinned (was {live}); syncs keep "
        f"downloading but publish nothing new until `eumirror unpin {upstream}`"
    )
    return int(ExitCode.OK)


def unpin(config: Config, upstream: str) -> int:
    mirror = work_area(config)
    if not mirror.work.exists():
        print(f"{upstream}: not pinned")
        return int(ExitCode.OK)
    with mirror.locked():
        meta = mirror.load_state(upstream, "meta") or {}
        pin = pinned(meta)
        if pin is None:
            print(f"{upstream}: not pinned")
            return int(ExitCode.OK)
        del meta["pin"]
        meta["config_fp"] = ""  # the next sync publishes, even on a 304
        mirror.save_state(upstream, "meta", meta)
    log.info("unpinned", upstream=upstream, generation=pin)
    print(f"{upstream}: unpinned; the next sync publishes the upstream's current catalog")
    return int(ExitCode.OK)


def _refuse(line: str) -> int:
    log.error("rollback_refused", error=line)
    print(f"eumirror: {line}", file=sys.stderr)
    return int(ExitCode.FAILED)
