"""The S3 test harness against the real Ceph RGW it boots: objects, multipart, anonymous reads by
bucket policy, the url-encoding of `+`, and radosgw restarted by PID with the data kept."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import rgwcluster
from s3kit import RGW

MiB = 1 << 20


def http_get(url: str) -> tuple[int, bytes]:
    """A plain anonymous HTTP GET, as a frontend or eustore client would do it."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def allow_anonymous_reads(rgw: RGW, bucket: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    rgw.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def test_put_then_get_returns_the_bytes(rgw: RGW, bucket: str) -> None:
    """An object PUT with the test user's keys reads back byte for byte, with its content type."""
    s3 = rgw.client()
    data = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="p/U/catalog", Body=data, ContentType="application/json")
    got = s3.get_object(Bucket=bucket, Key="p/U/catalog")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/json"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["p/U/catalog"]


def test_each_bucket_is_fresh(rgw: RGW) -> None:
    """Two buckets from the helper have different names and start empty."""
    a, b = rgw.bucket(), rgw.bucket()
    assert a != b
    assert rgw.client().list_objects_v2(Bucket=a)["KeyCount"] == 0


def test_multipart_upload_completes_from_its_listed_parts(rgw: RGW, bucket: str) -> None:
    """Parts uploaded, listed, then completed make one object whose bytes are the parts in order."""
    s3 = rgw.client()
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(123)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="big.tgz")["UploadId"]
    for n, body in enumerate(parts, 1):
        s3.upload_part(Bucket=bucket, Key="big.tgz", UploadId=up, PartNumber=n, Body=body)
    listed = s3.list_parts(Bucket=bucket, Key="big.tgz", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MiB), (2, 5 * MiB), (3, 123)]
    done = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big.tgz", UploadId=up, MultipartUpload={"Parts": done}
    )
    head = s3.head_object(Bucket=bucket, Key="big.tgz")
    assert head["ContentLength"] == sum(map(len, parts))
    assert head["ETag"].strip('"').endswith("-3")
    assert s3.get_object(Bucket=bucket, Key="big.tgz")["Body"].read() == b"".join(parts)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_aborted_uploads_leave_no_object_and_drop_from_the_listing(rgw: RGW, bucket: str) -> None:
    """Stale multipart uploads are found by listing and go away when aborted; no object appears."""
    s3 = rgw.client()
    ups = [s3.create_multipart_upload(Bucket=bucket, Key=f"k{i}")["UploadId"] for i in range(2)]
    s3.upload_part(Bucket=bucket, Key="k0", UploadId=ups[0], PartNumber=1, Body=b"x" * 1000)
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in listed) == [("k0", ups[0]), ("k1", ups[1])]
    for i, up in enumerate(ups):
        s3.abort_multipart_upload(Bucket=bucket, Key=f"k{i}", UploadId=up)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    # AWS answers NoSuchUpload here; RGW 16 answers NoSuchKey: code that resumes must take both.
    with pytest.raises(s3.exceptions.ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key="k0", UploadId=ups[0])
    assert gone.value.response["Error"]["Code"] == "NoSuchKey"


def test_bucket_policy_serves_objects_to_plain_http(rgw: RGW, bucket: str) -> None:
    """Anonymous GETs are refused until a bucket policy allows s3:GetObject; then they serve."""
    data = os.urandom(70_000)
    rgw.client().put_object(Bucket=bucket, Key="prefix/U/a.tgz", Body=data)
    url = f"{rgw.endpoint}/{bucket}/prefix/U/a.tgz"
    assert http_get(url)[0] == 403
    allow_anonymous_reads(rgw, bucket)
    assert http_get(url) == (200, data)
    # As on AWS, without s3:ListBucket in the policy a missing key answers 403, not 404.
    assert http_get(f"{rgw.endpoint}/{bucket}/prefix/U/missing.tgz")[0] == 403


def test_plus_in_a_key_is_served_raw_and_as_2b(rgw: RGW, bucket: str) -> None:
    """RGW 16 reads a raw `+` in a url path as `+` (not as a space, as some stores do), and `%2B`
    too: urls published with `%2B` work on RGW and on the stores that would read a space.
    `(` and `)` are served raw or encoded; a space is only `%20`."""
    s3 = rgw.client()
    allow_anonymous_reads(rgw, bucket)
    key = "U/img+x (1).tgz"
    s3.put_object(Bucket=bucket, Key=key, Body=b"plus")
    s3.put_object(Bucket=bucket, Key="U/img x (1).tgz", Body=b"space")
    base = f"{rgw.endpoint}/{bucket}/"
    assert http_get(base + urllib.parse.quote(key, safe="/")) == (200, b"plus")  # %2B, %28
    assert http_get(base + "U/img%2Bx%20(1).tgz") == (200, b"plus")  # %2B, raw ( )
    assert http_get(base + "U/img+x%20(1).tgz") == (200, b"plus")  # raw +
    assert http_get(base + "U/img%20x%20(1).tgz") == (200, b"space")
    s3.delete_object(Bucket=bucket, Key=key)
    assert http_get(base + "U/img+x%20(1).tgz")[0] == 403  # not the space key: gone (no list)


def test_radosgw_restarted_by_pid_keeps_objects_and_open_uploads(rgw: RGW, bucket: str) -> None:
    """radosgw stopped mid-upload and restarted: objects survive, the upload's parts are kept
    and it completes; the old process is gone and S3 is refused while it is down."""
    s3 = rgw.client()
    s3.put_object(Bucket=bucket, Key="kept", Body=b"kept bytes")
    first = os.urandom(5 * MiB)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mid.tgz")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="mid.tgz", UploadId=up, PartNumber=1, Body=first)
    old_pid = rgw.cluster.pids["rgw"]
    rgw.stop_rgw()
    assert not rgwcluster.alive(old_pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(rgw.endpoint, timeout=5)
    rgw.restart_rgw()
    assert rgw.cluster.pids["rgw"] != old_pid
    s3 = rgw.client()
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"kept bytes"
    listed = s3.list_parts(Bucket=bucket, Key="mid.tgz", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, e1["ETag"])]
    e2 = s3.upload_part(Bucket=bucket, Key="mid.tgz", UploadId=up, PartNumber=2, Body=b"tail")
    parts = [{"PartNumber": 1, "ETag": e1["ETag"]}, {"PartNumber": 2, "ETag": e2["ETag"]}]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mid.tgz", UploadId=up, MultipartUpload={"Parts": parts}
    )
    assert s3.get_object(Bucket=bucket, Key="mid.tgz")["Body"].read() == first + b"tail"


def test_wrong_secret_is_refused(rgw: RGW, bucket: str) -> None:
    """The cluster checks signatures (auth none is only between Ceph daemons)."""
    s3 = rgw.client(aws_secret_access_key="wrong")
    with pytest.raises(s3.exceptions.ClientError, match="SignatureDoesNotMatch"):
        s3.put_object(Bucket=bucket, Key="x", Body=b"x")


def test_cli_start_prints_and_writes_the_cluster(rgw: RGW) -> None:
    """`rgwcluster.py start DIR` (how the session's `rgw` was booted, tests/s3kit.py) prints the
    cluster and writes the same to DIR/rgw.json, with a serving endpoint and every daemon running
    by its pid. `stop DIR` is checked when the session ends: its exit status, every pid gone and
    rgw.json removed (a failure there errors the run)."""
    info = rgw.started
    assert set(info) == {"dir", "endpoint", "access_key", "secret_key", "pids", "boot_seconds"}
    assert set(info["pids"]) == set(rgwcluster.NAMES)
    assert info["boot_seconds"] > 0
    now = json.loads((Path(rgw.cluster.dir) / "rgw.json").read_text())
    # radosgw may have been restarted by an earlier test: a new pid, all else as booted
    assert {**now, "pids": {**now["pids"], "rgw": info["pids"]["rgw"]}} == info
    assert info["endpoint"] == rgw.endpoint
    assert http_get(info["endpoint"] + "/")[0] == 200
    assert all(rgwcluster.alive(pid) for pid in now["pids"].values())
