"""The `rgw` fixture: one real Ceph RGW per test session (tests/rgwcluster.py), shared by S3 tests.

Only tests that ask for `rgw` (or `bucket`) pay the ~17 s boot. The boot and the stop go through
the script's command line (`rgwcluster.py start DIR` / `stop DIR`), so the session's one cluster
also tests them: `RGW.started` keeps what `start` printed (tests/test_rgwcluster.py checks it),
and a `stop` that fails or leaves a daemon running errors the run. Where the cluster cannot start
(no Ceph packages and not root) the tests skip with the reason, except under CI=true, where they
fail: CI installs the packages and must never skip the S3 tests.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rgwcluster

REGION = "us-east-1"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip with REASON, or fail under CI (where the S3 tests must run)."""
    if in_ci():
        pytest.fail(f"CI=true and the RGW cluster is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class RGW:
    """A running cluster: endpoint, keys, S3 clients, fresh buckets and radosgw stop/restart."""

    cluster: rgwcluster.Cluster
    started: dict[str, Any] = field(default_factory=dict)
    """What `rgwcluster.py start DIR` printed (the cluster as it was booted)."""
    _serial: Iterator[int] = field(default_factory=itertools.count)
    _session: Any = None

    @property
    def endpoint(self) -> str:
        return self.cluster.endpoint

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def access_key(self) -> str:
        return self.cluster.access_key

    @property
    def secret_key(self) -> str:
        return self.cluster.secret_key

    @property
    def region(self) -> str:
        return REGION

    def env(self) -> dict[str, str]:
        """The usual AWS environment for a subprocess (eumirror, rclone) to reach this RGW."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self, **overrides: Any) -> Any:
        """A synchronous botocore S3 client, path-style, for set-up and assertions in tests.

        A new client each call (its own connections: none left over from a stopped radosgw),
        from one botocore session: a new session reloads botocore's service models, ~0.2 s a
        client, and the S3 tests make hundreds."""
        import botocore.config
        import botocore.session

        if self._session is None:
            self._session = botocore.session.get_session()

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": REGION,
            "config": botocore.config.Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2},
                connect_timeout=5,
                read_timeout=60,
            ),
        }
        kwargs.update(overrides)
        return self._session.create_client("s3", **kwargs)

    def bucket(self, prefix: str = "t") -> str:
        """Create a bucket no other test uses and return its name."""
        name = f"{prefix}-{next(self._serial)}-{uuid.uuid4().hex[:8]}".lower()
        self.client().create_bucket(Bucket=name)
        return name

    def stop_rgw(self) -> None:
        """Stop radosgw only (by PID); the data stays with the monitor and the OSD."""
        self.cluster = rgwcluster.stop_rgw(self.cluster.dir)

    def restart_rgw(self) -> None:
        """Start radosgw again (stopping it first if it runs) on the same port."""
        self.cluster = rgwcluster.restart_rgw(self.cluster.dir)


def cluster_cli(verb: str, folder: Path, *, timeout: float) -> subprocess.CompletedProcess[str]:
    """`tests/rgwcluster.py VERB FOLDER` as a process (how the session's cluster is run)."""
    return subprocess.run(
        [sys.executable, rgwcluster.__file__, verb, str(folder)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RGW]:
    """A one-node Ceph cluster with radosgw on 127.0.0.1, started once for the session."""
    try:
        import botocore  # noqa: F401
    except ImportError:
        unavailable("botocore is not installed (pip install -e '.[dev]' brings eumirror[s3])")
    folder: Path = tmp_path_factory.mktemp("rgw")
    try:
        boot = cluster_cli("start", folder, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        unavailable(f"the Ceph RGW cluster did not start: {e}")
    if boot.returncode != 0:
        unavailable(f"the Ceph RGW cluster did not start: {boot.stderr.strip()}")
    cluster = rgwcluster.load(folder)
    try:
        yield RGW(cluster, started=json.loads(boot.stdout))
    finally:
        pids = rgwcluster.load(folder).pids  # radosgw may have been restarted (a new pid)
        stop = cluster_cli("stop", folder, timeout=120)
        running = [pid for pid in pids.values() if rgwcluster.alive(pid)]
        assert stop.returncode == 0, f"rgwcluster.py stop {folder}: {stop.stderr}"
        assert not running, f"rgwcluster.py stop left pids {running} running"
        assert not (folder / "rgw.json").exists(), "rgwcluster.py stop left rgw.json"


@pytest.fixture
def bucket(rgw: RGW) -> str:
    """A fresh, empty bucket on the session's RGW."""
    return rgw.bucket()
