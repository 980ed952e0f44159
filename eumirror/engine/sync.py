"""One sync of every upstream: fetch catalog -> plan -> bounded downloads -> publish -> clean up.

The order is the promise: tarballs are verified and renamed into name-addressed paths first, then
the catalog that points at them is published atomically, and only then is anything deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..core.catalog import iter_catalog, parse_catalog
from ..core.config import Config, Upstream
from ..core.errors import (
    CatalogError,
    EumirrorError,
    FetchError,
    ImageError,
    StorageError,
    VerifyError,
)
from ..core.plan import (
    Action,
    Inventory,
    Plan,
    Step,
    build_catalog,
    make_plan,
    needs_previous_entries,
    shrink_refusal,
)
from ..core.policy import redact
from ..core.progress import Progress
from ..log import log
from ..net.fetch import CatalogFetch, Fetcher, Validators
from ..storage.fs import FileDigest, Files, Mirror, record_of, storage_error, syncfs
from .download import PartialFile, SpaceBudget
from .gcpause import paused_gc
from .inventory import clean_partials, collect_garbage, load_inventory
from .workers import in_worker


@dataclass
class UpstreamReport:
    """What one upstream's sync did: the facts behind the log, /status and the exit code."""

    name: str
    started: float = 0.0
    ended: float = 0.0
    result: str = "failure"  # success | partial | failure
    images: int = 0
    reused: int = 0
    linked: int = 0
    downloaded: int = 0
    dropped: int = 0
    deleted: int = 0
    downloaded_bytes: int = 0
    verify_failures: int = 0
    unchanged: bool = False
    published: bool = False  # a new catalog went live (downstreams are notified)
    error: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def catalog_ok(self) -> bool:
        return self.result in ("success", "partial")

    def to_doc(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class RunReport:
    upstreams: list[UpstreamReport]

    @property
    def ok(self) -> bool:
        return all(u.result == "success" for u in self.upstreams)

    @property
    def result(self) -> str:
        """success, partial (every catalog published, some image failed) or failure."""
        if self.ok:
            return "success"
        return "partial" if all(u.catalog_ok for u in self.upstreams) else "failure"


class Syncer:
    def __init__(
        self,
        config: Config,
        mirror: Mirror,
        fetcher: Fetcher,
        *,
        dry_run: bool = False,
        allow_shrink: bool = False,
        progress: Progress | None = None,
        show_plan: Callable[[Plan], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.mirror = mirror
        self.fetcher = fetcher
        self.dry_run = dry_run
        self.allow_shrink = allow_shrink
        self.progress = progress or Progress()
        self.show_plan = show_plan
        self.clock = clock
        self.semaphore = asyncio.Semaphore(config.concurrency)
        self.preparing = asyncio.Semaphore(config.concurrency * 4)
        self.files: dict[str, Files] = {}
        self.inventory = Inventory()
        self.active_partials: set[Path] = set()
        self.kept_partials: frozenset[str] | None = None
        """Names in .eumirror/partial before this run's downloads: the ones they may resume."""
        self.errors: dict[tuple[str, str], str] = {}
        """(upstream, dest) -> why that image failed in this run."""
        self.published: dict[str, frozenset[str]] = {}
        """Upstreams whose catalog was published in this run -> the dests it points to."""
        self.meta: dict[str, dict[str, Any]] = {}
        self.touched: set[str] = set()
        """Upstreams whose files state changed in this run and must be saved."""
        self.budget: SpaceBudget | None = None
        self._inventory_task: asyncio.Future[Any] | None = None

    # -- the run ----------------------------------------------------------------------------
    async def run(self) -> RunReport:
        """Fetch every catalog first: when none changed, the inventory is never even loaded."""
        if not self.dry_run:
            await asyncio.to_thread(self.mirror.clear_scratch)
        ups = self.config.upstreams
        reports = [UpstreamReport(up.name, started=self.clock()) for up in ups]
        began = time.monotonic()
        fetched = await asyncio.gather(
            *(
                self._guard(up, report, self._fetch(up, report))
                for up, report in zip(ups, reports, strict=True)
            )
        )
        await asyncio.gather(
            *(
                self._guard(up, report, self._apply(up, report, body))
                for up, report, body in zip(ups, reports, fetched, strict=True)
                if body is not None
            )
        )
        if self._inventory_task is not None:
            await self._inventory_loaded()
        for report in reports:
            report.ended = report.started + (time.monotonic() - began)
            self._log_report(report)
        if not self.dry_run:
            for up, report in zip(ups, reports, strict=True):
                self._finish(up, report)
            done = {r.name for r in reports if r.catalog_ok}
            clean_partials(self.mirror, keep=self.active_partials, upstreams=done)
        return RunReport(reports)

    def _start_inventory(self) -> None:
        """Load what is verified on disk in a worker thread, while catalogs are parsed."""
        if self._inventory_task is None:
            names = [up.name for up in self.config.upstreams]
            self._inventory_task = asyncio.ensure_future(
                asyncio.to_thread(load_inventory, self.mirror, names)
            )

    async def _inventory_loaded(self) -> None:
        self._start_inventory()
        assert self._inventory_task is not None
        files, inventory, rebuilt = await asyncio.shield(self._inventory_task)
        if not self.files:
            self.files.update(files)
            self.inventory = inventory
            self.touched |= rebuilt

    async def _guard(self, up: Upstream, report: UpstreamReport, work: Any) -> Any:
        """An expected failure fails this upstream only, with its one line."""
        try:
            return await work
        except EumirrorError as exc:
            report.result = "failure"
            report.error = exc.line()
            return None

    def _log_report(self, report: UpstreamReport) -> None:
        event = log.info if report.result == "success" else log.warning
        event(
            "upstream_done",
            upstream=report.name,
            result=report.result,
            images=report.images,
            reused=report.reused,
            linked=report.linked,
            downloaded=report.downloaded,
            dropped=report.dropped,
            bytes=report.downloaded_bytes,
            duration=round(report.ended - report.started, 3),
            error=report.error or None,
        )

    def _finish(self, up: Upstream, report: UpstreamReport) -> None:
        """After every upstream has settled: clean up, then record state (files before meta)."""
        referenced = self.published.get(up.name)
        dirty = self.mirror.state_path(up.name, "dirty")
        meta = self.mirror.load_state(up.name, "meta") or {}
        try:
            oldest = meta.get("removed_since")
            due = oldest is not None and oldest + self.config.keep_removed <= self.clock()
            if referenced is None and report.unchanged and due:
                self.files.setdefault(
                    up.name, Files.from_doc(self.mirror.load_state(up.name, "files"))
                )
                referenced = frozenset(d for _, d in self.files[up.name].published.values())
                self.touched.add(up.name)
            files = self.files.get(up.name)
            if files is not None and referenced is not None:
                report.deleted = collect_garbage(
                    self.mirror,
                    up.name,
                    files,
                    referenced,
                    now=self.clock(),
                    keep_removed=self.config.keep_removed,
                )
                meta["removed_since"] = min(files.removed.values(), default=None)
            if files is not None and (up.name in self.touched or dirty.exists()):
                self.mirror.save_state(up.name, "files", files.to_doc())
                with contextlib.suppress(FileNotFoundError):
                    dirty.unlink()
            meta.update(self.meta.get(up.name, {}))
            meta["last_run"] = report.to_doc()
            meta["totals"] = add_totals(meta.get("totals"), report)
            if report.catalog_ok:
                meta["last_success"] = report.ended
            self.mirror.save_state(up.name, "meta", meta)
        except StorageError as exc:
            log.error("state_not_saved", upstream=up.name, error=exc.line())

    async def _fetch(self, up: Upstream, report: UpstreamReport) -> CatalogFetch | None:
        """The catalog, or None when it is unchanged since the last complete sync (a success)."""
        mirror = self.mirror
        mirror.upstream_dir(up.name)  # refuses a symlinked <root>/<U> before any request
        meta = mirror.load_state(up.name, "meta") or {}
        conditional = (
            not self.dry_run
            and bool(meta.get("complete"))
            and (mirror.root / up.name / "catalog").exists()
            and mirror.state_path(up.name, "files").exists()
            and not mirror.state_path(up.name, "dirty").exists()
        )
        known = (
            Validators(meta.get("etag"), meta.get("last_modified")) if conditional else Validators()
        )
        fetched = await self.fetcher.fetch_catalog(up.source, known, self._start_inventory)
        if fetched.body is not None:
            return fetched
        report.result, report.unchanged = "success", True
        report.images = int(meta.get("images", 0))
        report.reused = report.images
        log.info("catalog_unchanged", upstream=up.name, url=redact(up.source.url))
        return None

    async def _apply(self, up: Upstream, report: UpstreamReport, fetched: CatalogFetch) -> None:
        """Plan against the inventory, bring the files in, publish the catalog."""
        bound = log.bind(upstream=up.name)
        mirror = self.mirror
        assert fetched.body is not None
        with paused_gc():
            catalog = parse_catalog(fetched.body, max_bytes=self.config.limits.catalog_max_bytes)
            fetched.body = None  # the parsed form is all we need from here on
        bound.debug("catalog_parsed", images=len(catalog.images), bad=len(catalog.bad))
        await self._inventory_loaded()
        bound.debug("inventory_loaded", names=len(self.inventory.paths))
        files = self.files[up.name]
        with paused_gc():
            previous = {src: pair[0] for src, pair in files.published.items()}
            plan = make_plan(
                upstream=up.name,
                source=up.source,
                catalog=catalog,
                previous=previous,
                inventory=self.inventory,
            )
            del catalog, previous
        report.dropped = len(plan.dropped)
        bound.debug("planned", steps=len(plan.steps), drop=report.dropped)
        refusal = "" if self.allow_shrink else shrink_refusal(plan, self.config.limits.max_shrink)
        if self.dry_run:
            if self.show_plan:
                self.show_plan(plan)
            report.result = "failure" if refusal else "success"
            report.error = refusal
            return
        if refusal:
            raise CatalogError(
                f"refused to publish: {refusal}",
                hint="check the upstream; if the shrink is meant, run "
                "`eumirror sync --once --allow-shrink`",
            )
        ready = await self._materialise(up, plan, report, bound)
        entries: dict[str, Any] = {}
        if needs_previous_entries(plan, ready):
            entries = await asyncio.to_thread(self._previous_entries, up.name)
        with paused_gc():
            outcome = build_catalog(
                plan,
                verified=ready,
                public_base=self._public_base(up.name),
                previous_entries=entries,
                url_to_dest={url: dest for url, dest in files.published.values()},
            )
        bound.debug("files_ready", ready=len(ready))
        body = iter_catalog(plan.top, outcome.images)
        with paused_gc():
            report.published = await asyncio.to_thread(mirror.publish_catalog, up.name, body)
        self.published[up.name] = outcome.referenced
        self.touched.add(up.name)
        files.published = outcome.published
        report.images = len(outcome.images)
        for step in outcome.failed:
            reason = self.errors.get((up.name, step.dest), step.reason)
            report.failures.append(_failure_line(up.name, step, reason))
        report.result = "partial" if outcome.failed else "success"
        self.meta[up.name] = {
            "etag": fetched.etag,
            "last_modified": fetched.last_modified,
            "complete": not outcome.failed,
            "images": report.images,
        }

    # -- downloads and links ----------------------------------------------------------------
    async def _materialise(
        self, up: Upstream, plan: Plan, report: UpstreamReport, bound: Any
    ) -> set[str]:
        """Bring every planned file into place; returns the dests that are verified now."""
        if self.budget is None:
            free = await asyncio.to_thread(self.mirror.free_bytes)
            self.budget = SpaceBudget(free, self.config.limits.free_space_reserve)
        files = self.files[up.name]
        ready = {s.dest for s in plan.steps if s.action is Action.REUSE}
        report.reused = len([s for s in plan.steps if s.action is Action.REUSE])
        downloads = plan.downloads()
        links = [s for s in plan.steps if s.action is Action.LINK]
        if downloads or links:
            await asyncio.to_thread(self._prepare_upstream, up.name)
        self.progress.files_total += len(downloads)
        results = await asyncio.gather(
            *(self._download(up, step, report, bound) for step in downloads.values())
        )
        fetched = [r for r in results if r is not None]
        if fetched:
            ready |= await asyncio.to_thread(self._publish_files, up, fetched, report, bound)
        for step in links:
            source = self._verified_record(step.link_from)
            if source is None:
                self.errors[(up.name, step.dest)] = f"its copy {step.link_from} did not verify"
                continue
            try:
                path = self.mirror.link(step.link_from, up.name, step.dest)
            except StorageError as exc:
                self.errors[(up.name, step.dest)] = exc.line()
                bound.warning("link_failed", image=step.name, error=exc.line())
                continue
            files.files[step.dest] = [source[0], source[1], os.lstat(path).st_mtime_ns, source[3]]
            ready.add(step.dest)
            report.linked += 1
        if fetched or links:
            # One flush makes every new folder entry durable (a fsync per folder costs ~1 ms
            # each); the data itself was flushed before the renames.
            try:
                await asyncio.to_thread(syncfs, self.mirror.root)
            except OSError as exc:
                raise storage_error(exc, self.mirror.root, "flushing new files") from None
        return ready

    def _prepare_upstream(self, upstream: str) -> None:
        """The upstream's folders exist and lead nowhere outside the root; mark the run dirty."""
        images = self.mirror.upstream_dir(upstream) / "images"
        try:
            images.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, images, "creating") from None
        self.mirror.check_inside(images)
        self.mirror.state_path(upstream, "dirty").touch()
        if self.kept_partials is None:  # listed once per run, by the first upstream to download
            try:
                self.kept_partials = frozenset(os.listdir(self.mirror.partial))
            except OSError:
                self.kept_partials = frozenset()

    def _verified_record(self, rooted: str) -> list[Any] | None:
        """The state record of a verified file, given its root-relative path."""
        upstream, _, dest = rooted.partition("/")
        files = self.files.get(upstream)
        return files.files.get(dest) if files is not None else None

    def _publish_files(
        self, up: Upstream, fetched: list[Fetched], report: UpstreamReport, bound: Any
    ) -> set[str]:
        """One flush for all verified downloads, then the renames into their published paths.

        Batching durability (one syncfs instead of an fsync per file) is what makes many small
        tarballs cheap; the data is durable before any rename makes it visible.
        """
        try:
            syncfs(self.mirror.partial)
        except OSError as exc:
            error = storage_error(exc, self.mirror.partial, "flushing downloads")
            for item in fetched:
                item.partial.discard()
                self._image_failed(up, item.step, error, bound)
            return set()
        placed: set[str] = set()
        for item in fetched:
            step = item.step
            try:
                self.mirror.place(item.partial.path, item.final)
            except StorageError as exc:
                item.partial.discard()
                self._image_failed(up, step, exc, bound)
                continue
            item.partial.forget_meta()
            self.files[up.name].files[step.dest] = record_of(item.final, item.digest)
            self.inventory.add(item.digest.name, f"{up.name}/{step.dest}")
            report.downloaded += 1
            placed.add(step.dest)
        return placed

    async def _download(
        self, up: Upstream, step: Step, report: UpstreamReport, bound: Any
    ) -> Fetched | None:
        """Fetch and verify one tarball into .eumirror/partial; None when it failed."""
        key = hashlib.sha1(step.source_url.encode(), usedforsecurity=False).hexdigest()[:16]
        path = self.mirror.partial / f"{up.name}.{step.name}.{key}.part"
        self.active_partials.add(path)
        assert self.budget is not None
        partial = PartialFile(path, self.budget, exists=path.name in (self.kept_partials or ()))
        # A kept partial is reopened (its prefix re-hashed) ahead, outside the transfer slots;
        # a new one is created by its first write, in a worker: the slots only wait on the network.
        async with self.preparing:
            try:
                if up.source.is_file:
                    self._check_file_image(up, step.source_url)
                known = await partial.open()
                resumed = partial.offset
                if not (resumed and partial.current_name() == step.name):
                    async with self.semaphore:
                        began = time.monotonic()
                        await self.fetcher.download(step.source_url, partial, known)
                    await partial.drain()
                else:
                    began = time.monotonic()
                digest, final = await in_worker(self._seal, partial, up.name, step)
            except VerifyError as exc:
                report.verify_failures += 1
                self._image_failed(up, step, exc, bound)
                return None
            except FetchError as exc:
                await partial.keep_for_resume()
                self._image_failed(up, step, exc, bound)
                return None
            except EumirrorError as exc:
                partial.discard()
                self._image_failed(up, step, exc, bound)
                return None
            except BaseException:
                partial.close()
                raise
        report.downloaded_bytes += digest.size - resumed
        self.progress.files_done += 1
        bound.debug(  # one line per tarball would flood the journal on a first sync
            "image_downloaded",
            image=step.name,
            url=redact(step.source_url),
            bytes=digest.size,
            resumed_from=resumed or None,
            duration=round(time.monotonic() - began, 3),
            result="verified",
        )
        return Fetched(step, partial, digest, final)

    def _seal(self, partial: PartialFile, upstream: str, step: Step) -> tuple[FileDigest, Path]:
        """In a worker thread: write the held last batch, verify, start the writeback, prepare
        the name's folder. For a small tarball this one job is all the disk work it costs."""
        digest = partial.finish(step.name)
        return digest, self.mirror.prepare_dest(upstream, step.dest)

    def _check_file_image(self, up: Upstream, url: str) -> None:
        """A file catalog's image must really be inside its folder (symlinks included)."""
        folder = os.path.realpath(up.source.folder())
        real = os.path.realpath(unquote(urlsplit(url).path))
        if os.path.commonpath([folder, real]) != folder:
            raise ImageError(f"{url} resolves outside the catalog's folder {folder}")

    def _image_failed(self, up: Upstream, step: Step, exc: EumirrorError, bound: Any) -> None:
        self.progress.files_done += 1
        self.errors[(up.name, step.dest)] = exc.line()
        bound.warning(
            "image_failed",
            image=step.name,
            url=redact(step.source_url),
            error=exc.line(),
            result="failure",
        )

    # -- publishing helpers -----------------------------------------------------------------
    def _public_base(self, upstream: str) -> str:
        return f"{self.config.public_url}{upstream}/" if self.config.public_url else ""

    def _previous_entries(self, upstream: str) -> dict[str, Any]:
        body = self.mirror.read_catalog(upstream)
        if body is None:
            return {}
        try:
            old = parse_catalog(body)
        except CatalogError:
            return {}
        return {img.url: img.fields for img in old.images}


@dataclass(frozen=True)
class Fetched:
    """A verified download, waiting in .eumirror/partial for the batch flush and its rename."""

    step: Step
    partial: PartialFile
    digest: FileDigest
    final: Path


def add_totals(totals: Any, report: UpstreamReport) -> dict[str, Any]:
    """Counters that survive restarts, so metrics stay monotonic in daemon and timer mode."""
    base: dict[str, Any] = totals if isinstance(totals, dict) else {}
    runs = dict(base.get("runs") or {})
    runs[report.result] = int(runs.get(report.result, 0)) + 1
    return {
        "runs": runs,
        "downloaded_bytes": int(base.get("downloaded_bytes", 0)) + report.downloaded_bytes,
        "verify_failures": int(base.get("verify_failures", 0)) + report.verify_failures,
        "image_failures": int(base.get("image_failures", 0)) + len(report.failures),
    }


def _failure_line(upstream: str, step: Step, reason: str) -> str:
    what = f"image #{step.index}" + (f" {step.name}" if step.name else "")
    where = f" ({redact(step.source_url)})" if step.source_url else ""
    kept = "kept its previous entry" if step.previous_url else "left out of the catalog"
    kept += " until a sync gets it right"
    return f"{upstream}: {what}{where}: {reason}; {kept}"
