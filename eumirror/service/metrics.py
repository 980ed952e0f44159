"""Prometheus exposition through prometheus_client: a collector over the status document.

The status document (state on disk plus what the daemon knows) is the one source of truth; the
collector only renders it, so /metrics, /status and the textfile never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .status import epoch

RESULTS = ("success", "partial", "failure")
ACTIONS = ("reused", "linked", "downloaded", "dropped", "deleted")


class MirrorCollector(Collector):
    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        doc = self.snapshot()
        ups: Mapping[str, Any] = doc.get("upstreams", {})
        last_ok = GaugeMetricFamily(
            "eumirror_sync_last_success_timestamp_seconds",
            "End of the last sync whose catalog fetch succeeded (success or partial).",
            labels=["upstream"],
        )
        runs = CounterMetricFamily(
            "eumirror_sync_runs", "Syncs by result.", labels=["upstream", "result"]
        )
        duration = GaugeMetricFamily(
            "eumirror_sync_duration_seconds", "Duration of the last sync.", labels=["upstream"]
        )
        images = GaugeMetricFamily(
            "eumirror_images", "Images in the published catalog.", labels=["upstream"]
        )
        by_action = GaugeMetricFamily(
            "eumirror_last_sync_images",
            "Images of the last sync by what it did with them.",
            labels=["upstream", "action"],
        )
        failed = GaugeMetricFamily(
            "eumirror_last_sync_failed_images",
            "Images that failed in the last sync (kept their previous entry or left out).",
            labels=["upstream"],
        )
        downloaded = CounterMetricFamily(
            "eumirror_downloaded_bytes", "Tarball bytes downloaded.", labels=["upstream"]
        )
        verify = CounterMetricFamily(
            "eumirror_verify_failures",
            "Tarballs whose bytes did not match their name (syncs, verify, scheduled verify).",
            labels=["upstream"],
        )
        pinned = GaugeMetricFamily(
            "eumirror_pinned",
            "1 while the upstream is pinned to a generation by rollback.",
            labels=["upstream"],
        )
        last_verify = GaugeMetricFamily(
            "eumirror_last_verify_timestamp_seconds",
            "End of the last scheduled verification of the upstream's tarballs.",
            labels=["upstream"],
        )
        for name, info in ups.items():
            pinned.add_metric([name], 0.0 if info.get("pinned") is None else 1.0)
            if (verified := epoch(info.get("last_verify"))) is not None:
                last_verify.add_metric([name], verified)
            run: Mapping[str, Any] = info.get("last_run") or {}
            totals: Mapping[str, Any] = info.get("totals") or {}
            if (last := epoch(info.get("last_success"))) is not None:
                last_ok.add_metric([name], last)
            for result in RESULTS:
                runs.add_metric([name, result], float((totals.get("runs") or {}).get(result, 0)))
            if run:
                duration.add_metric([name], run_duration(run))
                for action in ACTIONS:
                    by_action.add_metric([name, action], float(run.get(action, 0)))
                failed.add_metric([name], float(len(run.get("failures", []))))
            images.add_metric([name], float(info.get("images", run.get("images", 0)) or 0))
            downloaded.add_metric([name], float(totals.get("downloaded_bytes", 0)))
            verify.add_metric([name], float(totals.get("verify_failures", 0)))
        yield from (last_ok, runs, duration, images, by_action, failed, downloaded, verify)
        yield from controls_metrics(ups)
        yield from (pinned, last_verify)

        in_progress = GaugeMetricFamily("eumirror_sync_in_progress", "1 while a sync runs.")
        in_progress.add_metric([], 1.0 if doc.get("in_progress") else 0.0)
        yield in_progress
        if (next_run := epoch(doc.get("next_run"))) is not None:
            nxt = GaugeMetricFamily(
                "eumirror_next_sync_timestamp_seconds", "When the schedule runs the next sync."
            )
            nxt.add_metric([], next_run)
            yield nxt
        fs: Mapping[str, Any] = doc.get("filesystem") or {}
        if fs:
            free = GaugeMetricFamily(
                "eumirror_filesystem_free_bytes", "Free bytes on the mirror root's filesystem."
            )
            free.add_metric([], float(fs.get("free_bytes", 0)))
            used = GaugeMetricFamily(
                "eumirror_filesystem_used_bytes", "Used bytes on the mirror root's filesystem."
            )
            used.add_metric([], float(fs.get("used_bytes", 0)))
            yield free
            yield used
        healthy = GaugeMetricFamily("eumirror_healthy", "1 when /healthz answers 200.")
        healthy.add_metric([], 1.0 if (doc.get("health") or {}).get("ok") else 0.0)
        yield healthy
        info = GaugeMetricFamily("eumirror_build_info", "Version of eumirror.", labels=["version"])
        info.add_metric([str(doc.get("version", ""))], 1.0)
        yield info


def controls_metrics(ups: Mapping[str, Any]) -> Iterator[Metric]:
    """The operator controls' figures (filters, hooks) per upstream."""
    filtered = GaugeMetricFamily(
        "eumirror_filtered_images",
        "Images the upstream lists that its include/exclude filters leave out.",
        labels=["upstream"],
    )
    hooks = CounterMetricFamily(
        "eumirror_hook_failures",
        "on_publish hooks that failed (exit status, timeout, could not start).",
        labels=["upstream"],
    )
    for name, info in ups.items():
        filtered.add_metric([name], float(info.get("filtered", 0) or 0))
        hooks.add_metric([name], float((info.get("hooks") or {}).get("failures", 0)))
    yield filtered
    yield hooks


def run_duration(run: Mapping[str, Any]) -> float:
    """The run's own figure, else ended - started (ISO strings or unix times)."""
    if isinstance(run.get("duration_seconds"), int | float):
        return float(run["duration_seconds"])
    started, ended = epoch(run.get("started")), epoch(run.get("ended"))
    return max(ended - started, 0.0) if started is not None and ended is not None else 0.0


def registry_for(snapshot: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MirrorCollector(snapshot))
    return registry


def write_textfile(path: Path, doc: Mapping[str, Any]) -> None:
    """For node_exporter's textfile collector; prometheus_client writes it atomically."""
    write_to_textfile(str(path), registry_for(lambda: doc))
