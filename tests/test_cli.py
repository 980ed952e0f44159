"""The command line as a new user meets it: names, the publisher's refresh, config errors, TTYs."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    Mirror,
    Upstream,
    events,
    human_lines,
    name_of,
    run_cli,
    tarball,
    write_config,
)
from faultserver import ThreadedFaultServer

from eumirror import __version__
from eumirror.cli import build_parser

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


# -- usage errors name the (sub)command and what was probably meant ----------------------------


def test_misspelt_option_gets_the_subcommands_usage_and_a_suggestion() -> None:
    """`sync --onec` is shown in sync's own usage, with "did you mean --once?"."""
    done = run_cli("sync", "--onec")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: eumirror sync "), done.stderr
    assert "unrecognized arguments: --onec; did you mean --once?" in done.stderr


@pytest.mark.parametrize(
    ("argv", "usage", "meant"),
    [
        (["synk", "--once"], "usage: eumirror ", "did you mean sync?"),
        (["verfy"], "usage: eumirror ", "did you mean verify?"),
        (["catalog", "refesh", "c"], "usage: eumirror catalog ", "did you mean refresh?"),
    ],
)
def test_misspelt_command_suggests_the_closest(argv: list[str], usage: str, meant: str) -> None:
    """An unknown command is exit 2 naming it and the command it most likely meant."""
    done = run_cli(*argv)
    assert done.returncode == 2
    assert done.stderr.startswith(usage)
    assert f"unknown command {argv[-2] if argv[0] == 'catalog' else argv[0]!r}" in done.stderr
    assert meant in done.stderr


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    """--log-level DEBUG is accepted like debug."""
    (tmp_path / "a").write_bytes(b"a")
    done = run_cli("name", "--log-level", "DEBUG", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr


def test_publisher_commands_accept_and_ignore_config(tmp_path: Path, upstream: Upstream) -> None:
    """`name` and `catalog refresh` take --config (before or after) without reading it."""
    (tmp_path / "a").write_bytes(b"a")
    missing = str(tmp_path / "no-such.toml")
    named = run_cli("name", "--config", missing, str(tmp_path / "a"))
    assert named.returncode == 0 and named.stdout.startswith("3867013014  "), named.stderr
    upstream.add("one.tgz", tarball(1), name="PLACEHOLDER")
    catalog = upstream.write()
    refreshed = run_cli("--config", missing, "catalog", "refresh", str(catalog))
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads(refreshed.stdout)["images"][0]["name"] == name_of(tarball(1))


def two_upstreams(tmp_path: Path) -> Path:
    """A configuration of two file upstreams, `a` and `b`, each with one tarball."""
    for index, name in enumerate(("a", "b")):
        source = Upstream(tmp_path / f"up-{name}")
        source.add(f"{name}.tgz", tarball(index))
        source.write()
    return write_config(
        tmp_path / "c.toml",
        root=tmp_path / "root",
        upstreams={"a": "up-a/catalog", "b": "up-b/catalog"},
    )


def test_config_before_the_command(tmp_path: Path) -> None:
    """`eumirror --config F sync --once` reads F, like `sync --once --config F`."""
    config = two_upstreams(tmp_path)
    done = run_cli("--config", str(config), "sync", "--once")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "root" / "a" / "catalog").exists()
    assert (tmp_path / "root" / "b" / "catalog").exists()


def test_sync_once_upstream_syncs_only_those(tmp_path: Path) -> None:
    """--upstream a syncs a alone; b's published catalog and files are left as they were."""
    config = two_upstreams(tmp_path)
    assert run_cli("sync", "--once", "--config", str(config)).returncode == 0
    b_catalog = tmp_path / "root" / "b" / "catalog"
    before = (b_catalog.read_bytes(), b_catalog.stat().st_mtime_ns)
    for name in ("a", "b"):
        source = Upstream(tmp_path / f"up-{name}")
        source.add(f"{name}2.tgz", tarball(10 + len(name)))
        source.images.insert(
            0, json.loads((tmp_path / f"up-{name}" / "catalog").read_text())["images"][0]
        )
        source.write()

    done = run_cli("sync", "--once", "--upstream", "a", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert len(Mirror(tmp_path / "root", config).catalog("a")["images"]) == 2
    assert (b_catalog.read_bytes(), b_catalog.stat().st_mtime_ns) == before
    started = [e for e in events(done.stderr) if e["event"] == "sync_started"]
    assert started and started[0]["upstreams"] == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sync", "--once", "--upstream", "c"], ["'c'", "a, b"]),
        (["sync", "--once", "--upstream", "aa"], ["'aa'", "did you mean 'a'?", "a, b"]),
        (["sync", "--upstream", "a"], ["usage: eumirror sync", "--upstream needs --once"]),
    ],
)
def test_upstream_selection_usage_errors(
    tmp_path: Path, argv: list[str], expected: list[str]
) -> None:
    """An unknown --upstream (naming the known ones) or --upstream without --once is exit 2."""
    config = two_upstreams(tmp_path)
    done = run_cli(*argv, "--config", str(config))
    assert done.returncode == 2
    for text in expected:
        assert text in done.stderr, done.stderr
    assert not (tmp_path / "root").exists()


def test_configuration_without_upstreams_is_exit_2(tmp_path: Path) -> None:
    """A configuration with no [[upstream]] is a configuration error (exit 2), not a no-op."""
    config = tmp_path / "c.toml"
    config.write_text(f'[mirror]\nroot = "{tmp_path / "root"}"\n')
    for command in ("sync", "verify", "status"):
        done = run_cli(
            command, "--once" if command == "sync" else "--log-level=info", "--config", str(config)
        )
        assert done.returncode == 2, (command, done.stderr)
        lines = human_lines(done.stderr)
        assert len(lines) == 1 and "no [[upstream]]" in lines[0] and str(config) in lines[0]


def test_the_console_script_flushes_its_output_and_keeps_its_exit_code(tmp_path: Path) -> None:
    """The installed `eumirror` (cli.run) skips interpreter teardown: everything written to a
    pipe must still arrive, and each outcome keeps its exit code."""
    script = Path(sys.executable).parent / "eumirror"
    assert "run()" in script.read_text() or "cli import run" in script.read_text()
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    # argparse writes help to a block-buffered pipe without flushing: all of it must arrive
    top, _ = build_parser()
    assert helped.stdout.rstrip().endswith(top.format_help().rstrip()[-200:])
    usage = subprocess.run([str(script), "bogus"], capture_output=True, text=True)
    assert usage.returncode == 2 and "unknown command 'bogus'" in usage.stderr
    missing = subprocess.run(
        [str(script), "--config", str(tmp_path / "none.toml"), "sync", "--once"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") >= 1, missing.stderr
