"""The eustore catalog document: strict parse, images kept verbatim, serialise.

Pure: bytes in, plain data out. A malformed document raises CatalogError (that upstream fails); a
malformed image becomes a BadImage (that image fails) and the rest of the catalog goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import CatalogError
from .names import is_valid_name

CATALOG_VERSION = "eustore-catalog-2011-12-29"
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)  # not frozen: see plan.Step
class Image:
    """A well-formed image entry; `fields` is the upstream object exactly as parsed."""

    index: int
    fields: Mapping[str, Any]
    name: str
    url: str


@dataclass(frozen=True)
class BadImage:
    index: int
    reason: str
    fields: Any


@dataclass(frozen=True)
class Catalog:
    top: Mapping[str, Any]
    """Every top-level key in document order, `images` included (as parsed)."""
    images: tuple[Image, ...]
    bad: tuple[BadImage, ...]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r}")
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]!r} is out of range")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def decode_strict(
    data: bytes | bytearray, *, what: str = "catalog", max_bytes: int | None = None
) -> str:
    """The document's text: UTF-8 without a byte order mark, at most `max_bytes`."""
    if max_bytes is not None and len(data) > max_bytes:
        raise CatalogError(f"{what} is larger than {max_bytes} bytes")
    if data.startswith(UTF8_BOM):
        raise CatalogError(f"{what} starts with a UTF-8 byte order mark")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{what} is not UTF-8 (byte {exc.start})") from None


def loads_strict(data: bytes | bytearray | str, *, what: str = "catalog") -> Any:
    """Decode UTF-8 JSON (or parse text `decode_strict` gave), refusing what Python's json
    would quietly accept."""
    text = data if isinstance(data, str) else decode_strict(data, what=what)
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise CatalogError(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise CatalogError(f"{what} is not valid JSON: {exc}") from None


def parse_catalog(
    data: bytes | bytearray | str, *, max_bytes: int | None = None, strict_names: bool = True
) -> Catalog:
    """Parse a catalog document: its bytes (at most `max_bytes`), or the text `decode_strict`
    gave (the caller can then let the bytes go before the objects are built). With
    `strict_names=False` names may be missing (the publisher)."""
    doc = loads_strict(data if isinstance(data, str) else decode_strict(data, max_bytes=max_bytes))
    if not isinstance(doc, dict):
        raise CatalogError("catalog is not a JSON object")
    if not isinstance(doc.get("version"), str):
        raise CatalogError('catalog has no string "version"')
    raw_images = doc.get("images")
    if not isinstance(raw_images, list):
        raise CatalogError('catalog has no "images" list')
    images: list[Image] = []
    bad: list[BadImage] = []
    for index, raw in enumerate(raw_images):
        if type(raw) is dict:  # the common, well-formed entry, checked inline for speed
            name, url = raw.get("name"), raw.get("url")
            if (
                type(url) is str
                and url
                and type(name) is str
                and len(name) == 10
                and name.isascii()
                and name.isdigit()
                and name <= "4294967295"
            ):
                images.append(Image(index, raw, name, url))
                continue
        reason = image_problem(raw, strict_names=strict_names)
        if reason:
            bad.append(BadImage(index, reason, raw))
        else:
            name = raw.get("name")
            images.append(Image(index, raw, name if isinstance(name, str) else "", raw["url"]))
    return Catalog(top=doc, images=tuple(images), bad=tuple(bad))


def image_problem(raw: Any, *, strict_names: bool = True) -> str:
    """Why an image entry is malformed, or "" when it is fine."""
    if not isinstance(raw, dict):
        return "image entry is not a JSON object"
    url = raw.get("url")
    if not isinstance(url, str) or not url:
        return 'image has no non-empty string "url"'
    if strict_names and not is_valid_name(raw.get("name")):
        return f'image "name" {_show(raw.get("name"))} is not ten ASCII digits up to 4294967295'
    return ""


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


def dump_catalog(top: Mapping[str, Any], images: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(iter_catalog(top, images))


def iter_catalog(top: Mapping[str, Any], images: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """Serialise with the top-level keys in their order and one image per line, as a stream.

    One image per line keeps the document readable and diff-friendly; streaming it means a large
    catalog is written without a second copy in memory.
    """
    keys = list(top.keys()) if "images" in top else [*top.keys(), "images"]
    yield b"{\n"
    for position, key in enumerate(keys):
        comma = b",\n" if position < len(keys) - 1 else b"\n"
        if key == "images":
            yield b' "images": ['
            first = True
            for image in images:
                yield (b"\n  " if first else b",\n  ") + _encode_row(image)
                first = False
            yield b"]" if first else b"\n ]"
        else:
            yield f" {_encodable(key)}: {_encodable(top[key])}".encode()
        yield comma
    yield b"}\n"


def _encode_row(image: Mapping[str, Any]) -> bytes:
    """orjson for speed; the standard encoder for what orjson refuses (huge ints, surrogates)."""
    try:
        return orjson.dumps(image)
    except TypeError:
        return _encodable(image).encode("utf-8")


_READABLE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_ESCAPED = json.JSONEncoder(allow_nan=False).encode


def _encodable(value: Any) -> str:
    """Readable UTF-8 where possible; \\u escapes where the text holds lone surrogates."""
    text: str = _READABLE(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return str(_ESCAPED(value))
    return text
