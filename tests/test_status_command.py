"""`eumirror status` end to end: a real sync against a loopback upstream, then the command as a
real process reading the state on disk: UTC times, failed images named, errors whole, --json and
the exit code."""

from __future__ import annotations

import json
import re

from conftest import Mirror, Upstream, run_cli, tarball
from faultserver import Fault, ThreadedFaultServer

LONG_PATH = "b/" + "x" * 150 + "-two.tgz"


def test_status_names_the_failed_image_and_exits_0_for_a_partial_run(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A partial run (one image 404) is healthy: exit 0, but the failed image is named in full,
    wrapped rather than cut, and times are UTC with Z, the last success included."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.add(LONG_PATH, tarball(2))
    upstream.write()
    server.set_fault("/" + LONG_PATH, Fault(status=404))
    assert mirror.sync().returncode == 1

    done = run_cli("status", "--config", str(mirror.config), env={"COLUMNS": "80"})

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "disk" in lines[0]
    header, row = lines[1], lines[2]
    assert header.split()[:2] == ["UPSTREAM", "STATE"] and header.endswith("LAST SUCCESS")
    stamps = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row)
    assert row.split()[:2] == ["up", "partial"] and len(stamps) == 2
    assert all(len(line) <= 80 for line in lines[3:]), lines
    text = " ".join(line.strip() for line in lines[3:])
    assert "failed images (1):" in text
    # the whole line, wrapped; the failure line names the image and shortens a very long url
    # in its middle so that it stays within 300 characters
    flat = text.replace(" ", "")
    assert "xxxxxxxxxx-two.tgz" in flat and "leftoutofthecatalog" in flat
    assert "404" in text


def test_status_exits_1_when_the_last_run_failed_and_prints_the_whole_error(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A failed last run makes `eumirror status` exit 1 even while the last success is fresh,
    and its error is shown whole."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    server.set_fault("/catalog", Fault(status=500))
    assert mirror.sync().returncode == 1

    done = run_cli("status", "--config", str(mirror.config))

    assert done.returncode == 1, done.stdout + done.stderr
    row = done.stdout.splitlines()[2]
    cells = row.split()
    assert (cells[:2], cells[3]) == (["up", "failed"], "failure") and cells[2].endswith("Z")
    assert "500" in done.stdout and server.url.split("//")[1] in done.stdout


def test_status_json_is_one_document_with_iso_times(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """--json prints one JSON document on stdout, with ISO 8601 UTC times, the state and the
    source it came from."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0

    done = run_cli("status", "--json", "--config", str(mirror.config))

    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    up = doc["upstreams"]["up"]
    assert doc["source"] == "disk" and up["state"] == "ok" and up["healthy"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", up["last_success"])
    assert up["last_run"]["ended"].endswith("Z") and up["last_run"]["result"] == "success"


def test_status_exits_1_before_any_sync(mirror: Mirror) -> None:
    """An upstream never synced is what /healthz calls unhealthy: exit 1, the row says so."""
    done = run_cli("status", "--config", str(mirror.config))

    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[2].split()[:3] == ["up", "never", "synced"]
    assert "no successful sync yet" in done.stdout
