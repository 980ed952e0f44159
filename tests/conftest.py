"""Shared helpers: sample upstreams on disk, configs, and the CLI as a real subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eumirror.core.names import name_of_chunks

sys.path.insert(0, str(Path(__file__).parent))

from faultserver import ThreadedFaultServer
from s3kit import bucket, rgw  # noqa: F401  (fixtures: a real Ceph RGW per session)

CLI_TIMEOUT = 120


def tarball(seed: int, size: int = 4096) -> bytes:
    """Deterministic bytes standing in for a tarball."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def name_of(data: bytes) -> str:
    return name_of_chunks([data])


@dataclass
class Upstream:
    """A publisher's folder: tarballs and a catalog whose urls are relative to it."""

    folder: Path
    images: list[dict[str, Any]] = field(default_factory=list)
    extra_top: dict[str, Any] = field(default_factory=dict)

    def add(
        self, rel: str, data: bytes, *, url: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entry = {
            "name": name_of(data),
            "description": f"image {rel}",
            "version": "2012.1.14",
            "architecture": "x86_64",
            "single-kernel": "True",
            "hypervisors-supported": ["xen", "kvm"],
            "os": "debian",
            "url": url if url is not None else rel,
            "date": "20120114152138",
            "recipe": "debian-based",
            "stamp": "3752-f34a",
            "contact": "images@lists.eucalyptus.com",
            **fields,
        }
        self.images.append(entry)
        return entry

    def document(self) -> dict[str, Any]:
        return {"version": "eustore-catalog-2011-12-29", **self.extra_top, "images": self.images}

    def write(self, name: str = "catalog") -> Path:
        path = self.folder / name
        path.write_text(json.dumps(self.document(), indent=2))
        return path


@dataclass
class Mirror:
    root: Path
    config: Path

    def catalog(self, upstream: str = "up") -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / upstream / "catalog").read_bytes())
        return data

    def catalog_bytes(self, upstream: str = "up") -> bytes:
        return (self.root / upstream / "catalog").read_bytes()

    def files(self, upstream: str = "up") -> dict[str, bytes]:
        base = self.root / upstream
        return {
            str(p.relative_to(base)): p.read_bytes()
            for p in sorted(base.rglob("*"))
            if p.is_file() and p.name != "catalog"
        }

    def sync(
        self, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli("sync", "--once", "--config", str(self.config), *extra, env=env)


def write_config(
    path: Path,
    *,
    root: Path,
    upstreams: dict[str, str],
    mirror: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    extra: str = "",
) -> Path:
    lines = ["[mirror]", f"root = {json.dumps(str(root))}"]
    for key, value in (mirror or {}).items():
        lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[limits]")
    merged = {"retries": 2, "low_speed_time": "5s", **(limits or {})}
    for key, value in merged.items():
        lines.append(f"{key} = {json.dumps(value)}")
    for name, catalog in upstreams.items():
        lines += ["[[upstream]]", f"name = {json.dumps(name)}", f"catalog = {json.dumps(catalog)}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI as a new user runs it: a real process, its exit code, its stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EUMIRROR_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "eumirror", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
        check=False,
    )


def events(stderr: str) -> list[dict[str, Any]]:
    """The structured log lines (JSON, since stderr is not a terminal)."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def human_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("eumirror: ")]


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    folder = tmp_path / "upstream"
    folder.mkdir()
    return Upstream(folder)


@pytest.fixture
def server(upstream: Upstream) -> Iterator[ThreadedFaultServer]:
    with ThreadedFaultServer(upstream.folder) as srv:
        yield srv


@pytest.fixture
def mirror(tmp_path: Path, server: ThreadedFaultServer) -> Mirror:
    root = tmp_path / "mirror"
    config = write_config(
        tmp_path / "eumirror.toml", root=root, upstreams={"up": f"{server.url}/catalog"}
    )
    return Mirror(root, config)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--crash-iterations",
        type=int,
        default=int(os.environ.get("EUMIRROR_CRASH_ITERATIONS", "8")),
        help="SIGKILLs in the crash-consistency test (CI: 8; the slow run: 100)",
    )


RGW_MODULES = frozenset(
    {
        "tests/test_s3.py",
        "tests/test_rgwcluster.py",
        "tests/test_bench_s3.py",
        "tests/test_bench_s3client.py",
    }
)
"""The modules whose tests run on the session's Ceph RGW (and tests/test_storage_contract.py's
`bucket` cases)."""


def on_rgw(nodeid: str) -> bool:
    """Whether the test NODEID runs on the session's Ceph RGW."""
    path, _, rest = nodeid.partition("::")
    if path in RGW_MODULES:
        return True
    return path == "tests/test_storage_contract.py" and "[bucket" in rest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` (pyproject.toml) with every test on the RGW in one group: they run in
    one xdist worker, so one Ceph cluster boots (~20 s of both cores) instead of one per worker.
    The group is chosen by node id here because xdist 3.8 cannot read `xdist_group` marks under
    pytest 9.2 (it renames `item._nodeid`, which pytest no longer reads); as the largest group it
    is also sent out first."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class RGWGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "rgw" if on_rgw(nodeid) else super()._split_scope(nodeid)

    return RGWGroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail the collection when a test uses `rgw` outside RGW_MODULES: under xdist it would boot
    one more cluster in another worker."""
    loose = [
        item.nodeid
        for item in items
        if "rgw" in getattr(item, "fixturenames", ()) and not on_rgw(item.nodeid)
    ]
    if loose:
        raise pytest.UsageError(
            "tests using `rgw` outside tests/conftest.py's RGW_MODULES: " + ", ".join(loose)
        )
