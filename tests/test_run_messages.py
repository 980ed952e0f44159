"""The end-of-run lines an operator acts on: what failed, where, and what to do next."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conftest import Upstream, human_lines, run_cli, tarball, write_config


def one_upstream(tmp_path: Path, catalog: str = "up/catalog") -> Path:
    source = Upstream(tmp_path / "up")
    source.add("a.tgz", tarball(1))
    source.write()
    return write_config(tmp_path / "c.toml", root=tmp_path / "root", upstreams={"up": catalog})


def test_failed_first_sync_says_nothing_was_published_and_to_run_again(tmp_path: Path) -> None:
    """A first sync that fails says nothing is published yet and to run it again, not that the
    published catalog is unchanged or that a next sync is coming."""
    config = one_upstream(tmp_path, catalog="missing/catalog")
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 1
    (line,) = human_lines(done.stderr)
    assert str(tmp_path / "missing" / "catalog") in line
    assert "nothing has been published for it yet" in line
    assert "run `eumirror sync --once` again" in line
    assert "unchanged" not in line and "next sync" not in line


def test_failed_later_sync_says_the_published_catalog_is_unchanged(tmp_path: Path) -> None:
    """Once a catalog is published, a failed sync says it stays as it was."""
    config = one_upstream(tmp_path)
    assert run_cli("sync", "--once", "--config", str(config)).returncode == 0
    (tmp_path / "up" / "catalog").unlink()
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 1
    (line,) = human_lines(done.stderr)
    assert "the published catalog is unchanged" in line
    assert "run `eumirror sync --once` again" in line


def test_unwritable_metrics_file_is_exit_1_naming_it(tmp_path: Path) -> None:
    """--metrics-file in a missing folder: the sync publishes, then exit 1 with a line naming the
    path and what to check."""
    config = one_upstream(tmp_path)
    target = tmp_path / "no-such-folder" / "eumirror.prom"
    done = run_cli("sync", "--once", "--metrics-file", str(target), "--config", str(config))
    assert done.returncode == 1
    (line,) = human_lines(done.stderr)
    assert f"--metrics-file {target}: not written" in line
    assert "ReadWritePaths=" in line
    assert (tmp_path / "root" / "up" / "catalog").exists()


def test_root_that_is_a_file_names_it(tmp_path: Path) -> None:
    """A mirror root that is a file (or lies under one) names that file and what to change."""
    config = one_upstream(tmp_path)
    (tmp_path / "root").write_text("not a folder")
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 1
    (line,) = human_lines(done.stderr)
    assert f"{tmp_path / 'root'} is a file, not a folder" in line
    assert "[mirror] root" in line and "File exists" not in line

    under = write_config(
        tmp_path / "c2.toml", root=tmp_path / "root" / "m", upstreams={"up": "up/catalog"}
    )
    done = run_cli("sync", "--once", "--config", str(under))
    assert done.returncode == 1
    assert f"{tmp_path / 'root'} is a file, not a folder" in human_lines(done.stderr)[0]


def test_verify_counts_in_the_singular(tmp_path: Path) -> None:
    """verify's summary says '1 tarball checked, 1 problem', not '1 problems'."""
    config = one_upstream(tmp_path)
    assert run_cli("sync", "--once", "--config", str(config)).returncode == 0
    assert run_cli("verify", "--config", str(config)).stdout == "1 tarball checked, 0 problems\n"
    (published,) = (tmp_path / "root" / "up" / "images").glob("*/*")
    published.write_bytes(b"damaged")
    done = run_cli("verify", "--config", str(config))
    assert done.returncode == 1
    assert done.stdout == "1 tarball checked, 1 problem\n"
    shutil.rmtree(tmp_path / "root" / "up" / "images")
    assert "1 problem\n" in run_cli("verify", "--config", str(config)).stdout


def test_daemon_first_failed_sync_says_nothing_published_and_the_next_sync_retries(
    tmp_path: Path,
) -> None:
    """In the daemon a failed first sync says nothing is published yet; a scheduled sync follows."""
    config = one_upstream(tmp_path, catalog="missing/catalog")
    with config.open("a") as f:
        f.write('[status]\nlisten = "127.0.0.1:0"\n')
    env = {k: v for k, v in os.environ.items() if k != "EUMIRROR_CONFIG"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "eumirror", "sync", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(60, daemon.kill)
    watchdog.start()
    try:
        assert daemon.stderr is not None
        line = next(x for x in daemon.stderr if x.startswith("eumirror: "))
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        watchdog.cancel()
        daemon.kill()
        daemon.communicate()
    assert "nothing has been published for it yet" in line
    assert "the next scheduled sync tries again" in line
