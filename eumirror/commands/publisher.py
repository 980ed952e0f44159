"""The publisher's side: names of files, and refreshing a catalog from a folder of tarballs."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..core.catalog import loads_strict
from ..core.errors import CatalogError, EumirrorError, ExitCode, StorageError
from ..log import log
from ..storage.fs import FileDigest, fsync_dir, hash_file, storage_error


def print_names(paths: list[Path]) -> int:
    """`NAME  FILE` per file, like md5sum; an unreadable file is reported and makes exit 1."""
    code = ExitCode.OK
    for path in paths:
        try:
            digest = hash_file(path)
        except OSError as exc:
            print(f"eumirror: {path}: {exc.strerror}", file=sys.stderr)
            code = ExitCode.FAILED
            continue
        print(f"{digest.name}  {path}", flush=True)
    return int(code)


def tarball_file_name(url: str) -> str:
    """The file a catalog url names in the publisher's folder; refuses anything but one segment."""
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    name = unquote(segment)
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise EumirrorError(f"url {url!r} does not end in a usable file name")
    return name


def relative_path(url: str) -> Path | None:
    """A relative url's path as a relative file path (percent-decoded), or None if unsafe."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or parts.path.startswith("/"):
        return None
    segments = [unquote(s) for s in parts.path.split("/")]
    if any(s in ("", ".", "..") or "\\" in s or "\x00" in s for s in segments):
        return None
    return Path(*segments)


def candidates(url: str, folder: Path) -> list[Path]:
    """Where a catalog url's tarball may be in the publisher's folder: by its file name, then
    (for a relative url such as the sample's `starter-emis/x.tgz`) by its path under the folder."""
    found = [folder / tarball_file_name(url)]
    relative = relative_path(url)
    if relative is not None and folder / relative not in found:
        found.append(folder / relative)
    return found


def refresh_document(doc: Any, folder: Path) -> tuple[Any, list[str]]:
    """Recompute each image's name from its tarball; returns the document and what is missing."""
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise CatalogError('catalog is not a JSON object with an "images" list')
    problems: list[str] = []
    for index, image in enumerate(doc["images"]):
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            problems.append(f"image #{index} has no url")
            continue
        try:
            paths = candidates(url, folder)
        except EumirrorError as exc:
            problems.append(f"image #{index}: {exc.message}")
            continue
        digest = first_readable(paths)
        if digest is None:
            tried = " or ".join(str(p) for p in paths)
            problems.append(
                f"image #{index} ({url}): no tarball at {tried}; its name is kept: "
                "put the tarball there or pass --dir"
            )
            continue
        if image.get("name") != digest.name:
            log.info("name_updated", image=index, old=image.get("name"), new=digest.name)
        image["name"] = digest.name
    return doc, problems


def first_readable(paths: list[Path]) -> FileDigest | None:
    for path in paths:
        try:
            return hash_file(path)
        except OSError:
            continue
    return None


def refresh_catalog(catalog: Path, folder: Path | None, *, in_place: bool) -> int:
    try:
        data = catalog.read_bytes()
    except OSError as exc:
        raise storage_error(exc, catalog, "reading") from None
    doc = loads_strict(data, what=f"catalog {catalog}")
    doc, problems = refresh_document(doc, folder or catalog.parent)
    body = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if in_place:
        write_beside(catalog, body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    for line in problems:
        print(f"eumirror: {line}", file=sys.stderr)
    return int(ExitCode.FAILED if problems else ExitCode.OK)


def write_beside(path: Path, body: bytes) -> None:
    """Replace `path` atomically: a temp file in the same folder, fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    try:
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        error: StorageError = storage_error(exc, path, "writing")
        raise error from None
