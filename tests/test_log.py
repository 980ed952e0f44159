"""The log formats (console, json, journal), sync_done, and each failure said once in the log."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import structlog
from conftest import Upstream, events, human_lines, run_cli, tarball, write_config

from eumirror.log import configure, log

PREFIXED = re.compile(r"<([0-7])>(\{.*\})\Z")


def journal_events(stderr: str) -> list[tuple[int, dict[str, object]]]:
    """(priority, event) for each `<N>{json}` line."""
    found = []
    for line in stderr.splitlines():
        if m := PREFIXED.match(line):
            found.append((int(m.group(1)), json.loads(m.group(2))))
    return found


def failing_setup(tmp_path: Path) -> Path:
    """Upstream `good` has one image whose bytes do not match its name; `gone` has no catalog."""
    source = Upstream(tmp_path / "up")
    source.add("ok.tgz", tarball(1))
    source.add("bad.tgz", tarball(2), name="0000000001")
    source.write()
    return write_config(
        tmp_path / "c.toml",
        root=tmp_path / "root",
        upstreams={"good": "up/catalog", "gone": "missing/catalog"},
    )


def test_journal_format_prefixes_each_line_with_its_syslog_priority() -> None:
    """journal: `<N>` then the JSON event; warning is 4, error 3, info 6, debug 7."""
    out = io.StringIO()
    try:
        assert configure("debug", stream=out, fmt="journal") == "journal"
        log.debug("d")
        log.info("i", n=1)
        log.warning("w")
        log.error("e")
    finally:
        structlog.reset_defaults()
    found = journal_events(out.getvalue())
    assert [(p, e["event"]) for p, e in found] == [(7, "d"), (6, "i"), (4, "w"), (3, "e")]
    assert found[1][1] == {"event": "i", "n": 1, "level": "info"}


def test_format_from_environment_and_flag(tmp_path: Path) -> None:
    """EUMIRROR_LOG_FORMAT picks the format; --log-format wins over it; a bad value is exit 2."""
    config = failing_setup(tmp_path)
    env = {"EUMIRROR_LOG_FORMAT": "JOURNAL"}
    by_env = run_cli("sync", "--once", "--config", str(config), env=env)
    assert by_env.returncode == 1
    assert any(e["event"] == "sync_started" for _, e in journal_events(by_env.stderr))

    by_flag = run_cli("sync", "--once", "--log-format", "json", "--config", str(config), env=env)
    assert journal_events(by_flag.stderr) == []
    assert any(e["event"] == "sync_done" for e in events(by_flag.stderr))

    bad = run_cli("sync", "--once", "--config", str(config), env={"EUMIRROR_LOG_FORMAT": "xml"})
    assert bad.returncode == 2
    assert human_lines(bad.stderr) == [
        "eumirror: EUMIRROR_LOG_FORMAT='xml' is not a log format: use one of console, json, journal"
    ]
    assert bad.stdout == ""


def test_console_format_off_a_terminal(tmp_path: Path) -> None:
    """--log-format console gives readable lines even when stderr is not a terminal."""
    config = failing_setup(tmp_path)
    done = run_cli("sync", "--once", "--log-format", "console", "--config", str(config))
    assert events(done.stderr) == []
    assert any("sync_done" in line and "{" not in line for line in done.stderr.splitlines())


@pytest.mark.parametrize("fmt", ["json", "journal"])
def test_sync_once_logs_sync_done_and_each_failure_once(tmp_path: Path, fmt: str) -> None:
    """sync --once ends with sync_done; each failure is one log event and one plain line."""
    config = failing_setup(tmp_path)
    done = run_cli("sync", "--once", "--log-format", fmt, "--config", str(config))
    assert done.returncode == 1
    found = [e for _, e in journal_events(done.stderr)] if fmt == "journal" else events(done.stderr)
    done_events = [e for e in found if e["event"] == "sync_done"]
    assert len(done_events) == 1 and done_events[0]["result"] == "failure"
    if fmt == "journal":
        priorities = {e["event"]: p for p, e in journal_events(done.stderr)}
        assert priorities["image_failed"] == 4 and priorities["sync_done"] == 6
    for needle in ("bad.tgz", "missing/catalog"):
        in_log = [e for e in found if needle in json.dumps(e)]
        plain = [line for line in human_lines(done.stderr) if needle in line]
        assert len(in_log) == 1, (needle, in_log)
        assert len(plain) == 1, (needle, plain)
