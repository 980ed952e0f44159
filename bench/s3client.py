"""Which S3 client should eumirror publish with? aiobotocore against obstore, on a real Ceph RGW.

Two workloads, the shapes of issue 14's benchmark: (a) 8 x 256 MiB, each a multipart upload whose
parts (16 MiB) are streamed in order from memory, 4 objects at once; (b) 2,000 x 256 KiB single
PUTs, 4 at once. Each client runs in its own subprocess so its CPU time and peak RSS are its own
(os.wait4); each (client, run) gets a fresh cluster, since memstore keeps every byte in RAM and RGW
frees deleted objects only later. Every upload is checked after (object count and sizes).

    python3 bench/s3client.py                          # boots clusters with tests/rgwcluster.py
    python3 bench/s3client.py --endpoint http://127.0.0.1:PORT --access-key K --secret-key S
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

MiB = 1 << 20
KiB = 1 << 10
CLIENTS = ("aiobotocore", "obstore")
REGION = "us-east-1"


# -- the workers: one client, one workload, in a subprocess -----------------------------------


async def aiobotocore_worker(args: argparse.Namespace, block: bytes) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        s3={"addressing_style": "path"},
        max_pool_connections=args.concurrency,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=args.endpoint,
        region_name=REGION,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key,
        config=config,
    ) as s3:
        gate = asyncio.Semaphore(args.concurrency)

        async def multipart(key: str) -> None:
            async with gate:
                up = (await s3.create_multipart_upload(Bucket=args.bucket, Key=key))["UploadId"]
                parts = []
                for n in range(1, args.parts + 1):
                    r = await s3.upload_part(
                        Bucket=args.bucket, Key=key, UploadId=up, PartNumber=n, Body=block
                    )
                    parts.append({"PartNumber": n, "ETag": r["ETag"]})
                await s3.complete_multipart_upload(
                    Bucket=args.bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts}
                )

        async def single(key: str) -> None:
            async with gate:
                await s3.put_object(Bucket=args.bucket, Key=key, Body=block)

        one = multipart if args.workload == "multipart" else single
        await asyncio.gather(*(one(f"o/{i:05d}") for i in range(args.count)))


async def obstore_worker(args: argparse.Namespace, block: bytes) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        args.bucket,
        endpoint=args.endpoint,
        access_key_id=args.access_key,
        secret_access_key=args.secret_key,
        region=REGION,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    gate = asyncio.Semaphore(args.concurrency)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(args.parts):
            yield block

    async def multipart(key: str) -> None:
        async with gate:
            await obstore.put_async(store, key, stream(), chunk_size=len(block), max_concurrency=1)

    async def single(key: str) -> None:
        async with gate:
            await obstore.put_async(store, key, block, use_multipart=False)

    one = multipart if args.workload == "multipart" else single
    await asyncio.gather(*(one(f"o/{i:05d}") for i in range(args.count)))


def worker(args: argparse.Namespace) -> None:
    faulthandler.enable()  # obstore sometimes aborts at exit (pyo3/tokio): show where
    block = os.urandom(args.block)
    began = time.monotonic()
    run = aiobotocore_worker if args.client == "aiobotocore" else obstore_worker
    asyncio.run(run(args, block))
    print(json.dumps({"wall": time.monotonic() - began}))


# -- the driver ---------------------------------------------------------------------------------


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    import botocore.config
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def measure(
    client: str, workload: str, endpoint: str, keys: tuple[str, str], opts: argparse.Namespace
) -> dict[str, Any]:
    """Run one worker subprocess; return its wall, MB/s, CPU and peak RSS, after checking."""
    s3 = s3_client(endpoint, *keys)
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    if workload == "multipart":
        count, block, parts = opts.big_count, opts.part_mib * MiB, opts.big_mib // opts.part_mib
    else:
        count, block, parts = opts.small_count, opts.small_kib * KiB, 1
    argv = [
        sys.executable, __file__, "worker", "--client", client, "--workload", workload,
        "--endpoint", endpoint, "--access-key", keys[0], "--secret-key", keys[1],
        "--bucket", bucket, "--count", str(count), "--block", str(block),
        "--parts", str(parts), "--concurrency", str(opts.concurrency),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env={**os.environ, "RUST_BACKTRACE": "1"})
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    note = ""
    if proc.returncode != 0:  # reported, not fatal: a crash is a finding about the client
        print(f"{client} {workload} worker exited {proc.returncode}", file=sys.stderr)
        if not out.strip():  # it died before it finished: no figures
            raise SystemExit(f"{client} {workload} worker died before reporting")
        note = f"exit {proc.returncode} after finishing"  # the uploads are still checked below
    wall = float(json.loads(out)["wall"])
    size = block * parts
    listed = [
        o["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert listed == [size] * count, f"{client} {workload}: {len(listed)} objects, sizes off"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    return {
        "client": client,
        "workload": workload,
        "objects": count,
        "MB/s": round(count * size / 1e6 / wall, 1),
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_MiB": round(usage.ru_maxrss / 1024, 1),
        "note": note,
    }


def driver(opts: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import rgwcluster

    rows = []
    for run in range(1, opts.runs + 1):
        for client in opts.clients.split(","):
            with tempfile.TemporaryDirectory(prefix="s3bench-") as tmp:
                if opts.endpoint:
                    endpoint, keys = opts.endpoint, (opts.access_key, opts.secret_key)
                else:
                    cluster = rgwcluster.start(tmp)
                    endpoint, keys = cluster.endpoint, (cluster.access_key, cluster.secret_key)
                try:
                    for workload in ("multipart", "small"):
                        row = {"run": run, **measure(client, workload, endpoint, keys, opts)}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                finally:
                    if not opts.endpoint:
                        rgwcluster.stop(tmp)
    cols = [
        "run",
        "client",
        "workload",
        "objects",
        "MB/s",
        "wall_s",
        "cpu_s",
        "peak_rss_MiB",
        "note",
    ]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in sorted(rows, key=lambda r: (r["workload"], r["client"], r["run"])):
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("mode", nargs="?", default="driver", choices=["driver", "worker"])
    parser.add_argument("--endpoint")
    parser.add_argument("--access-key")
    parser.add_argument("--secret-key")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--big-count", type=int, default=8)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--part-mib", type=int, default=16)
    parser.add_argument("--small-count", type=int, default=2000)
    parser.add_argument("--small-kib", type=int, default=256)
    # worker only
    parser.add_argument("--client", choices=CLIENTS)
    parser.add_argument("--workload", choices=["multipart", "small"])
    parser.add_argument("--bucket")
    parser.add_argument("--count", type=int)
    parser.add_argument("--block", type=int)
    parser.add_argument("--parts", type=int)
    opts = parser.parse_args()
    worker(opts) if opts.mode == "worker" else driver(opts)


if __name__ == "__main__":
    main()
