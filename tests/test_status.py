"""The pure parts of the status endpoint: health, the schedule's period, the document, metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eumirror.commands.report import daemon_urls, table
from eumirror.core.config import Schedule, parse_config
from eumirror.service.metrics import registry_for, write_textfile
from eumirror.service.status import health, schedule_period, status_document
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
    assert up["images"] == 2 and up["last_success"] == NOW - 100
    assert up["last_run"]["result"] == "partial"
    assert set(doc["filesystem"]) == {"free_bytes", "used_bytes"}
    json.dumps(doc)


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


def test_status_table_lists_each_upstream() -> None:
    """The table has a header and a row per upstream; never-synced rows say so."""
    doc = {
        "upstreams": {
            "up": {"last_run": run("partial", NOW, failures=["a"], downloaded_bytes=2048)},
            "new": {"last_run": None},
        }
    }
    lines = table(doc).splitlines()
    assert lines[0].split()[:3] == ["UPSTREAM", "LAST", "SYNC"]
    assert lines[1].split()[0] == "up" and "partial" in lines[1]
    assert lines[2].split()[:2] == ["new", "never"]
