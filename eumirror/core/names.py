"""Eustore image names: crc32 of the md5 hex digest, ten zero-padded digits.

Pure: the hasher is fed bytes by whoever reads them, so a tarball is hashed once, while it streams.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

MAX_NAME = 0xFFFFFFFF
CHUNK = 1 << 20


def name_from_md5_hex(md5_hex: str) -> str:
    return str(zlib.crc32(md5_hex.encode("ascii")) & MAX_NAME).rjust(10, "0")


class NameHasher:
    """Streaming name computation with constant memory; also keeps size and md5 for the state."""

    __slots__ = ("_md5", "size")

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._md5.update(chunk)
        self.size += len(chunk)

    def md5_hex(self) -> str:
        return self._md5.hexdigest()

    def name(self) -> str:
        return name_from_md5_hex(self._md5.hexdigest())

    def copy(self) -> NameHasher:
        twin = NameHasher()
        twin._md5 = self._md5.copy()
        twin.size = self.size
        return twin


def name_of_chunks(chunks: Iterable[bytes]) -> str:
    hasher = NameHasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.name()


def is_valid_name(value: object) -> bool:
    """Exactly ten ASCII digits, not above 2**32-1 (str.isdigit would accept fullwidth digits)."""
    return (
        isinstance(value, str)
        and len(value) == 10
        and value.isascii()
        and value.isdigit()
        and int(value) <= MAX_NAME
    )
