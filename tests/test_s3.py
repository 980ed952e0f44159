"""An s3:// root against a real Ceph RGW (tests/rgwcluster.py): sync, verify, history, filters,
the daemon, anonymous reads straight from RGW, and faults (radosgw stopped, SIGKILL, bad
credentials, a missing bucket, lying upstreams). No S3 mock anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from conftest import Upstream, events, human_lines, name_of, run_cli, tarball, write_config
from faultserver import Fault, ThreadedFaultServer
from s3kit import RGW

from eumirror.core.names import name_of_chunks

BIG = 20 << 20
"""Three 8 MiB parts: a multipart upload."""
WAIT = 60.0


class S3Mirror:
    """An s3-rooted mirror: its config, its CLI, and what is in its bucket."""

    def __init__(self, rgw: RGW, bucket: str, tmp: Path, catalog: str, **extra: Any) -> None:
        self.rgw, self.bucket, self.prefix = rgw, bucket, "eu/mirror"
        self.state = tmp / "state"
        self.config = tmp / "eumirror.toml"
        self.catalog_url = catalog
        self.write(**extra)

    def write(
        self, *, upstreams: dict[str, str] | None = None, extra: str = "", **mirror: Any
    ) -> None:
        write_config(
            self.config,
            root=Path(f"s3://{self.bucket}/{self.prefix}"),
            upstreams=upstreams or {"up": self.catalog_url},
            mirror={"state_dir": str(self.state), **mirror},
            extra=f'{extra}\n[s3]\nendpoint_url = "{self.rgw.endpoint}"\nregion = "us-east-1"\n',
        )
        # write_config normalises the root as a path: keep the url as written
        text = self.config.read_text().replace(
            f'root = "s3:/{self.bucket}/{self.prefix}"',
            f'root = "s3://{self.bucket}/{self.prefix}"',
        )
        self.config.write_text(text)

    def env(self) -> dict[str, str]:
        env = self.rgw.env()
        env.pop("AWS_ENDPOINT_URL", None)  # the config's [s3] endpoint_url is what counts
        return env

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", str(self.config), env={**self.env(), **(env or {})})

    def sync(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cli("sync", "--once", *args, env=env)

    def objects(self) -> dict[str, int]:
        client = self.rgw.client()
        found: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def get(self, key: str) -> bytes:
        body: bytes = self.rgw.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def catalog(self, upstream: str = "up") -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.get(f"{self.prefix}/{upstream}/catalog"))
        return doc

    def uploads(self) -> list[dict[str, Any]]:
        answer = self.rgw.client().list_multipart_uploads(Bucket=self.bucket)
        return list(answer.get("Uploads", []))

    def assert_whole(self, upstream: str = "up") -> dict[str, Any]:
        """The bucket holds exactly the catalog and verified tarballs, and every url of the
        catalog leads to one whose name checks out."""
        base = f"{self.prefix}/{upstream}/"
        keys = self.objects()
        doc = self.catalog(upstream)
        for key in keys:
            assert key.startswith(f"{self.prefix}/"), key
            if not key.startswith(base):
                continue
            rest = key[len(base) :]
            if rest == "catalog":
                continue
            parts = rest.split("/")
            assert len(parts) == 3 and parts[0] == "images", key
            assert name_of(self.get(key)) == parts[1], f"unverified object {key}"
        for image in doc["images"]:
            key = base + urllib.request.url2pathname(image["url"]).lstrip("/")
            assert key in keys, image["url"]
            assert name_of(self.get(key)) == image["name"]
        return doc


@pytest.fixture
def s3(rgw: RGW, bucket: str, tmp_path: Path, server: ThreadedFaultServer) -> S3Mirror:
    return S3Mirror(rgw, bucket, tmp_path, f"{server.url}/catalog")


def sample(upstream: Upstream) -> dict[str, bytes]:
    files = {
        "a/one.tgz": tarball(1),
        "a/two.tgz": tarball(2, 300_000),
        "b/euca-fedora-17(x86_64)+kvm.tar.gz": tarball(3),
        "big/large.tgz": tarball(4, BIG),
    }
    for rel, data in files.items():
        upstream.add(rel, data)
    upstream.write()
    return files


def downloaded(stderr: str) -> int:
    done = [e for e in events(stderr) if e.get("event") == "upstream_done"]
    return sum(int(e.get("downloaded", 0)) for e in done)


def test_sync_publishes_into_the_bucket_and_a_second_sync_downloads_nothing(
    s3: S3Mirror, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """The first sync publishes the catalog and every tarball; then, with a bucket policy
    allowing anonymous GetObject, a plain HTTP client set to
    EUSTORE_URL=http://RGW/bucket/prefix/U/ gets the catalog and every tarball (the `+` name
    included: published as %2B, which RGW reads as a plus); a second sync downloads nothing.
    (One test: the anonymous reads need exactly this first sync, and a sync costs seconds.)"""
    files = sample(upstream)

    done = s3.sync()

    assert done.returncode == 0, done.stderr
    doc = s3.assert_whole()
    assert sorted(i["name"] for i in doc["images"]) == sorted(name_of(d) for d in files.values())
    keys = s3.objects()
    assert len(keys) == len(files) + 1
    plus = next(i for i in doc["images"] if "fedora" in i["url"])
    assert plus["url"].endswith("/euca-fedora-17(x86_64)%2Bkvm.tar.gz"), plus["url"]
    head = s3.rgw.client().head_object(Bucket=s3.bucket, Key=f"{s3.prefix}/up/catalog")
    assert head["ContentType"] == "application/json"
    assert not s3.uploads()
    assert (s3.state / "state").is_dir(), "the state lives in state_dir"
    assert not (s3.state / ".eumirror").exists()
    before = {rel: server.requests(f"/{rel}") for rel in files}

    _anonymous_reads_like_an_eustore_client(s3, files)

    again = s3.sync()

    assert again.returncode == 0, again.stderr
    assert {rel: server.requests(f"/{rel}") for rel in files} == before
    assert downloaded(again.stderr) == 0


def _anonymous_reads_like_an_eustore_client(s3: S3Mirror, files: dict[str, bytes]) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{s3.bucket}/*"],
            }
        ],
    }
    s3.rgw.client().put_bucket_policy(Bucket=s3.bucket, Policy=json.dumps(policy))
    eustore_url = f"{s3.rgw.endpoint}/{s3.bucket}/{s3.prefix}/up/"

    with urllib.request.urlopen(eustore_url + "catalog", timeout=10) as resp:
        doc = json.loads(resp.read())
    got = {}
    for image in doc["images"]:
        with urllib.request.urlopen(urljoin(eustore_url, image["url"]), timeout=30) as resp:
            data = resp.read()
        assert name_of_chunks([data]) == image["name"], image["url"]
        got[image["name"]] = data
    assert sorted(got) == sorted(name_of(d) for d in files.values())


def test_verify_names_objects_deletes_damage_and_the_next_sync_repairs(
    s3: S3Mirror, upstream: Upstream
) -> None:
    sample(upstream)
    assert s3.sync().returncode == 0
    doc = s3.catalog()
    victim = next(i for i in doc["images"] if "one.tgz" in i["url"])
    key = f"{s3.prefix}/up/{victim['url']}"
    assert s3.cli("verify").returncode == 0
    s3.rgw.client().put_object(Bucket=s3.bucket, Key=key, Body=b"not the bytes")

    found = s3.cli("verify")

    assert found.returncode == 1
    assert f"s3://{s3.bucket}/{key}" in found.stderr
    assert key not in s3.objects(), "damage leaves its published key at once"

    repaired = s3.sync()

    assert repaired.returncode == 0, repaired.stderr
    s3.assert_whole()
    assert key in s3.objects()
    assert s3.cli("verify").returncode == 0


def test_damage_found_by_the_sync_itself_is_repaired(s3: S3Mirror, upstream: Upstream) -> None:
    """The cheap check (size and ETag from one listing) finds an object replaced behind
    eumirror's back; the sync downloads it again and exits 0."""
    sample(upstream)
    assert s3.sync().returncode == 0
    image = next(i for i in s3.catalog()["images"] if "two.tgz" in i["url"])
    key = f"{s3.prefix}/up/{image['url']}"
    s3.rgw.client().put_object(Bucket=s3.bucket, Key=key, Body=tarball(99, 300_000))
    s3.rgw.client().delete_object(
        Bucket=s3.bucket, Key=f"{s3.prefix}/up/" + s3.catalog()["images"][0]["url"]
    )

    done = s3.sync()

    assert done.returncode == 0, done.stderr
    assert downloaded(done.stderr) == 2
    s3.assert_whole()


def test_a_lying_upstream_leaves_no_object_and_no_upload(
    s3: S3Mirror, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """Wrong bytes for a multipart-sized and a small tarball: nothing of them becomes an
    object, the multipart upload is aborted, the rest is published, exit 1."""
    sample(upstream)
    server.set_fault("/big/large.tgz", Fault(replace_body=tarball(5, BIG)))
    server.set_fault("/a/one.tgz", Fault(replace_body=tarball(6)))

    done = s3.sync()

    assert done.returncode == 1
    doc = s3.assert_whole()
    assert len(doc["images"]) == 2
    assert not s3.uploads(), "the failed multipart upload was aborted"
    assert not [k for k in s3.objects() if "large.tgz" in k or "one.tgz" in k]


def test_wrong_credentials_and_a_missing_bucket_are_one_line_each(
    s3: S3Mirror, upstream: Upstream
) -> None:
    sample(upstream)

    denied = s3.sync(env={"AWS_SECRET_ACCESS_KEY": "wrong"})

    assert denied.returncode == 1, denied.stderr
    lines = human_lines(denied.stderr)
    assert any("refused our credentials" in line for line in lines), denied.stderr
    assert "Traceback" not in denied.stderr
    assert s3.objects() == {}

    s3.bucket = s3.bucket + "-missing"
    s3.write()
    missing = s3.sync()

    assert missing.returncode == 1, missing.stderr
    assert any("does not exist" in line for line in human_lines(missing.stderr)), missing.stderr
    assert "Traceback" not in missing.stderr


def test_keep_removed_and_filters_on_a_bucket(s3: S3Mirror, upstream: Upstream) -> None:
    """A removed image's object goes once keep_removed has passed and no kept generation
    needs it; include/exclude shape a bucket's catalog."""
    sample(upstream)
    assert s3.sync().returncode == 0
    gone = next(i for i in s3.catalog()["images"] if "one.tgz" in i["url"])
    upstream.images = [i for i in upstream.images if "one.tgz" not in i["url"]]
    upstream.write()
    s3.write(keep_removed="0s", keep_generations=1)

    assert s3.sync().returncode == 0

    assert not [k for k in s3.objects() if gone["name"] in k]
    s3.assert_whole()

    section = f'[[upstream]]\nname = "f"\ncatalog = "{s3.catalog_url}"\n'
    s3.write(extra=section + 'include = { description = ["*two*"] }\n')
    done = s3.sync()
    assert done.returncode == 0, done.stderr
    filtered = s3.catalog("f")
    assert [i["url"].rsplit("/", 1)[1] for i in filtered["images"]] == ["two.tgz"]
    s3.assert_whole("f")


def test_rollback_then_unpin_on_a_bucket(s3: S3Mirror, upstream: Upstream) -> None:
    sample(upstream)
    assert s3.sync().returncode == 0
    first = s3.catalog()
    upstream.add("c/three.tgz", tarball(7))
    upstream.write()
    assert s3.sync().returncode == 0
    second = s3.catalog()
    assert len(second["images"]) == 5

    rolled = s3.cli("rollback", "up")

    assert rolled.returncode == 0, rolled.stderr
    assert s3.catalog() == first
    s3.assert_whole()
    assert s3.cli("unpin", "up").returncode == 0
    assert s3.sync().returncode == 0
    assert s3.catalog() == second


def test_serve_with_an_s3_root_and_state_dir_rules_are_exit_2(s3: S3Mirror, tmp_path: Path) -> None:
    s3.write(extra='[serve]\nlisten = "127.0.0.1:0"\n')
    assert s3.sync().returncode == 2
    local = write_config(
        tmp_path / "local.toml",
        root=tmp_path / "m",
        upstreams={"up": s3.catalog_url},
        mirror={"state_dir": str(tmp_path / "s")},
    )
    refused = run_cli("sync", "--once", "--config", str(local))
    assert refused.returncode == 2
    assert "state_dir" in refused.stderr


def _published_then_big_added(
    s3: S3Mirror, upstream: Upstream
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The small images published; then the upstream adds the multipart-sized one."""
    files = sample(upstream)
    del files["big/large.tgz"]
    upstream.images = [i for i in upstream.images if "large" not in i["url"]]
    upstream.write()
    assert s3.sync().returncode == 0
    before = s3.catalog()
    upstream.add("big/large.tgz", tarball(4, BIG))
    upstream.write()
    return files, before


def _gated_sync(
    s3: S3Mirror, server: ThreadedFaultServer, after: int
) -> tuple[subprocess.Popen[str], threading.Event]:
    """Start a sync whose big tarball stops after `after` bytes until the gate opens."""
    gate, arrived = threading.Event(), threading.Event()
    server.set_fault(
        "/big/large.tgz", Fault(times=1, gate=gate, gate_after=after, on_request=arrived)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(s3.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **s3.env()},
    )
    return proc, gate


def _wait_for_parts(s3: S3Mirror, parts: int) -> None:
    """Until the big tarball's upload has `parts` parts in RGW (polled, with a deadline)."""
    import time

    client = s3.rgw.client()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for upload in s3.uploads():
            listed = client.list_parts(
                Bucket=s3.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            if len(listed.get("Parts", [])) >= parts:
                return
        time.sleep(0.1)
    raise AssertionError(f"no upload reached {parts} parts in {WAIT}s")


def test_sigkill_mid_upload_keeps_the_bucket_whole_and_the_next_sync_finishes(
    s3: S3Mirror, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    files, before = _published_then_big_added(s3, upstream)
    proc, gate = _gated_sync(s3, server, after=17 << 20)
    try:
        _wait_for_parts(s3, 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        assert proc.stderr is not None
        proc.stderr.close()
    assert s3.uploads(), "the killed run left its upload (aborted by the next run)"
    assert s3.assert_whole() == before
    requests = {rel: server.requests(f"/{rel}") for rel in files}

    done = s3.sync()

    assert done.returncode == 0, done.stderr
    assert {rel: server.requests(f"/{rel}") for rel in files} == requests
    assert len(s3.assert_whole()["images"]) == 4
    assert not s3.uploads(), "the stale upload was aborted"


def test_radosgw_stopped_mid_upload_then_restarted(
    s3: S3Mirror, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """radosgw goes away (by PID) in the middle of a multipart upload: the sync fails with one
    line and publishes nothing half-made; once radosgw is back, the next sync finishes without
    downloading again what was completed."""
    files, before = _published_then_big_added(s3, upstream)
    proc, gate = _gated_sync(s3, server, after=17 << 20)
    try:
        _wait_for_parts(s3, 2)
        s3.rgw.stop_rgw()
        gate.set()
        _, stderr = proc.communicate(timeout=180)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        s3.rgw.restart_rgw()
    assert proc.returncode == 1, stderr
    assert any("object store" in line for line in human_lines(stderr)), stderr
    assert "Traceback" not in stderr
    assert s3.assert_whole() == before
    requests = {rel: server.requests(f"/{rel}") for rel in files}

    done = s3.sync()

    assert done.returncode == 0, done.stderr
    assert {rel: server.requests(f"/{rel}") for rel in files} == requests
    assert len(s3.assert_whole()["images"]) == 4
    assert not s3.uploads()


def test_the_daemon_publishes_into_the_bucket(
    s3: S3Mirror, upstream: Upstream, tmp_path: Path
) -> None:
    from test_daemon import Daemon

    sample(upstream)
    s3.write(extra='[schedule]\ninterval = "1h"\n[status]\nlisten = "127.0.0.1:0"\n')
    daemon = Daemon(s3.config, env=s3.env())
    try:
        assert daemon.wait_event("sync_done")["result"] == "success"
        status = daemon.status()
        assert status["upstreams"]["up"]["images"] == 4, status
        assert status["root"] == f"s3://{s3.bucket}/{s3.prefix}"
        code, _, body = daemon.http("GET", "/metrics")
        assert code == 200 and b"eumirror_images" in body
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert len(s3.assert_whole()["images"]) == 4


def test_the_state_is_rebuilt_from_the_bucket(
    s3: S3Mirror, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """A lost state_dir costs a re-hash of the objects (GETs from the bucket), not a download."""
    import shutil

    files = sample(upstream)
    assert s3.sync().returncode == 0
    requests = {rel: server.requests(f"/{rel}") for rel in files}
    shutil.rmtree(s3.state)

    done = s3.sync()

    assert done.returncode == 0, done.stderr
    assert {rel: server.requests(f"/{rel}") for rel in files} == requests
    assert any(e.get("event") == "state_rebuilt" for e in events(done.stderr)), done.stderr
    assert len(s3.assert_whole()["images"]) == 4


def test_part_size_grows_only_past_s3s_10000_parts() -> None:
    """5 MiB parts for every tarball that fits in 10,000 of them; a larger one (the default
    max_image_bytes is 64 GiB, 10,000 x 5 MiB is 48.8 GiB) gets parts just large enough."""
    from eumirror.storage.s3 import MAX_PARTS, PART, part_size

    assert PART == 5 << 20
    assert part_size(0) == part_size(256 << 20) == part_size(MAX_PARTS * PART) == PART
    for length in (MAX_PARTS * PART + 1, 60 << 30, 64 << 30):
        size = part_size(length)
        assert size > PART
        assert -(-length // size) <= MAX_PARTS
