"""`on_publish` hooks end to end: `sync --once` and the daemon as real processes, a loopback
upstream, and hook programs that record what they were given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI_TIMEOUT, Mirror, Upstream, events, name_of, run_cli, tarball, write_config
from faultserver import ThreadedFaultServer
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import WAIT, Daemon, daemons  # noqa: F401  (the fixture)

RECORDER = """
import json, os, subprocess, sys
out = sys.argv[1]
env = {k: v for k, v in os.environ.items() if k.startswith("EUMIRROR_")}
added = open(env["EUMIRROR_ADDED"]).read().splitlines()
removed = open(env["EUMIRROR_REMOVED"]).read().splitlines()
verify = subprocess.run(
    [sys.executable, "-m", "eumirror", "verify", "--config", sys.argv[2]], capture_output=True
).returncode
print("registering", len(added), "images")
print("a warning line", file=sys.stderr)
with open(out, "a") as f:
    f.write(json.dumps({"env": env, "added": added, "removed": removed, "verify": verify}) + "\\n")
"""

SLEEPER = """
import os, signal, subprocess, sys, time
ready, mode = sys.argv[1], sys.argv[2]
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(ready + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.rename(ready + ".tmp", ready)
time.sleep(600)
"""


def hook_config(
    mirror: Mirror,
    server: ThreadedFaultServer,
    argv: list[str],
    *,
    timeout: str = "",
    extra: str = "",
) -> None:
    lines = f"on_publish = {json.dumps(argv)}\n"
    if timeout:
        lines += f"hook_timeout = {json.dumps(timeout)}\n"
    write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog"},
        mirror={"keep_removed": "0s"},
        extra=lines + extra,
    )


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def named(stderr: str, event: str) -> list[dict[str, Any]]:
    return [e for e in events(stderr) if e.get("event") == event]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(ok: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


def test_hook_gets_the_generation_and_name_lists_after_the_lock_is_released(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A new generation runs the hook with the contract's environment (lists of added and
    removed names), its output in the log line by line, after the lock is released (its own
    `eumirror verify` gets the lock); an unchanged sync runs no hook."""
    out = tmp_path / "hook.jsonl"
    recorder = script(tmp_path, "recorder.py", RECORDER)
    hook_config(mirror, server, [sys.executable, str(recorder), str(out), str(mirror.config)])
    upstream.add("one.tgz", tarball(1))
    upstream.add("two.tgz", tarball(2))
    upstream.add("twin.tgz", tarball(2))  # the same name twice: listed once
    upstream.write()

    first = mirror.sync()

    assert first.returncode == 0, first.stderr
    (got,) = records(out)
    assert got["env"]["EUMIRROR_UPSTREAM"] == "up"
    assert got["env"]["EUMIRROR_ROOT"] == str(mirror.root)
    assert got["env"]["EUMIRROR_CATALOG"] == str(mirror.root / "up" / "catalog")
    assert got["env"]["EUMIRROR_GENERATION"] == "1"
    assert sorted(got["added"]) == sorted({name_of(tarball(1)), name_of(tarball(2))})
    assert got["removed"] == []
    assert got["verify"] == 0
    lines = [(e["stream"], e["line"]) for e in named(first.stderr, "hook_output")]
    assert ("stdout", "registering 2 images") in lines
    assert ("stderr", "a warning line") in lines
    assert named(first.stderr, "hook_done")[0]["upstream"] == "up"
    assert not Path(got["env"]["EUMIRROR_ADDED"]).exists()

    again = mirror.sync()
    assert again.returncode == 0 and len(records(out)) == 1
    assert not named(again.stderr, "hook_started")

    upstream.images = [i for i in upstream.images if i["url"] == "one.tgz"]
    upstream.add("three.tgz", tarball(3))
    upstream.write()
    third = mirror.sync("--allow-shrink")  # two of three entries go
    assert third.returncode == 0, third.stderr
    last = records(out)[-1]
    assert last["env"]["EUMIRROR_GENERATION"] == "2"
    assert last["added"] == [name_of(tarball(3))]
    assert last["removed"] == [name_of(tarball(2))]


def test_a_failing_hook_is_logged_and_counted_but_changes_nothing(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A hook exiting 3 leaves the publish and the exit code alone, is logged and counted in
    the status document and in eumirror_hook_failures_total."""
    hook_config(mirror, server, [sys.executable, "-c", "import sys; sys.exit(3)"])
    upstream.add("one.tgz", tarball(1))
    upstream.write()
    metrics = tmp_path / "eumirror.prom"

    done = mirror.sync("--metrics-file", str(metrics))

    assert done.returncode == 0, done.stderr
    assert [i["name"] for i in mirror.catalog()["images"]] == [name_of(tarball(1))]
    (failed,) = named(done.stderr, "hook_failed")
    assert "exit status 3" in failed["error"]
    status = json.loads(run_cli("status", "--json", "--config", str(mirror.config)).stdout)
    assert status["upstreams"]["up"]["hooks"]["failures"] == 1
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
        if s.labels.get("upstream") == "up"
    }
    assert samples["eumirror_hook_failures_total"] == 1


def test_a_hook_past_its_timeout_is_killed_with_its_process_group(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """hook_timeout ends the hook and the child it started; the sync still exits 0."""
    ready = tmp_path / "ready"
    sleeper = script(tmp_path, "sleeper.py", SLEEPER)
    hook_config(mirror, server, [sys.executable, str(sleeper), str(ready), "plain"], timeout="1s")
    upstream.add("one.tgz", tarball(1))
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    (failed,) = named(done.stderr, "hook_failed")
    assert "hook_timeout" in failed["error"]
    hook_pid, child_pid = map(int, ready.read_text().split())
    wait_for(lambda: not alive(child_pid), "the hook's child is gone")
    assert not alive(hook_pid)


@pytest.mark.parametrize("mode", ["plain", "ignore-term"])
def test_sigterm_to_sync_once_reaches_the_hook_group(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, mode: str
) -> None:
    """SIGTERM to `sync --once` while its hook runs ends the hook's whole group (SIGKILL after
    5 s for one that ignores SIGTERM) and exits 143."""
    ready = tmp_path / "ready"
    sleeper = script(tmp_path, "sleeper.py", SLEEPER)
    hook_config(mirror, server, [sys.executable, str(sleeper), str(ready), mode])
    upstream.add("one.tgz", tarball(1))
    upstream.write()
    env = {k: v for k, v in os.environ.items() if k != "EUMIRROR_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(mirror.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for(ready.exists, "the hook started")
        hook_pid, child_pid = map(int, ready.read_text().split())
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert named(stderr, "hook_stopped")
    assert not alive(hook_pid) and not alive(child_pid)
    if mode == "ignore-term":
        assert took >= 4.5, took
    assert [i["name"] for i in Mirror(mirror.root, mirror.config).catalog()["images"]] == [
        name_of(tarball(1))
    ]


def test_daemon_runs_hooks_and_filters_and_stops_its_hook_on_sigterm(
    tmp_path: Path,
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],  # noqa: F811
) -> None:
    """The daemon runs the hook after its sync (not holding the lock: /status shows no sync in
    progress while it runs), counts filtered images in /status and /metrics, and SIGTERM ends
    the hook's group before the daemon exits 0."""
    ready = tmp_path / "ready"
    sleeper = script(tmp_path, "sleeper.py", SLEEPER)
    upstream.add("one.tgz", tarball(1))
    upstream.add("fed.tgz", tarball(2), os="fedora")
    upstream.write()
    hook_config(
        mirror,
        server,
        [sys.executable, str(sleeper), str(ready), "plain"],
        extra='exclude = { os = ["fedora*"] }\n[schedule]\ninterval = "1h"\n'
        '[status]\nlisten = "127.0.0.1:0"\n',
    )
    daemon = daemons(mirror.config)

    started = daemon.wait_event("hook_started")
    assert started["generation"] == "1"
    wait_for(ready.exists, "the hook started")
    hook_pid, child_pid = map(int, ready.read_text().split())
    doc = daemon.idle_after(1)
    assert doc["upstreams"]["up"]["filtered"] == 1
    assert verify_holds_no_lock(mirror) == 0
    _, _, body = daemon.http("GET", "/metrics")
    samples = {
        (s.name, s.labels.get("upstream")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("eumirror_filtered_images", "up")] == 1
    assert samples[("eumirror_hook_failures_total", "up")] == 0

    assert daemon.stop() == 0
    assert daemon.events("hook_stopped")
    assert not alive(hook_pid) and not alive(child_pid)


def verify_holds_no_lock(mirror: Mirror) -> int:
    """`eumirror verify` needs the mirror's lock: exit 0 shows nobody holds it."""
    return run_cli("verify", "--config", str(mirror.config)).returncode


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('on_publish = "/bin/true"', "upstream[0].on_publish"),
        ("on_publish = []", "upstream[0].on_publish"),
        ('on_publish = ["/bin/true"]\nhook_timeout = "0s"', "upstream[0].hook_timeout"),
    ],
)
def test_bad_hook_settings_are_exit_2(tmp_path: Path, line: str, key: str) -> None:
    """A hook that is not a list of strings, or a zero timeout, is exit 2 naming the key."""
    config = write_config(
        tmp_path / "c.toml",
        root=tmp_path / "r",
        upstreams={"up": "http://127.0.0.1:9/catalog"},
        extra=line + "\n",
    )
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 2 and key in done.stderr, done.stderr


def readme_hook() -> str:
    """The register-images script exactly as the README shows it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("#!/bin/sh\n# /usr/local/bin/register-images")
    end = readme.index('exit "$failed"\n', start) + len('exit "$failed"\n')
    return readme[start:end]


def image_tarball(label: str) -> bytes:
    """A eustore-like .tgz holding an image file."""
    import io
    import tarfile

    data = f"disk image {label}".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{label}/{label}.img")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_readme_register_images_hook_registers_each_added_image(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """The README's hook, run by a real sync, calls euca-install-image once per added name with
    that image's .img and architecture (euca-install-image is a recording stand-in)."""
    import shutil

    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq): the README's hook uses it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    stub = bin_dir / "euca-install-image"
    stub.write_text(
        f'#!/bin/sh\nargs="$*"; img=""\n'
        'while [ $# -gt 0 ]; do [ "$1" = -i ] && img=$2; shift; done\n'
        f'echo "$(cat "$img") $args" >> {calls}\n'
    )
    hook = bin_dir / "register-images"
    hook.write_text(readme_hook())
    for path in (stub, hook):
        path.chmod(0o755)
    one, arm = image_tarball("centos"), image_tarball("debian")
    upstream.add("centos.tgz", one)
    upstream.add("debian.tgz", arm, architecture="aarch64")
    upstream.write()
    hook_config(mirror, server, [str(hook), "--bucket", "prod"])
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}

    done = mirror.sync(env=env)

    assert done.returncode == 0, done.stderr
    assert named(done.stderr, "hook_done"), done.stderr
    registered = sorted(calls.read_text().splitlines())
    assert len(registered) == 2
    assert registered[0].startswith("disk image centos") and "x86_64" in registered[0]
    assert registered[1].startswith("disk image debian") and "aarch64" in registered[1]
    assert all("prod" in line for line in registered)
    lines = [e["line"] for e in named(done.stderr, "hook_output")]
    assert any(f"registering {name_of(one)} (x86_64)" in line for line in lines), lines
