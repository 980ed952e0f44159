"""The pure parts of the status endpoint: health, the schedule's period, the document, metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eumirror.commands.report import daemon_urls, table
from eumirror.core.config import Schedule, parse_config
from eumirror.core.errors import ConfigError
from eumirror.service.metrics import registry_for, write_textfile
from eumirror.service.status import StateCache, health, iso, schedule_period, status_document
from eumirror.storage.fs import Mirror

NOW = 1_800_000_000.0
HOUR = 3600.0


def run(result: str, ended: float, **extra: Any) -> dict[str, Any]:
    return {"result": result, "started": ended - 5, "ended": ended, "images": 2, **extra}


def test_health_before_any_sync_is_unhealthy_naming_the_upstream() -> None:
    """An upstream that never finished a sync makes health false, with its name in the reason."""
    ok, reason = health({"up": {"last_run": None, "last_success": None}}, now=NOW, max_age=HOUR)
    assert not ok
    assert "up" in reason and "no successful sync" in reason


def test_health_with_no_upstreams_is_unhealthy() -> None:
    """A configuration without upstreams mirrors nothing, so it is not healthy."""
    ok, _ = health({}, now=NOW, max_age=HOUR)
    assert not ok


def test_health_fresh_success_is_healthy() -> None:
    """A success no older than max_age is healthy."""
    ups = {"up": {"last_run": run("success", NOW - 10), "last_success": NOW - 10}}
    assert health(ups, now=NOW, max_age=HOUR) == (True, "ok")


def test_health_exactly_at_the_limit_is_still_healthy() -> None:
    """The limit is inclusive: 'no longer ago than' max_age."""
    ups = {"up": {"last_success": NOW - HOUR}}
    assert health(ups, now=NOW, max_age=HOUR)[0]


def test_health_stale_success_is_unhealthy_with_age_and_limit() -> None:
    """A last success older than max_age is unhealthy; the reason gives the age and the limit."""
    ups = {"up": {"last_run": run("success", NOW - 2 * HOUR), "last_success": NOW - 2 * HOUR}}
    ok, reason = health(ups, now=NOW, max_age=HOUR)
    assert not ok
    assert "up" in reason and "7200" in reason and "3600" in reason


def test_health_failure_keeps_the_last_success() -> None:
    """A failed last run does not make health false while the last success is recent enough."""
    ups = {
        "up": {
            "last_run": run("failure", NOW - 1, error="HTTP 500"),
            "last_success": NOW - 600,
        }
    }
    assert health(ups, now=NOW, max_age=HOUR)[0]
    assert not health(ups, now=NOW + HOUR, max_age=HOUR)[0]


def test_health_one_stale_upstream_of_two_is_unhealthy() -> None:
    """Every upstream must be fresh; the reason names the stale one."""
    ups = {"a": {"last_success": NOW - 5}, "b": {"last_success": NOW - 5 * HOUR}}
    ok, reason = health(ups, now=NOW, max_age=HOUR)
    assert not ok
    assert reason.startswith("b:")


def test_schedule_period_interval() -> None:
    """An interval schedule's period is the interval."""
    assert schedule_period(Schedule(interval=90.0)) == 90.0


def test_schedule_period_cron_every_six_hours() -> None:
    """'17 */6 * * *' fires every 6 hours."""
    sched = Schedule(interval=None, cron="17 */6 * * *")
    assert schedule_period(sched, now=datetime(2030, 1, 1, 5, 0, tzinfo=UTC)) == 6 * HOUR
    assert schedule_period(sched) == 6 * HOUR


def test_schedule_period_irregular_cron_takes_the_longest_gap() -> None:
    """A weekday cron allows the weekend's gap, wherever in the week it is computed."""
    sched = Schedule(interval=None, cron="0 9 * * 1-5")
    tuesday = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert schedule_period(sched, now=tuesday) == 72 * HOUR


def config_for(tmp_path: Path, extra: str = "") -> Any:
    text = (
        f'[mirror]\nroot = "{tmp_path / "m"}"\n{extra}\n'
        '[[upstream]]\nname = "up"\ncatalog = "http://127.0.0.1:9/catalog"\n'
    )
    return parse_config(text.encode(), path=tmp_path / "eumirror.toml")


def write_meta(mirror: Mirror, meta: dict[str, Any]) -> None:
    mirror.prepare()
    mirror.save_state("up", "meta", meta)


def test_status_document_from_state_with_cron_max_age(tmp_path: Path) -> None:
    """The document reads each upstream's meta state; max age is twice the period plus jitter."""
    config = config_for(tmp_path, '[schedule]\ncron = "17 */6 * * *"\njitter = "5m"')
    mirror = Mirror(config.root)
    write_meta(
        mirror,
        {
            "last_run": run("partial", NOW - 100, failures=["x"]),
            "last_success": NOW - 100,
            "images": 2,
            "totals": {"runs": {"partial": 1}, "downloaded_bytes": 10},
        },
    )
    doc = status_document(config, mirror, now=NOW)
    assert doc["health"] == {"ok": True, "reason": "ok", "max_age_seconds": 12 * HOUR + 300}
    up = doc["upstreams"]["up"]
    assert up["images"] == 2 and up["last_success"] == "2027-01-15T07:58:20.000Z"
    assert up["last_run"]["result"] == "partial"
    assert (up["state"], up["reason"], up["healthy"]) == ("partial", "1 image failed", True)
    assert set(doc["filesystem"]) == {"free_bytes", "used_bytes"}
    json.dumps(doc)


ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def times_in(doc: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) of a field whose name says it holds a time."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            here = f"{path}.{key}"
            if key in {"started", "ended", "last_success", "generated", "next_run"}:
                yield here, value
            yield from times_in(value, here)


def test_status_document_times_are_iso_8601_utc_with_z(tmp_path: Path) -> None:
    """Every time in /status is an ISO 8601 UTC string ending in Z, never an epoch float."""
    config = config_for(tmp_path)
    mirror = Mirror(config.root)
    write_meta(mirror, {"last_run": run("success", NOW), "last_success": NOW, "images": 2})

    doc = status_document(config, mirror, now=NOW, daemon={"next_run": iso(NOW + HOUR)})

    found = dict(times_in(doc))
    assert set(found) == {
        ".generated",
        ".next_run",
        ".upstreams.up.last_run.started",
        ".upstreams.up.last_run.ended",
        ".upstreams.up.last_success",
    }
    assert all(isinstance(v, str) and ISO_Z.match(v) for v in found.values()), found
    assert doc["upstreams"]["up"]["last_run"]["duration_seconds"] == 5
    assert not [k for k in json.dumps(doc).split('"') if k.endswith("_timestamp")]


@pytest.mark.parametrize(
    ("meta", "state", "healthy", "words"),
    [
        ({}, "never synced", False, ["no successful sync"]),
        (
            {"last_run": run("failure", NOW - 5, error="HTTP 500 from x")},
            "failed",
            False,
            ["no successful sync", "HTTP 500 from x"],
        ),
        (
            {"last_run": run("failure", NOW - 5, error="HTTP 500"), "last_success": NOW - 60},
            "failed",
            True,
            ["last run failed", "HTTP 500"],
        ),
        (
            {"last_run": run("success", NOW - 3 * HOUR), "last_success": NOW - 3 * HOUR},
            "stale",
            False,
            ["10800s ago", "limit 7200s"],
        ),
        ({"last_run": run("success", NOW), "last_success": NOW}, "ok", True, ["ok"]),
    ],
)
def test_each_upstream_has_a_state_and_a_reason(
    tmp_path: Path, meta: dict[str, Any], state: str, healthy: bool, words: list[str]
) -> None:
    """Each upstream carries one state word, whether /healthz counts it healthy, and a reason
    line that says why (the error, the age and the limit)."""
    config = config_for(tmp_path, '[schedule]\ninterval = "1h"')
    mirror = Mirror(config.root)
    write_meta(mirror, meta)

    up = status_document(config, mirror, now=NOW)["upstreams"]["up"]

    assert (up["state"], up["healthy"]) == (state, healthy)
    assert all(w in up["reason"] for w in words), up["reason"]


OLD_NS = 1_700_000_000 * 10**9


def age_folder(path: Path) -> None:
    """Set a folder's mtime well in the past, as it is some seconds after the last write."""
    os.utime(path, ns=(OLD_NS, OLD_NS))


def test_state_cache_rereads_only_when_the_state_folder_changed(tmp_path: Path) -> None:
    """A second request parses no state file: a change made without a rename into the folder
    (which a real writer never does) stays unseen until the folder changes."""
    config = config_for(tmp_path)
    mirror = Mirror(config.root)
    write_meta(mirror, {"images": 1})
    age_folder(mirror.state_dir)
    cache = StateCache(mirror)

    assert cache.metas(["up"])["up"]["images"] == 1
    path = mirror.state_path("up", "meta")
    path.write_bytes(path.read_bytes().replace(b'"images":1', b'"images":7'))
    age_folder(mirror.state_dir)
    assert cache.metas(["up"])["up"]["images"] == 1
    assert cache.reads == 1

    mirror.save_state("up", "meta", {"images": 2})
    assert cache.metas(["up"])["up"]["images"] == 2
    assert cache.reads == 2


def test_state_cache_does_not_trust_a_folder_changed_just_now(tmp_path: Path) -> None:
    """Right after a write the folder's mtime may not move again for a second write in the same
    clock tick, so a fresh mtime makes the next request read again."""
    config = config_for(tmp_path)
    mirror = Mirror(config.root)
    write_meta(mirror, {"images": 1})
    cache = StateCache(mirror)
    cache.metas(["up"])
    stamp = mirror.state_dir.stat().st_mtime_ns

    path = mirror.state_path("up", "meta")
    path.write_bytes(path.read_bytes().replace(b'"images":1', b'"images":3'))
    os.utime(mirror.state_dir, ns=(stamp, stamp))

    assert cache.metas(["up"])["up"]["images"] == 3


def test_state_written_by_another_process_is_noticed(tmp_path: Path) -> None:
    """A meta state saved by another process (as `sync --once` does) shows in the next
    document built from the same cache."""
    config = config_for(tmp_path)
    mirror = Mirror(config.root)
    write_meta(mirror, {"images": 1})
    age_folder(mirror.state_dir)
    cache = StateCache(mirror)
    assert status_document(config, mirror, cache=cache)["upstreams"]["up"]["images"] == 1

    code = (
        "import sys; from pathlib import Path; from eumirror.storage.fs import Mirror; "
        "Mirror(Path(sys.argv[1])).save_state('up', 'meta', {'images': 5})"
    )
    subprocess.run([sys.executable, "-c", code, str(mirror.root)], check=True)

    assert status_document(config, mirror, cache=cache)["upstreams"]["up"]["images"] == 5


def test_metrics_textfile_has_the_contract_names(tmp_path: Path) -> None:
    """The textfile renders the contract's metrics with their labels, and parses back."""
    doc = {
        "upstreams": {
            "up": {
                "last_run": run("success", NOW, downloaded=1, failures=[]),
                "last_success": NOW,
                "images": 2,
                "totals": {
                    "runs": {"success": 3, "failure": 1},
                    "downloaded_bytes": 123,
                    "verify_failures": 4,
                },
            }
        },
        "health": {"ok": True},
        "version": "0",
    }
    path = tmp_path / "m.prom"
    write_textfile(path, doc)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    up = (("upstream", "up"),)
    assert samples[("eumirror_sync_last_success_timestamp_seconds", up)] == NOW
    assert samples[("eumirror_sync_runs_total", (("result", "success"), *up))] == 3
    assert samples[("eumirror_sync_runs_total", (("result", "partial"), *up))] == 0
    assert samples[("eumirror_sync_runs_total", (("result", "failure"), *up))] == 1
    assert samples[("eumirror_sync_duration_seconds", up)] == 5
    assert samples[("eumirror_images", up)] == 2
    assert samples[("eumirror_downloaded_bytes_total", up)] == 123
    assert samples[("eumirror_verify_failures_total", up)] == 4
    assert samples[("eumirror_last_sync_images", (("action", "downloaded"), *up))] == 1
    assert samples[("eumirror_last_sync_failed_images", up)] == 0


def test_metrics_before_any_sync_omit_the_last_success() -> None:
    """Without a success there is no last-success sample (never a misleading 0)."""
    doc = {"upstreams": {"up": {"last_run": None, "last_success": None, "images": 0}}}
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(registry_for(lambda: doc)).decode())
    }
    assert not families["eumirror_sync_last_success_timestamp_seconds"].samples
    assert [s.value for s in families["eumirror_sync_runs"].samples] == [0, 0, 0]


@pytest.mark.parametrize(
    ("listen", "want"),
    [
        ("127.0.0.1:4711", "http://127.0.0.1:4711/status"),
        ("[::1]:4711", "http://[::1]:4711/status"),
        ("0.0.0.0:4711", "http://127.0.0.1:4711/status"),
        ("[::]:4711", "http://[::1]:4711/status"),
    ],
)
def test_status_command_finds_the_recorded_daemon_address(
    tmp_path: Path, listen: str, want: str
) -> None:
    """`eumirror status` asks the address the daemon recorded first, then the configured one."""
    config = config_for(tmp_path)
    mirror = Mirror(config.root)
    mirror.prepare()
    (mirror.work / "daemon.json").write_text(json.dumps({"pid": 1, "listen": listen}))
    assert daemon_urls(config) == [want, "http://127.0.0.1:9105/status"]


def test_status_command_without_a_recorded_address_and_port_zero(tmp_path: Path) -> None:
    """With port 0 configured and nothing recorded there is no daemon to ask."""
    config = config_for(tmp_path, '[status]\nlisten = "127.0.0.1:0"')
    assert daemon_urls(config) == []


def test_status_table_lists_each_upstream_in_utc() -> None:
    """The table has a header and a row per upstream with UTC times and the last success;
    never-synced rows say so."""
    doc = {
        "upstreams": {
            "up": {
                "state": "partial",
                "last_run": run("partial", NOW, failures=["a"], downloaded_bytes=2048),
                "last_success": iso(NOW - HOUR),
            },
            "new": {"state": "never synced", "last_run": None},
        }
    }
    lines = table(doc).splitlines()
    assert lines[0].split()[:4] == ["UPSTREAM", "STATE", "LAST", "RUN"]
    assert lines[0].endswith("LAST SUCCESS")
    assert lines[1].split()[:4] == ["up", "partial", "2027-01-15T08:00:00Z", "partial"]
    assert lines[1].endswith("2027-01-15T07:00:00Z")
    assert lines[2].split()[:4] == ["new", "never", "synced", "never"]


def test_progress_interval_defaults_to_30s_and_takes_a_duration(tmp_path: Path) -> None:
    """[status] progress_interval is 30 s unless set; it takes a duration."""
    assert config_for(tmp_path).status.progress_interval == 30.0
    config = config_for(tmp_path, '[status]\nprogress_interval = "2m"')
    assert config.status.progress_interval == 120.0


@pytest.mark.parametrize("value", ['"0s"', '"soon"'])
def test_progress_interval_must_be_a_positive_duration(tmp_path: Path, value: str) -> None:
    """Zero or a non-duration is a configuration error naming the key."""
    with pytest.raises(ConfigError) as info:
        config_for(tmp_path, f"[status]\nprogress_interval = {value}")
    assert "status.progress_interval" in info.value.line()
