"""The command line as a new user meets it: names, the publisher's refresh, config errors, TTYs."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Mirror, Upstream, human_lines, name_of, run_cli, tarball, write_config
from faultserver import ThreadedFaultServer

from eumirror import __version__

REPO = Path(__file__).resolve().parent.parent


def test_version() -> None:
    """--version prints the package version."""
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"eumirror {__version__}"


def test_name_prints_contract_vectors_in_order(tmp_path: Path) -> None:
    """`eumirror name` prints NAME  FILE per file, in order, like md5sum."""
    files = {"empty": b"", "a": b"a", "eustore": b"eustore\n"}
    for fname, data in files.items():
        (tmp_path / fname).write_bytes(data)

    done = run_cli("name", *(str(tmp_path / f) for f in files))

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"1136548044  {tmp_path / 'empty'}",
        f"3867013014  {tmp_path / 'a'}",
        f"2106965694  {tmp_path / 'eustore'}",
    ]


def test_name_of_missing_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A missing file is reported on stderr; the others are still named."""
    (tmp_path / "a").write_bytes(b"a")
    done = run_cli("name", str(tmp_path / "nope"), str(tmp_path / "a"))
    assert done.returncode == 1
    assert done.stdout.strip() == f"3867013014  {tmp_path / 'a'}"
    assert any("nope" in line for line in human_lines(done.stderr))


def test_catalog_refresh_prints_and_writes_in_place(upstream: Upstream) -> None:
    """refresh fills in names from the tarballs beside the catalog; --in-place writes it back."""
    upstream.add("one.tgz", tarball(1), name="PLACEHOLDER")
    upstream.add("two.tgz", tarball(2))
    del upstream.images[1]["name"]
    path = upstream.write()

    printed = run_cli("catalog", "refresh", str(path))
    assert printed.returncode == 0, printed.stderr
    doc = json.loads(printed.stdout)
    assert [i["name"] for i in doc["images"]] == [name_of(tarball(1)), name_of(tarball(2))]
    assert json.loads(path.read_text())["images"][0]["name"] == "PLACEHOLDER"

    written = run_cli("catalog", "refresh", str(path), "--in-place")
    assert written.returncode == 0, written.stderr
    assert json.loads(path.read_text()) == doc
    assert [p.name for p in upstream.folder.iterdir() if p.name.startswith(".")] == []


def test_catalog_refresh_reports_missing_tarballs(tmp_path: Path, upstream: Upstream) -> None:
    """A missing tarball keeps its name, is reported, and makes the exit code 1."""
    upstream.add("one.tgz", tarball(1))
    upstream.add("sub/two.tgz", tarball(2), name="0000000002")
    path = upstream.write()
    tarballs = tmp_path / "tarballs"
    tarballs.mkdir()
    (tarballs / "one.tgz").write_bytes(tarball(1))

    done = run_cli("catalog", "refresh", str(path), "--dir", str(tarballs))

    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["images"][1]["name"] == "0000000002"
    assert any("two.tgz" in line for line in human_lines(done.stderr))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[mirror]\n", "mirror.root"),
        ('[mirror]\nroot = "r"\nbogus = 1\n', "mirror.bogus"),
        (
            '[mirror]\nroot = "r"\n[limits]\ncatalog_max_bytes = "12 parsecs"\n',
            "limits.catalog_max_bytes",
        ),
        ('[mirror]\nroot = "r"\n[schedule]\ninterval = "soon"\n', "schedule.interval"),
        (
            '[mirror]\nroot = "r"\n[[upstream]]\nname = "Bad Name"\ncatalog = "c"\n',
            "upstream[0].name",
        ),
        (
            '[mirror]\nroot = "r"\n[[upstream]]\nname = "a"\ncatalog = "c"\n'
            '[[upstream]]\nname = "a"\ncatalog = "d"\n',
            "upstream[1].name",
        ),
        ("[mirror\n", "invalid TOML"),
    ],
)
def test_config_errors_exit_2_naming_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    """Configuration errors exit 2 with one line that names the file and the key."""
    config = tmp_path / "bad.toml"
    config.write_text(text)

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 2
    lines = human_lines(done.stderr)
    assert len(lines) == 1 and str(config) in lines[0] and key in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_missing_config_exit_2(tmp_path: Path) -> None:
    """A config file that does not exist is exit 2 with a hint."""
    done = run_cli("verify", "--config", str(tmp_path / "none.toml"))
    assert done.returncode == 2
    assert "not found" in done.stderr


def test_config_from_environment(tmp_path: Path, upstream: Upstream) -> None:
    """$EUMIRROR_CONFIG is used when --config is not given."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    config = write_config(
        tmp_path / "c.toml", root=tmp_path / "root", upstreams={"up": "upstream/catalog"}
    )
    done = subprocess.run(
        [sys.executable, "-m", "eumirror", "sync", "--once"],
        env={**os.environ, "EUMIRROR_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "root" / "up" / "catalog").exists()


def test_usage_error_exit_2() -> None:
    """An unknown command is a usage error, exit 2."""
    assert run_cli("mirror-everything").returncode == 2


def test_demo_config_mirrors_the_shipped_sample(tmp_path: Path) -> None:
    """config/demo.toml mirrors the sample upstream shipped in the package, offline."""
    demo = (REPO / "config" / "demo.toml").read_text()
    config = tmp_path / "config" / "demo.toml"
    config.parent.mkdir()
    config.write_text(
        demo.replace(
            '"../eumirror/sample/catalog"',
            json.dumps(str(REPO / "eumirror" / "sample" / "catalog")),
        )
    )

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 0, done.stderr
    mirror = Mirror(tmp_path / "demo-mirror", config)
    assert len(mirror.catalog("sample")["images"]) == 3
    assert run_cli("verify", "--config", str(config)).returncode == 0


def test_progress_shows_on_a_terminal_only(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """On a TTY sync --once shows a live progress line; piped, stderr is JSON lines only."""
    upstream.add("a.tgz", tarball(1, 300_000))
    upstream.write()
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(mirror.config)],
            stdout=subprocess.DEVNULL,
            stderr=follower,
            stdin=subprocess.DEVNULL,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert "upstream_done" in shown and not shown.lstrip().startswith("{")
    assert "files " in shown and "/s" in shown
    piped = mirror.sync()
    assert all(line.startswith("{") for line in piped.stderr.splitlines())


def test_proxy_from_environment_is_used(tmp_path: Path, upstream: Upstream) -> None:
    """HTTP_PROXY is honoured: the catalog's own host is unreachable, the proxy serves it."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    with ThreadedFaultServer(upstream.folder) as proxy:
        config = write_config(
            tmp_path / "c.toml",
            root=tmp_path / "root",
            upstreams={"up": "http://eumirror-upstream.invalid/catalog"},
        )
        done = run_cli(
            "sync",
            "--once",
            "--config",
            str(config),
            env={"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": ""},
        )
        assert done.returncode == 0, done.stderr
        assert proxy.requests("/a/img.tgz") == 1
