"""An upstream's kept generations on disk, under `.eumirror/history/<U>/`.

`<N>.catalog` holds generation N's stored form (core.history.encode), `<N>.dests` the dests it
points to (one a line: what the garbage collector must keep without parsing catalogs), and
`index.json` one small record per kept generation (number, when, images, added, removed, digest)
so `eumirror history` reads nothing large. Which generation is live, and a pin, are in the
upstream's meta state (`generation`, `pin`). Everything here runs with the mirror's lock held.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..core import history as gen
from ..core.errors import StorageError
from ..core.plan import Outcome, Plan
from ..storage.fs import Mirror, storage_error, syncfs


@dataclass(frozen=True)
class NewGeneration:
    """What a publish made: its number and the names it added and removed (for hooks)."""

    number: int
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    new: bool = True
    """False when the catalog went back to a kept generation (no new number)."""


@dataclass
class History:
    mirror: Mirror
    upstream: str
    _index: list[dict[str, Any]] | None = field(default=None, repr=False)
    _dests: dict[int, AbstractSet[str]] = field(default_factory=dict, repr=False)
    """Dests of the generation this object wrote (the others are read when asked: five kept
    sets of 100k dests would hold 60 MB)."""

    @property
    def folder(self) -> Path:
        return self.mirror.work / "history" / self.upstream

    def path(self, number: int, kind: str) -> Path:
        return self.folder / f"{number}.{kind}"

    # -- reading ----------------------------------------------------------------------------
    def index(self) -> list[dict[str, Any]]:
        """Records of the kept generations, oldest first ([] when there are none)."""
        if self._index is None:
            try:
                doc = orjson.loads((self.folder / "index.json").read_bytes())
            except (OSError, ValueError):
                doc = None
            items = doc.get("generations") if isinstance(doc, dict) else None
            self._index = [
                g
                for g in (items if isinstance(items, list) else [])
                if isinstance(g, dict) and isinstance(g.get("generation"), int)
            ]
        return self._index

    def numbers(self) -> list[int]:
        return [int(g["generation"]) for g in self.index()]

    def record(self, number: int) -> dict[str, Any] | None:
        return next((g for g in self.index() if g["generation"] == number), None)

    def load(self, number: int) -> tuple[dict[str, Any], list[gen.Row]]:
        """Generation `number`'s top-level fields and rows; StorageError if gone or altered."""
        path = self.path(number, "catalog")
        record = self.record(number)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise storage_error(exc, path, "reading generation") from None
        if record is None or gen.digest(body) != record.get("sha"):
            raise StorageError(
                f"generation {number} of {self.upstream} at {path} is altered",
                hint=f"roll back to another generation, or `eumirror unpin {self.upstream}`",
            )
        try:
            return gen.decode(body)
        except ValueError as exc:
            raise StorageError(f"{path}: {exc}") from None

    def dests(self, number: int) -> AbstractSet[str]:
        found = self._dests.get(number)
        return found if found is not None else set(self.iter_dests(number))

    def iter_dests(self, number: int) -> Iterator[str]:
        """Generation `number`'s dests, one at a time (none when its file is gone)."""
        found = self._dests.get(number)
        if found is not None:
            yield from found
            return
        try:
            with self.path(number, "dests").open(encoding="utf-8", newline="\n") as lines:
                for line in lines:
                    if dest := line.rstrip("\n"):
                        yield dest
        except OSError:
            return

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        chunks: Iterable[bytes],
        rows: Sequence[gen.Row],
        *,
        live: int | None,
        published: float,
        keep: int,
    ) -> NewGeneration:
        """Store a catalog as the next generation, or find it among the kept ones (then no new
        number); a new one is durable before it is published, and `keep` is applied.

        `chunks` (core.history.encode_chunks) are written as they come and hashed on the way:
        the stored form of a large catalog is never held whole."""
        number = max(self.numbers(), default=0) + 1
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, self.folder, "creating") from None
        # Three writes, one flush (syncfs) for all of them: durable before the catalog changes.
        # Until the index names it, <number>.catalog is nobody's: a kept twin just removes it.
        write = functools.partial(self.mirror.write_atomic, mode=0o600, durable=False)
        sha = hashlib.sha256()
        write(self.path(number, "catalog"), _hashed(chunks, sha))
        same = next((g for g in self.index() if g.get("sha") == sha.hexdigest()), None)
        if same is not None:
            with contextlib.suppress(OSError):
                self.path(number, "catalog").unlink()
            return NewGeneration(int(same["generation"]), new=False)
        before = self.dests(live) if live is not None else set()
        ordered = gen.dests_of(rows)
        dests = set(ordered)
        added, removed = gen.name_changes(dests, before)
        del before
        write(self.path(number, "dests"), _lines(ordered))
        entry = {
            "generation": number,
            "published": published,
            "images": len(rows),
            "added": len(added),
            "removed": len(removed),
            "sha": sha.hexdigest(),
        }
        self._save([*self.index(), entry], durable=False)
        try:
            syncfs(self.folder)
        except OSError as exc:
            raise storage_error(exc, self.folder, "flushing generation") from None
        self._dests[number] = dests
        self.prune(keep=keep, live=number)
        return NewGeneration(number, added, removed)

    def prune(self, *, keep: int, live: int | None) -> None:
        """Drop generations beyond `keep` (the live one stays); records first, then files."""
        kept = set(gen.kept_generations(self.numbers(), live=live, keep=keep))
        gone = [n for n in self.numbers() if n not in kept]
        if not gone:
            return
        self._save([g for g in self.index() if g["generation"] in kept])
        for number in gone:
            for kind in ("catalog", "dests"):
                with contextlib.suppress(OSError):
                    self.path(number, kind).unlink()

    def _save(self, items: list[dict[str, Any]], *, durable: bool = True) -> None:
        self.mirror.write_atomic(
            self.folder / "index.json",
            orjson.dumps({"generations": items}),
            mode=0o600,
            durable=durable,
        )
        self._index = items


def _lines(items: Sequence[str]) -> Iterator[bytes]:
    """One item a line, a thousand lines a chunk (a 100k-line file is never built whole)."""
    for start in range(0, len(items), 1000):
        yield "".join(f"{item}\n" for item in items[start : start + 1000]).encode()


def _hashed(chunks: Iterable[bytes], sha: Any) -> Iterator[bytes]:
    for chunk in chunks:
        sha.update(chunk)
        yield chunk


def extra_refs(history: History, referenced: Iterable[str]) -> list[str]:
    """Dests kept generations point to beyond `referenced` (what the files state publishes):
    the garbage collector keeps these too. Small: only what changed across the kept ones (so
    each generation's difference is taken, never the union of them all)."""
    refs = referenced if isinstance(referenced, AbstractSet) else set(referenced)
    extra: set[str] = set()
    for number in history.numbers():
        extra.update(d for d in history.iter_dests(number) if d not in refs)
    return sorted(extra)


class Publisher:
    """Chooses what one rebuild publishes: the new catalog (stored first as a generation when
    it changed), or, while the upstream is pinned, the pinned generation under today's urls."""

    def __init__(self, mirror: Mirror, upstream: str, meta: dict[str, Any], keep: int) -> None:
        self.history = History(mirror, upstream)
        self.meta = meta
        self.keep = keep
        self.made: NewGeneration | None = None
        self.images = 0

    @property
    def pin(self) -> int | None:
        return pinned(self.meta)

    def choose(
        self,
        plan: Plan,
        ready: Iterable[str],
        outcome: Outcome,
        public_base: str,
        *,
        now: float,
        on_disk: Collection[str],
        encode_plus: bool = False,
    ) -> tuple[Mapping[str, Any], Iterable[Mapping[str, Any]]]:
        """The top-level fields and images to publish; records the live generation in meta.

        A pinned generation's image whose tarball is no longer verified on disk (`on_disk`:
        damaged, quarantined) is left out rather than published knowingly broken.
        """
        if (pin := self.pin) is not None:
            top, rows = self.history.load(pin)
            rows = [row for row in rows if not row[1] or row[1] in on_disk]
            self.meta["generation"] = pin
            self.images = len(rows)
            return top, gen.render(rows, public_base, encode_plus=encode_plus)
        rows = gen.generation_rows(plan, ready, outcome)
        live = self.meta.get("generation")
        live = live if isinstance(live, int) else None
        made = self.history.add(
            gen.encode_chunks(plan.top, rows),
            rows,
            live=live if live is not None and self.history.record(live) else None,
            published=now,
            keep=self.keep,
        )
        if made.new or made.number != live:  # unchanged from the live one: nothing was made
            self.made = made
            self.meta["generation"] = made.number
        self.images = len(outcome.images)
        return plan.top, outcome.images

    def refs(self, referenced: Iterable[str]) -> None:
        """After publishing: what the kept generations hold beyond `referenced`, for GC."""
        if self.made is not None or self.pin is not None or "history_refs" not in self.meta:
            self.meta["history_refs"] = extra_refs(self.history, referenced)
            self.meta["history_keep"] = self.keep


def follow_keep(
    mirror: Mirror, upstream: str, meta: dict[str, Any], keep: int, referenced: Iterable[str]
) -> dict[str, Any]:
    """A changed keep_generations prunes at the next sync, even one with nothing to publish;
    the keys of `meta` it changed (a plain comparison when keep_generations is unchanged)."""
    if meta.get("history_keep", keep) == keep:
        return {}
    history = History(mirror, upstream)
    live = meta.get("generation")
    history.prune(keep=keep, live=live if isinstance(live, int) else None)
    changed = {"history_refs": extra_refs(history, referenced), "history_keep": keep}
    meta.update(changed)
    return changed


def pinned(meta: Mapping[str, Any]) -> int | None:
    """The generation an upstream is pinned to (by `eumirror rollback`), or None."""
    pin = meta.get("pin")
    return pin if isinstance(pin, int) and not isinstance(pin, bool) else None


def history_refs(meta: Mapping[str, Any]) -> frozenset[str]:
    """Dests only kept generations point to (recorded at the last publish or rollback)."""
    refs = meta.get("history_refs")
    if not isinstance(refs, list):
        return frozenset()
    return frozenset(r for r in refs if isinstance(r, str))
