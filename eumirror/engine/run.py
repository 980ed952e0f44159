"""One upstream's sync: make what is published what the upstream catalog and the configuration
call for.

An `UpstreamRun` owns everything of its upstream for the run: the state it loaded, the plan, the
partial files, the errors and the report. It starts every task it needs inside its own task group
and returns only when they are done. Blocking work (state, checks, parse, plan, build, publish)
runs in threads that are handed what they need and hand back results.

The order is the promise: tarballs are verified and renamed into name-addressed paths first, then
the catalog that points at them is published atomically, then the state is saved, and only in the
second phase (`finish`, once every upstream has published) is anything deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from ..core.catalog import decode_strict, iter_catalog, parse_catalog
from ..core.config import Upstream
from ..core.errors import (
    CatalogError,
    EumirrorError,
    FetchError,
    ImageError,
    StorageError,
    VerifyError,
    first_error,
)
from ..core.plan import (
    Action,
    Plan,
    Step,
    build_catalog,
    make_plan,
    needs_previous_entries,
    shrink_refusal,
)
from ..core.policy import redact
from ..core.reconcile import Published, catalog_matches, published_fingerprint, rebuild_reason
from ..log import debug_enabled, log
from ..net.fetch import CatalogFetch, Validators
from ..net.messages import MAX_LINE, shorten
from ..storage.base import Download, DownloadOptions
from ..storage.fs import FileDigest, Files, partial_name, storage_error
from .context import RunContext
from .gcpause import freeze_survivors, paused_gc, short_gil_turns
from .history import NewGeneration, Publisher, follow_keep, history_refs, pinned
from .inventory import Loaded, clean_partials, collect_garbage, load_files
from .report import UpstreamReport, add_totals

T = TypeVar("T")
MANY = 3
"""Failures of one kind (no space, ...) at least this many are summed up in one line."""
PLACE_EVERY = 1000
"""Verified downloads placed (one flush, then their renames) in batches of this many."""


@dataclass(frozen=True)
class Fetched:
    """A verified download, waiting to be placed (a folder root: the batch flush and rename)."""

    step: Step
    download: Download
    digest: FileDigest
    final: Any

    @property
    def dest(self) -> str:
        return self.step.dest


class UpstreamRun:
    def __init__(self, ctx: RunContext, upstream: Upstream) -> None:
        self.ctx = ctx
        self.up = upstream
        self.name = upstream.name
        self.mirror = ctx.mirror
        self.store = ctx.storage
        self.report = UpstreamReport(upstream.name, started=ctx.clock())
        self.bound = log.bind(upstream=upstream.name)
        self.debug = debug_enabled()
        self.meta: dict[str, Any] = {}
        self.loaded: Loaded | None = None
        self._loading: asyncio.Task[Loaded] | None = None
        self.referenced: frozenset[str] | None = None
        """Dests the live catalog points to, once this run knows them."""
        self.errors: dict[str, str] = {}
        """dest -> why that image failed in this run."""
        self.kinds: Counter[str] = Counter()
        """Kinds of failure that may hit many images (no space): counted for one summary."""
        self.active_partials: set[str] = set()
        """File names (in the upstream's partial folder) of this run's downloads."""
        self.kept_partials: frozenset[str] = frozenset()
        self.meta_read = False
        self._needs_inventory = True
        self.body_sha = ""
        self.publish_pending = False
        """A catalog was published: the files state is saved (and the dirty mark cleared) in
        `finish`, after the clean-up, once."""
        self.cancelled = threading.Event()
        """Set when this run's thread work must stop (a stop, or its own failure)."""
        self.new_generation: NewGeneration | None = None
        """The generation this run published, when it is a new one (hooks run for it)."""
        self.live_images = 0
        """Images of the catalog this run published (the pinned generation's, when pinned)."""
        self.download_options = DownloadOptions(
            budget=ctx.budget,
            max_bytes=ctx.config.limits.max_image_bytes,
            on_length=ctx.progress.plan_bytes,
        )
        ctx.offer_verified(self._verified_for_inventory)
        ctx.cancel_flags.append(self.cancelled)

    @property
    def files(self) -> Files:
        assert self.loaded is not None
        return self.loaded.files

    # -- phase 1: converge and publish ------------------------------------------------------
    async def sync(self) -> None:
        """Any failure fails this upstream alone, with one line (the traceback at debug)."""
        try:
            await self._sync()
        except EumirrorError as exc:
            self._fail(exc.line())
        except Exception as exc:
            self._crashed(exc)
        finally:
            self._through_with_inventory()
            self.report.ended = self.ctx.clock()

    def _through_with_inventory(self) -> None:
        if self._needs_inventory:
            self._needs_inventory = False
            self.ctx.through_with_inventory()

    def _crashed(self, group: Exception) -> None:
        exc = first_error(group)
        if isinstance(exc, EumirrorError):
            self._fail(exc.line())
            return
        self.bound.debug("upstream_crashed", exc_info=group)
        self._fail(f"unexpected {type(exc).__name__}: {_short(exc)}; see the debug log")

    def _fail(self, line: str) -> None:
        self.report.result = "failure"
        self.report.error = line

    async def _sync(self) -> None:
        ctx, mirror = self.ctx, self.mirror
        self.store.check_upstream(self.name)  # refuses a symlinked <root>/<U> before any request
        # The state is loaded and checked in a thread while the catalog is fetched; both are
        # tasks of this run's group, so neither outlives it.
        async with asyncio.TaskGroup() as group:
            self._loading = group.create_task(self.in_thread(self._load, ctx.dry_run))
            meta = await self.in_thread(mirror.load_state, self.name, "meta")
            self.meta = meta or {}
            self.meta_read = True
            known = Validators()
            if not ctx.dry_run and self.meta.get("upstream_sha"):
                known = Validators(self.meta.get("etag"), self.meta.get("last_modified"))
            fetched = await self._fetch_catalog(known)
        loaded = self.loaded = self._loading.result()
        published = await self.in_thread(self._published_now, loaded)
        fingerprint = self._fingerprint()
        if fetched.body is not None:
            self.body_sha = await self.in_thread(_sha256, fetched.body)
        changed = fetched.body is not None and self.body_sha != self.meta.get("upstream_sha")
        reason = rebuild_reason(published, fingerprint=fingerprint, upstream_changed=changed)
        self.report.damaged = len(loaded.damaged)
        if not reason:
            self._unchanged()
            return
        body = fetched.body
        if body is None:
            body = await self.in_thread(self._upstream_copy)
            if body is None:  # the copy is gone or altered: fetch the catalog whole
                fetched = await self._fetch_catalog(Validators())
                body = fetched.body
                assert body is not None
                self.body_sha = await self.in_thread(_sha256, body)
        fresh = fetched.body is not None
        # From here `held` is the bytes' one reference: the planning thread empties it once
        # they are decoded (37 MB for 100k images that nothing reads after that and the copy).
        held = [body]
        del body
        fetched = dataclasses.replace(fetched, body=None)
        self.report.reason = reason
        self.bound.info("rebuilding", reason=reason)
        await self.in_thread(lambda: loaded.files)  # a rebuild needs the state parsed
        await self._rebuild(held, fetched, fingerprint, fresh=fresh)

    async def _fetch_catalog(self, known: Validators) -> CatalogFetch:
        return await self.ctx.fetcher.fetch_catalog(self.up.source, known, trust=self.up.trust)

    async def in_thread(self, func: Callable[..., T], /, *args: Any) -> T:
        """Blocking work off the event loop; a cancellation raises this run's flag, which long
        thread work checks between chunks, so a stop never waits for a whole re-hash."""
        try:
            return await asyncio.to_thread(func, *args)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def _load(self, dry_run: bool) -> Loaded:
        return load_files(self.mirror, self.store, self.name, self.cancelled, write=not dry_run)

    async def _verified_for_inventory(self) -> tuple[str, dict[str, list[Any]]] | None:
        loading = self._loading
        if loading is None:
            return None
        await asyncio.wait([loading])  # never raises, whatever became of the load
        if loading.cancelled() or loading.exception() is not None:
            return None
        # A copy: the inventory is built in a worker thread, and this run's records are its own.
        loaded = loading.result()
        return self.name, await self.in_thread(lambda: dict(loaded.files.files))

    def _published_now(self, loaded: Loaded) -> Published:
        stat = self.store.catalog_stat(self.name)
        return Published(
            has_catalog=catalog_matches(self.meta, *(stat if stat else (None, None))),
            state_lost=not loaded.trusted,
            complete=bool(self.meta.get("complete")),
            fingerprint=str(self.meta.get("config_fp", "")),
            dirty=loaded.dirty,
            missing=loaded.missing,
        )

    def _fingerprint(self) -> str:
        shaping: dict[str, Any] = {}
        if self.up.filters:  # unset adds nothing: fingerprints from before filters still hold
            shaping["filters"] = self.up.filters.doc()
        pin = pinned(self.meta)  # pinning and unpinning republish, even on a 304
        if pin is not None:
            shaping["pin"] = pin
        return published_fingerprint(public_base=self._public_base(), **shaping)

    def _public_base(self) -> str:
        public = self.ctx.config.public_url
        return f"{public}{self.name}/" if public else ""

    def _unchanged(self) -> None:
        report = self.report
        report.result, report.unchanged = "success", True
        report.images = int(self.meta.get("images", 0))
        report.reused = report.images
        report.filtered = int(self.meta.get("filtered", 0))
        assert self.loaded is not None
        self.referenced = self.loaded.referenced
        self.bound.info("catalog_unchanged", url=redact(self.up.source.url))

    def _upstream_copy(self) -> bytes | None:
        body = self.mirror.read_upstream_copy(self.name)
        if body is None or _sha256(body) != self.meta.get("upstream_sha"):
            return None
        self.body_sha = str(self.meta["upstream_sha"])
        return body

    async def _rebuild(
        self, held: list[bytes | bytearray], fetched: CatalogFetch, fingerprint: str, *, fresh: bool
    ) -> None:
        """`held`: the catalog's bytes, until planned; `fetched`: its validators."""
        ctx, report = self.ctx, self.report
        inventory = await ctx.inventory()
        plan = await self._plan_keeping_copy(held, inventory, fresh and not ctx.dry_run)
        report.dropped = len(plan.dropped)
        report.filtered = len(plan.filtered)
        refusal = "" if ctx.allow_shrink else shrink_refusal(plan, ctx.config.limits.max_shrink)
        if ctx.dry_run:
            if ctx.show_plan:
                ctx.show_plan(plan)
            report.result = "failure" if refusal else "success"
            report.error = refusal
            return
        if refusal:
            what = "the upstream's include/exclude" if plan.filtered else "the upstream"
            raise CatalogError(
                f"refused to publish: {refusal}",
                hint=f"check {what}; if the shrink is meant, run "
                "`eumirror sync --once --allow-shrink`",
            )
        await self.in_thread(self.mirror.mark_dirty, self.name)
        assert self.loaded is not None
        missing_before = self.loaded.referenced - self.files.files.keys()
        self.loaded.referenced = frozenset()  # the new catalog's replaces it (12 MB for 100k)
        ready = await self._materialise(plan)
        self._through_with_inventory()  # its last use: the links
        report.repaired = len(missing_before & ready)
        changed, outcome = await self.in_thread(self._publish, plan, ready)
        self.referenced = outcome.referenced
        report.published = changed
        report.images = self.live_images
        await self.in_thread(self._record_failures, outcome.failed, outcome.kept)
        report.result = "partial" if outcome.failed else "success"
        self.meta.update(
            {
                "etag": fetched.etag if fresh else self.meta.get("etag"),
                "last_modified": fetched.last_modified if fresh else self.meta.get("last_modified"),
                "upstream_sha": self.body_sha,
                "config_fp": fingerprint,
                "complete": not outcome.failed,
                "images": report.images,
                "filtered": report.filtered,
                "catalog_stat": list(
                    await self.in_thread(self.store.catalog_stat, self.name) or ()
                ),
            }
        )
        # The state is saved once, in `finish`, after the clean-up; until then the dirty mark
        # stays, so a crash in between makes the next run plan afresh.
        self.publish_pending = True
        generation = self.new_generation
        if generation is not None and generation.new and self.up.on_publish:
            report.hook_env = await self.in_thread(self._prepare_hook, generation)

    async def _plan_keeping_copy(
        self, held: list[bytes | bytearray], inventory: Any, keep_copy: bool
    ) -> Plan:
        """The plan; with `keep_copy`, the upstream's copy (for re-planning on a 304; its digest,
        saved with the state, vouches for it) is written meanwhile: I/O beside CPU work. Both
        threads end before this returns, whichever fails (a task group would cancel the other
        task but not its thread, which would then outlive the run)."""
        copying = None
        if keep_copy:  # made before planning starts, while `held` still holds the bytes
            copying = self.in_thread(self.mirror.save_upstream_copy, self.name, held[0])
        planning = self.in_thread(self._plan, held, inventory)
        if copying is None:
            return await planning
        plan, copied = await asyncio.gather(planning, copying, return_exceptions=True)
        for outcome in (plan, copied):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(plan, Plan)
        return plan

    def _prepare_hook(self, generation: NewGeneration) -> dict[str, str]:
        """The hook's name lists for a new generation (never for a rollback or a return to a
        kept generation)."""
        from ..service.hooks import prepare_hook

        removed, added = set(generation.removed), set(generation.added)
        return prepare_hook(
            self.mirror,
            self.name,
            generation.number,
            removed,
            added,
            root=self.ctx.config.where,
            catalog=self.store.where(self.name, "catalog"),
        )

    def _plan(self, held: list[bytes | bytearray], inventory: Any) -> Plan:
        """Parses the bytes `held` hands over and lets them go: 37 MB (100k images) not held
        while the objects are built (the upstream's copy, if being written, has its own)."""
        body = held.pop()
        text = decode_strict(body, max_bytes=self.ctx.config.limits.catalog_max_bytes)
        del body  # before its objects are built: the peak of a large catalog's parse
        with paused_gc():
            catalog = parse_catalog(text)
            del text
            self.bound.debug("catalog_parsed", images=len(catalog.images), bad=len(catalog.bad))
            previous = {src: pair[0] for src, pair in self.files.published.items()}
            plan = make_plan(
                upstream=self.name,
                source=self.up.source,
                catalog=catalog,
                previous=previous,
                inventory=inventory,
                filters=self.up.filters,
            )
        self.bound.debug(
            "planned", steps=len(plan.steps), drop=len(plan.dropped), filtered=len(plan.filtered)
        )
        return plan

    def _publish(self, plan: Plan, ready: set[str]) -> tuple[bool, Any]:
        """Build the catalog from what is verified now and publish it (in a thread)."""
        files = self.files
        entries: dict[str, Any] = {}
        if needs_previous_entries(plan, ready):
            entries = self._previous_entries()
        with paused_gc():
            outcome = build_catalog(
                plan,
                verified=ready,
                public_base=self._public_base(),
                previous_entries=entries,
                url_to_dest={url: dest for url, dest in files.published.values()},
                kept_files=files.files.keys(),
                encode_plus=self.store.plus_encoded,
            )
            # The old map goes now, not after publishing (22 MB less at the peak of a 100k
            # catalog's publish): a publish that fails saves no files state.
            files.published = outcome.published
            publisher = Publisher(
                self.mirror, self.name, self.meta, self.ctx.config.keep_generations
            )
            top, images = publisher.choose(
                plan,
                ready,
                outcome,
                self._public_base(),
                now=self.ctx.clock(),
                on_disk=files.files.keys(),
                encode_plus=self.store.plus_encoded,
            )
            changed = self.store.publish_catalog(self.name, iter_catalog(top, images))
            publisher.refs(outcome.referenced)
        made, self.live_images = publisher.made, publisher.images
        self.new_generation = made if made is not None and made.new else None
        return changed, outcome

    def _previous_entries(self) -> dict[str, Any]:
        body = self.store.read_catalog(self.name)
        if body is None:
            return {}
        try:
            old = parse_catalog(body)
        except CatalogError:
            return {}
        return {img.url: img.fields for img in old.images}

    def _record_failures(self, failed: Iterable[Step], kept: frozenset[int]) -> None:
        lines = self.report.failures
        many = {kind for kind, count in self.kinds.items() if count >= MANY}
        summed: Counter[str] = Counter()
        for step in failed:
            reason = self.errors.get(step.dest, step.reason)
            kind = _kind(reason)
            if kind in many:
                summed[kind] += 1
                continue
            lines.append(_failure_line(self.name, step, reason, step.index in kept))
        for kind, count in summed.items():
            lines.append(
                f"{self.name}: {count} images failed: {kind}; each kept its previous entry or "
                "was left out until a sync gets it right"
            )

    # -- downloads and links ----------------------------------------------------------------
    async def _materialise(self, plan: Plan) -> set[str]:
        """Bring every planned file into place; returns the dests that are verified now."""
        ctx, files, report = self.ctx, self.files, self.report
        ready = {s.dest for s in plan.steps if s.action is Action.REUSE}
        report.reused = len([s for s in plan.steps if s.action is Action.REUSE])
        downloads = plan.downloads()
        links = [s for s in plan.steps if s.action is Action.LINK]
        if downloads or links:
            self.kept_partials = await self.in_thread(self._prepare)
        ctx.progress.files_total += len(downloads)
        fetched: list[Fetched] = []
        placing = asyncio.Lock()

        async def place(batch: list[Fetched]) -> None:
            async with placing:  # one batch at a time: each is one flush, then its renames
                placed, refused = await self.in_thread(self._place, batch)
            ready.update(placed)
            for item, error in refused:  # the budget and progress belong to the loop
                item.download.discard()
                self._image_failed(item.step, error)
            freeze_survivors()

        # A few workers draw from one iterator instead of one task per tarball: 100k tasks
        # created at once held the event loop (and the status endpoint) for seconds.
        steps = iter(downloads.values())

        async def worker() -> None:
            for step in steps:
                if (done := await self._download(step)) is not None:
                    fetched.append(done)
                    if len(fetched) >= PLACE_EVERY:
                        # Placed as they come, a thousand at a time: holding every verified
                        # download until the end kept 100k of them (and their buffers'
                        # bookkeeping) alive, and each full GC pass walked them all.
                        batch = fetched[:]
                        fetched.clear()
                        await place(batch)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(len(downloads), ctx.config.concurrency * 4)):
                group.create_task(worker())
        if fetched:
            await place(fetched)
        inventory = await ctx.inventory() if links else None
        for step in links:
            mine = step.link_from.startswith(f"{self.name}/")
            record = (
                files.files.get(step.link_from.partition("/")[2])
                if mine
                else inventory.records.get(step.link_from)
                if inventory
                else None
            )
            ok = await self.in_thread(self._link, step, record)
            if ok:
                ready.add(step.dest)
                report.linked += 1
        if fetched or links:
            # One flush makes every new folder entry durable (a fsync per folder costs ~1 ms
            # each); the data itself was flushed before the renames.
            await self.in_thread(self.store.flush)
        return ready

    def _prepare(self) -> frozenset[str]:
        """The upstream's place exists (folders 0755 leading nowhere outside the root; no
        upload left over in a bucket); the partials an earlier run kept."""
        self.store.prepare_upstream(self.name)
        return self.store.kept_partials(self.name)

    def _link(self, step: Step, record: list[Any] | None) -> bool:
        """Hard-link a verified copy (this upstream's or another's): no request, no re-hash;
        the copy's state record vouches for it."""
        if record is None:
            self.errors[step.dest] = f"its copy {step.link_from} did not verify"
            return False
        try:
            self.files.files[step.dest] = self.store.link(
                step.link_from, self.name, step.dest, record
            )
        except (StorageError, OSError) as exc:
            line = exc.line() if isinstance(exc, StorageError) else str(exc)
            self.errors[step.dest] = line
            self.bound.warning("link_failed", image=step.name, error=line)
            return False
        return True

    def _place(self, fetched: list[Fetched]) -> tuple[set[str], list[tuple[Any, Any]]]:
        """Make the verified downloads visible; returns what was placed and what was refused
        (discarded by the caller, on the loop, which owns the space budget and the progress
        counters)."""
        records, refused = self.store.place(self.name, fetched)  # type: ignore[arg-type]
        self.files.files.update(records)
        self.report.downloaded += len(records)
        return set(records), refused

    async def _download(self, step: Step) -> Fetched | None:
        """Fetch and verify one tarball into the partial folder; None when it failed."""
        ctx, report = self.ctx, self.report
        key = hashlib.sha1(step.source_url.encode(), usedforsecurity=False).hexdigest()[:16]
        key = f"{step.name}.{key}"
        self.active_partials.add(partial_name(key))
        partial = self.store.new_download(
            self.name, step.dest, key, kept=self.kept_partials, options=self.download_options
        )
        # A kept partial is reopened (its prefix re-hashed) ahead, outside the transfer slots;
        # a new one is created by its first write, in a worker: the slots only wait on the network.
        async with ctx.preparing:
            try:
                if self.up.source.is_file:
                    self._check_file_image(step.source_url)
                known = await partial.open()
                resumed = partial.offset
                began = time.monotonic()
                if not (resumed and partial.current_name() == step.name):
                    async with ctx.transfers:
                        began = time.monotonic()
                        await ctx.fetcher.download(
                            step.source_url, partial, known, trust=self.up.trust
                        )
                    await partial.drain()
                digest, final = await partial.seal(
                    step.name, lambda: self.store.prepare_dest(self.name, step.dest)
                )
            except VerifyError as exc:
                partial.discard()
                report.verify_failures += 1
                self._image_failed(step, exc)
                return None
            except FetchError as exc:
                await partial.keep_for_resume()
                self._image_failed(step, exc)
                return None
            except EumirrorError as exc:
                partial.discard()
                self._image_failed(step, exc)
                return None
            except OSError as exc:
                partial.discard()
                path = self.mirror.partial_path(self.name, key)
                self._image_failed(step, storage_error(exc, path, "downloading into"))
                return None
            except BaseException:
                partial.close_when_idle()
                raise
        report.downloaded_bytes += digest.size - resumed
        ctx.progress.files_done += 1
        if self.debug:  # one line per tarball would flood the journal on a first sync
            self.bound.debug(
                "image_downloaded",
                image=step.name,
                url=redact(step.source_url),
                bytes=digest.size,
                resumed_from=resumed or None,
                duration=round(time.monotonic() - began, 3),
                result="verified",
            )
        return Fetched(step, partial, digest, final)

    def _check_file_image(self, url: str) -> None:
        """A file catalog's image must really be inside its folder (symlinks included)."""
        folder = os.path.realpath(self.up.source.folder())
        real = os.path.realpath(unquote(urlsplit(url).path))
        if os.path.commonpath([folder, real]) != folder:
            raise ImageError(f"{url} resolves outside the catalog's folder {folder}")

    def _image_failed(self, step: Step, exc: EumirrorError) -> None:
        self.ctx.progress.files_done += 1
        line = exc.line()
        self.errors[step.dest] = line
        self.kinds[_kind(line)] += 1
        self.bound.warning(
            "image_failed",
            image=step.name,
            url=redact(step.source_url),
            error=line,
            result="failure",
        )

    # -- phase 2: after every upstream has published ----------------------------------------
    async def finish(self) -> None:
        """Delete what nothing references any more, drop stale partials, record the run."""
        try:
            await self.in_thread(self._finish)
        except EumirrorError as exc:
            self.bound.error("state_not_saved", error=exc.line())
        except Exception as exc:
            self.bound.debug("finish_crashed", exc_info=True)
            self.bound.error("state_not_saved", error=f"{type(exc).__name__}: {_short(exc)}")
        self.log_report()

    @short_gil_turns()  # the files state's encoding and its index: 100k records
    def _finish(self) -> None:
        report, mirror = self.report, self.mirror
        kept: dict[str, Any] = {}
        if self.loaded is not None and report.catalog_ok and self.referenced is not None:
            kept = follow_keep(
                mirror, self.name, self.meta, self.ctx.config.keep_generations, self.referenced
            )
            loaded = self.loaded
            refs = self.referenced | history_refs(self.meta)  # kept generations' tarballs stay
            if not (loaded.untouched(refs) and not self.publish_pending):
                files = self.files
                before = len(files.files), len(files.removed)
                report.deleted = collect_garbage(
                    self.store,
                    self.name,
                    files,
                    refs,
                    now=self.ctx.clock(),
                    keep_removed=self.ctx.config.keep_removed,
                )
                if (
                    (len(files.files), len(files.removed)) != before
                    or loaded.rebuilt
                    or loaded.dirty
                    or self.publish_pending
                ):
                    mirror.save_state(self.name, "files", files.to_doc())
            settled = True
            clean_partials(mirror, self.name, keep=self.active_partials)
        else:
            settled = False
        # Files, then meta, then the dirty mark goes: a crash in between leaves the mark.
        meta = self.meta if self.meta_read else mirror.load_state(self.name, "meta") or {}
        meta.update(kept)
        if meta.get("damaged") and self.loaded is not None:
            # what verify found damaged, until a sync has it verified again or no longer serves it
            still = self.referenced or frozenset()
            meta["damaged"] = [
                d for d in meta["damaged"] if d in still and d not in self.files.files
            ]
        meta["last_run"] = report.to_doc()
        meta["totals"] = add_totals(meta.get("totals"), report)
        if report.catalog_ok:
            meta["last_success"] = report.ended
        mirror.save_state(self.name, "meta", meta)
        if settled:
            mirror.clear_dirty(self.name)

    def log_report(self) -> None:
        report = self.report
        event = self.bound.info if report.result == "success" else self.bound.warning
        event(
            "upstream_done",
            result=report.result,
            images=report.images,
            reused=report.reused,
            linked=report.linked,
            downloaded=report.downloaded,
            dropped=report.dropped,
            filtered=report.filtered or None,
            damaged=report.damaged or None,
            repaired=report.repaired or None,
            bytes=report.downloaded_bytes,
            duration=round(report.ended - report.started, 3),
            reason=report.reason or None,
            error=report.error or None,
        )


def _sha256(body: bytes | bytearray) -> str:
    return hashlib.sha256(body).hexdigest()


def _kind(reason: str) -> str:
    """The part of a failure that many images share (no space, a read-only disk), if any."""
    for marker in ("no space left on the device", "not enough space", "read-only filesystem"):
        if marker in reason:
            return marker
    return reason


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]


def _failure_line(upstream: str, step: Step, reason: str, kept: bool) -> str:
    """One line of at most MAX_LINE characters: the reason gives way, never what happened."""
    what = f"image #{step.index}" + (f" {step.name}" if step.name else "")
    where = f" ({shorten(redact(step.source_url))})" if step.source_url else ""
    fate = "kept its previous entry" if kept else "left out of the catalog"
    fate += " until a sync gets it right"
    room = MAX_LINE - len(f"eumirror: {upstream}: {what}{where}: ; {fate}")
    if len(reason) > room:
        reason = reason[: max(room - 3, 0)] + "..."
    return f"{upstream}: {what}{where}: {reason}; {fate}"
