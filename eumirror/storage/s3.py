"""`Storage` in an S3 bucket (Ceph RGW, MinIO, AWS, Eucalyptus's object storage gateway).

A tarball streams from the upstream into a multipart upload while it is hashed; the upload is
completed only once the name checks out, and aborted otherwise, so no object under `prefix/U/`
is ever anything but a verified tarball or the catalog. A tarball of one part or less is held
in memory and PUT once verified. The catalog is one PUT, last. Within a run, a transfer that
breaks resumes from the bytes received (the parts already uploaded stay); after a crash the
upload starts over (md5's state cannot be saved), and the next run aborts what was left.

The client (aiobotocore, on aiohttp like the rest of eumirror) lives on its own event loop in
one thread: the engine's worker threads call the blocking methods, the engine's loop awaits the
download's, and neither ever blocks the other's loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from ..core.config import S3Root
from ..core.errors import ConfigError, StorageError, VerifyError, too_large
from ..core.names import CHUNK, NameHasher
from ..log import log
from ..net.fetch import Validators
from .fs import Cancelled, FileDigest, record_fits

T = TypeVar("T")
PART = 5 << 20
"""Multipart part size (S3's smallest): one part of a download is in memory, and the download
waits while it uploads; four downloads keep the store busy. With 8 MiB parts, 4 downloads peaked
at 154-163 MiB RSS, with 5 MiB at 130-133 (issue 14 asks <= 150), at the same CPU."""
MAX_PARTS = 10_000
"""S3's limit on parts per upload: a tarball larger than MAX_PARTS x PART gets larger parts."""
COPY_PART = 1 << 30
SINGLE_COPY_MAX = 5 << 30
"""S3's limit for one CopyObject; larger objects are copied part by part."""
CATALOG_TYPE = "application/json"


def missing_library() -> ConfigError:
    return ConfigError(
        "an s3:// root needs the aiobotocore library, which is not installed",
        hint="install eumirror with its s3 extra: pip install 'eumirror[s3]'",
    )


class S3Storage:
    """`Storage` on `s3://bucket/prefix`. Blocking methods may be called from any thread but
    the client's own."""

    plus_encoded = True
    indexed = False
    """No stat index: one listing checks every object anyway."""

    def index_holds(self, upstream: str, index: Any, cancelled: Any) -> bool:
        return False

    def __init__(self, root: S3Root, *, connections: int = 10) -> None:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:
            raise missing_library() from None
        self.root = root
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="eumirror-s3", daemon=True)
        self._thread.start()
        session = get_session()
        if root.profile:
            session.set_config_variable("profile", root.profile)
        config = AioConfig(
            s3={"addressing_style": root.addressing_style},
            max_pool_connections=connections,
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=15,
            read_timeout=120,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        creator = session.create_client(
            "s3",
            endpoint_url=root.endpoint_url,
            region_name=root.region or "us-east-1",
            config=config,
        )
        self._creator = creator
        self.client: Any = self.call(creator.__aenter__())

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # -- the bridge -------------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the client's loop and wait for it (from any other thread)."""
        future = asyncio.run_coroutine_threadsafe(self._guard(coro), self._loop)
        return future.result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Run `coro` on the client's loop; awaitable on the calling loop."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(self._guard(coro), self._loop)
        return asyncio.wrap_future(future)

    async def _guard(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        except (StorageError, Cancelled):
            raise
        except Exception as exc:
            raise self.error(exc) from None

    def error(self, exc: Exception, key: str = "") -> StorageError:
        """The client's failure in one line of ours (what, where, what to do)."""
        where = f"s3://{self.root.bucket}/{key}" if key else self.root.url
        code = _code(exc)
        if code in ("NoSuchBucket",):
            return StorageError(
                f"the bucket {self.root.bucket} does not exist ({where})",
                hint="create it (eumirror never creates buckets), or fix [mirror] root",
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return StorageError(
                f"the object store refused our credentials for {where} ({code})",
                hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or [s3] profile, and "
                "that the user may write the bucket",
            )
        if code:
            return StorageError(f"the object store answered {code} for {where}")
        name = type(exc).__name__
        if "Endpoint" in name or "Connect" in name or isinstance(exc, OSError | TimeoutError):
            endpoint = self.root.endpoint_url or "AWS S3"
            return StorageError(
                f"cannot reach the object store at {endpoint} ({where})",
                hint="check [s3] endpoint_url and that the object store is up",
            )
        return StorageError(f"object store error for {where}: {name}: {str(exc)[:160]}")

    def close(self) -> None:
        if not self._loop.is_running():
            return
        with contextlib.suppress(Exception):
            self.call(self._creator.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- names ------------------------------------------------------------------------------
    def key(self, upstream: str, dest: str = "") -> str:
        return self.root.key(upstream, dest) if dest else self.root.key(upstream)

    def where(self, upstream: str, dest: str = "") -> str:
        return f"s3://{self.root.bucket}/{self.key(upstream, dest)}"

    # -- set-up -----------------------------------------------------------------------------
    def check_upstream(self, upstream: str) -> None:
        return None

    def check(self, *, write: bool = True) -> None:
        """The bucket exists and takes our credentials: one HEAD, before any download; then
        what a killed run left half uploaded under the prefix is aborted (one writer per
        prefix: any upload there is ours)."""
        try:
            self.call(self.client.head_bucket(Bucket=self.root.bucket))
        except StorageError as exc:
            if "404" in exc.message or "NoSuchBucket" in exc.message or "NotFound" in exc.message:
                raise StorageError(
                    f"the bucket {self.root.bucket} does not exist ({self.root.url})",
                    hint="create it (eumirror never creates buckets), or fix [mirror] root",
                ) from None
            raise
        if write:
            self.call(self._abort_stale(f"{self.root.prefix}/" if self.root.prefix else ""))

    def prepare_upstream(self, upstream: str) -> None:
        return None

    async def _abort_stale(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.root.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                with contextlib.suppress(Exception):
                    await self.client.abort_multipart_upload(
                        Bucket=self.root.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                log.info("stale_upload_aborted", key=upload["Key"])

    def prepare_dest(self, upstream: str, dest: str) -> str:
        return self.key(upstream, dest)

    def kept_partials(self, upstream: str) -> frozenset[str]:
        return frozenset()

    def new_download(
        self, upstream: str, dest: str, key: str, *, kept: frozenset[str], options: Any
    ) -> Upload:
        return Upload(self, self.key(upstream, dest), options.max_bytes, options.on_length)

    def place(self, upstream: str, items: list[Any]) -> tuple[dict[str, list[Any]], list[Any]]:
        """Completed uploads are visible already (completion came after verification)."""
        placed = {
            item.dest: [item.digest.name, item.digest.size, item.download.etag, item.digest.md5]
            for item in items
        }
        return placed, []

    def link(self, source: str, upstream: str, dest: str, record: list[Any]) -> list[Any]:
        """A server-side copy: no byte passes through eumirror."""
        etag = self.call(self._copy(self.root.key(source), self.key(upstream, dest), record[1]))
        return [record[0], record[1], etag, record[3]]

    async def _copy(self, source: str, target: str, size: int) -> str:
        bucket, client = self.root.bucket, self.client
        copy_source = {"Bucket": bucket, "Key": source}
        if size <= SINGLE_COPY_MAX:
            await client.copy_object(Bucket=bucket, Key=target, CopySource=copy_source)
            return await self._etag(target)
        upload = await client.create_multipart_upload(Bucket=bucket, Key=target)
        upload_id = upload["UploadId"]
        parts = []
        try:
            for number, start in enumerate(range(0, size, COPY_PART), 1):
                end = min(start + COPY_PART, size) - 1
                answer = await client.upload_part_copy(
                    Bucket=bucket,
                    Key=target,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"ETag": answer["CopyPartResult"]["ETag"], "PartNumber": number})
            await client.complete_multipart_upload(
                Bucket=bucket, Key=target, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await client.abort_multipart_upload(Bucket=bucket, Key=target, UploadId=upload_id)
            raise
        return await self._etag(target)

    async def _etag(self, key: str) -> str:
        """An object's ETag as listings show it: what the state records for the cheap check
        (answers to a copy or a completion may give another form, or none)."""
        head = await self.client.head_object(Bucket=self.root.bucket, Key=key)
        return str(head["ETag"])

    def flush(self) -> None:
        return None  # an object is durable once its PUT or completion answered

    # -- the catalog ------------------------------------------------------------------------
    def publish_catalog(self, upstream: str, data: bytes | Iterable[bytes]) -> bool:
        body = data if isinstance(data, bytes) else b"".join(data)
        digest = hashlib.md5(body, usedforsecurity=False)
        key = self.key(upstream, "catalog")
        current = self._head(key)
        if current is not None and current[1] == f'"{digest.hexdigest()}"':
            return False
        self.call(
            self.client.put_object(
                Bucket=self.root.bucket,
                Key=key,
                Body=body,
                ContentType=CATALOG_TYPE,
                ContentMD5=base64.b64encode(digest.digest()).decode(),
            )
        )
        return True

    def read_catalog(self, upstream: str) -> bytes | None:
        return self.call(self._read(self.key(upstream, "catalog")))

    async def _get(self, key: str) -> Any:
        """GetObject's answer, or None when there is no such object."""
        try:
            return await self.client.get_object(Bucket=self.root.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    async def _read(self, key: str) -> bytes | None:
        answer = await self._get(key)
        if answer is None:
            return None
        async with answer["Body"] as stream:
            data: bytes = await stream.read()
        return data

    def catalog_stat(self, upstream: str) -> tuple[int, str] | None:
        return self._head(self.key(upstream, "catalog"))

    def _head(self, key: str) -> tuple[int, str] | None:
        return self.call(self._head_async(key))

    async def _head_async(self, key: str) -> tuple[int, str] | None:
        try:
            answer = await self.client.head_object(Bucket=self.root.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return int(answer["ContentLength"]), str(answer["ETag"])

    # -- checks -----------------------------------------------------------------------------
    def listing(self, upstream: str) -> dict[str, tuple[int, str]]:
        """dest -> (size, ETag) of every object under `prefix/U/images/`."""
        return self.call(self._list(self.key(upstream) + "/"))

    async def _list(self, prefix: str) -> dict[str, tuple[int, str]]:
        found: dict[str, tuple[int, str]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        start = len(prefix)
        async for page in paginator.paginate(Bucket=self.root.bucket, Prefix=prefix + "images/"):
            for item in page.get("Contents", []):
                found[item["Key"][start:]] = (int(item["Size"]), str(item["ETag"]))
        return found

    def still_verified(
        self, upstream: str, records: dict[str, list[Any]]
    ) -> tuple[dict[str, list[Any]], list[tuple[str, list[Any]]]]:
        """One listing (1,000 objects a request) instead of a stat per file."""
        listed = self.listing(upstream)
        kept: dict[str, list[Any]] = {}
        changed: list[tuple[str, list[Any]]] = []
        for dest, rec in records.items():
            found = listed.get(dest)
            if found is None or type(rec) is not list or len(rec) != 4:
                continue
            if not record_fits(dest, rec):
                continue
            if found == (rec[1], rec[2]):
                kept[dest] = rec
            else:
                changed.append((dest, rec))
        return kept, changed

    def rehash(
        self, upstream: str, dest: str, cancelled: Any, *, drop_cache: bool = False
    ) -> tuple[FileDigest, list[Any]] | None:
        return self.call(self._rehash(self.key(upstream, dest), cancelled))

    async def _rehash(self, key: str, cancelled: Any) -> tuple[FileDigest, list[Any]] | None:
        answer = await self._get(key)
        if answer is None:
            return None
        hasher = NameHasher()
        loop = asyncio.get_running_loop()
        async with answer["Body"] as stream:
            while chunk := await stream.read(CHUNK):
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                await loop.run_in_executor(None, hasher.update, chunk)
        digest = FileDigest(hasher.name(), hasher.size, hasher.md5_hex())
        return digest, [digest.name, digest.size, str(answer["ETag"]), digest.md5]

    def size_of(self, upstream: str, dest: str) -> int | None:
        found = self._head(self.key(upstream, dest))
        return found[0] if found else None

    def quarantine(self, upstream: str, dest: str) -> None:
        """Damaged bytes in a bucket are deleted at once: the next sync downloads them again."""
        self.delete(upstream, dest)
        log.warning("image_damaged", upstream=upstream, path=self.where(upstream, dest))

    def scan_unknown(self, upstream: str, known: dict[str, list[Any]]) -> Iterator[str]:
        for dest in self.listing(upstream):
            parts = dest.split("/")
            if len(parts) == 3 and dest not in known:
                yield dest

    def delete(self, upstream: str, dest: str) -> None:
        self.call(self.client.delete_object(Bucket=self.root.bucket, Key=self.key(upstream, dest)))


class Upload:
    """One tarball streaming into the bucket (a fetch Sink on the engine's loop).

    Bytes are hashed as they arrive, in order, and written into the part's buffer, which is the
    request body as it is (no join, and no copy when aiohttp reads it); a full part is uploaded
    before more bytes are taken, so one part is held. Nothing becomes visible before `seal` has
    checked the name: a small tarball is then PUT whole; a large one's multipart upload is
    completed.
    """

    def __init__(
        self,
        store: S3Storage,
        key: str,
        max_bytes: int,
        on_length: Callable[[int], None] | None,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._on_length = on_length
        self.offset = 0
        self.etag = ""
        self.key = key
        self._hasher = NameHasher()
        self._part = io.BytesIO()
        self._held_size = 0
        self._part_size = part_size(max_bytes)  # until the length is known
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def open(self) -> Validators:
        return Validators()  # nothing survives a run: md5's state cannot be saved

    def expect(self, remaining: int, validators: Validators) -> None:
        if self.offset + remaining > self.max_bytes:
            raise too_large(self.offset + remaining, self.max_bytes)
        if remaining > 0:
            self._part_size = part_size(self.offset + remaining)
        if self._on_length is not None and remaining > 0:
            self._on_length(remaining)
            self._on_length = None

    async def write_batch(self, chunks: list[bytes]) -> None:
        size = sum(map(len, chunks))
        if self.offset + size > self.max_bytes:
            raise too_large(self.offset + size, self.max_bytes)
        if size >= 1 << 16:  # md5 releases the GIL: hash big batches beside the loop
            await asyncio.to_thread(self._hash, chunks)
        else:
            self._hash(chunks)
        self.offset += size
        for chunk in chunks:
            self._part.write(chunk)
        self._held_size += size
        if self._held_size >= self._part_size:
            await self.drain()
            await self._send_part()

    async def write_last(self, chunks: list[bytes]) -> None:
        await self.write_batch(chunks)

    def _hash(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._hasher.update(chunk)

    def _take_part(self) -> io.BytesIO:
        """The part's bytes as a request body, and an empty buffer for the next part.

        A BytesIO that was written into owns its buffer: botocore reads it to sign it and
        aiohttp sends it 64 KiB at a time. Bytes would be wrapped in a BytesIO by botocore,
        and aiohttp's `getbuffer()` on that copies the whole part once more."""
        body, self._part, self._held_size = self._part, io.BytesIO(), 0
        body.seek(0)
        return body

    async def _send_part(self) -> None:
        await self.store.submit(self._upload_part(self._take_part()))

    async def _upload_part(self, body: io.BytesIO) -> None:
        """On the client's loop."""
        client, bucket = self.store.client, self.store.root.bucket
        if self._upload_id is None:
            answer = await client.create_multipart_upload(Bucket=bucket, Key=self.key)
            self._upload_id = answer["UploadId"]
        number = len(self._parts) + 1
        answer = await client.upload_part(
            Bucket=bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    async def drain(self) -> None:
        """Nothing to wait for: a full part is uploaded within the write that filled it."""
        return None

    async def restart(self) -> None:
        """The upstream sends the tarball from its first byte again."""
        self._abort()
        self._hasher = NameHasher()
        self.offset = 0
        self._part, self._held_size = io.BytesIO(), 0

    def current_name(self) -> str:
        return self._hasher.name()

    async def seal(self, expected_name: str, then: Callable[[], Any]) -> tuple[FileDigest, Any]:
        key = then()
        try:
            await self.drain()
            digest = FileDigest(self._hasher.name(), self._hasher.size, self._hasher.md5_hex())
            if digest.name != expected_name:
                raise VerifyError(
                    f"downloaded bytes have name {digest.name}, the catalog says "
                    f"{expected_name} ({digest.size} bytes)",
                    hint="the upstream serves other bytes than its catalog names; "
                    "report it to the publisher",
                )
            self.etag = await self.store.submit(self._complete(digest))
        except BaseException:
            self._abort()
            raise
        return digest, key

    async def _complete(self, digest: FileDigest) -> str:
        """On the client's loop: PUT a small tarball whole, or finish the multipart upload."""
        client, bucket = self.store.client, self.store.root.bucket
        held = self._held_size
        body = self._take_part()
        if self._upload_id is None:
            answer = await client.put_object(
                Bucket=bucket,
                Key=self.key,
                Body=body,
                ContentMD5=base64.b64encode(bytes.fromhex(digest.md5)).decode(),
            )
            return str(answer["ETag"])
        if held:
            await self._upload_part(body)
        await client.complete_multipart_upload(
            Bucket=bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None
        return await self.store._etag(self.key)

    def _abort(self) -> None:
        """Throw away what was uploaded; it was never visible. Best effort: a failed abort is
        cleaned up when the next run starts (`check`). The upload's id and parts are read and
        cleared on the client's loop, the only thread that writes them."""

        async def abort() -> None:
            upload_id, self._upload_id = self._upload_id, None
            self._parts = []
            if upload_id is None:
                return
            client, bucket = self.store.client, self.store.root.bucket
            with contextlib.suppress(Exception):
                await client.abort_multipart_upload(Bucket=bucket, Key=self.key, UploadId=upload_id)

        asyncio.run_coroutine_threadsafe(abort(), self.store._loop)

    async def keep_for_resume(self) -> None:
        self.discard()  # nothing to resume from in a later run

    def discard(self) -> None:
        self._abort()
        self._part, self._held_size = io.BytesIO(), 0

    def close_when_idle(self) -> None:
        self.discard()

    def forget_meta(self) -> None:
        return None


def part_size(length: int) -> int:
    """The part size for a tarball of `length` bytes (or at most that): PART, or larger when
    MAX_PARTS parts of PART would not hold it."""
    return max(PART, -(-length // MAX_PARTS))


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
