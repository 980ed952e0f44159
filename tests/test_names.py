"""Eustore names: crc32 of the md5 hex digest, ten zero-padded ASCII digits."""

from __future__ import annotations

import hashlib
import itertools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eumirror.core.names import (
    MAX_NAME,
    NameHasher,
    is_valid_name,
    name_from_md5_hex,
    name_of_chunks,
)


def reference_name(data: bytes) -> str:
    """The contract's formula, written out independently of the package."""
    digest = hashlib.md5(data).hexdigest().encode("ascii")
    return str(zlib.crc32(digest) & 0xFFFFFFFF).rjust(10, "0")


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", "1136548044"), (b"a", "3867013014"), (b"eustore\n", "2106965694")],
)
def test_contract_vectors(data: bytes, expected: str) -> None:
    """The contract's three vectors give exactly the published names."""
    assert name_of_chunks([data]) == expected
    assert reference_name(data) == expected


def test_zero_padded_name() -> None:
    """A name below one billion is left-padded with zeros to ten digits."""
    assert reference_name(b"0") == "0502633748"
    assert name_of_chunks([b"0"]) == "0502633748"


def test_two_leading_zeros() -> None:
    """A name below ten million keeps both leading zeros."""
    assert reference_name(b"28") == "0027313160"
    assert name_of_chunks([b"28"]) == "0027313160"


def test_name_from_md5_hex_matches_reference() -> None:
    """name_from_md5_hex applies crc32 to the hex digest's ASCII bytes."""
    md5_hex = hashlib.md5(b"eustore\n").hexdigest()
    assert name_from_md5_hex(md5_hex) == "2106965694"


def test_no_chunks_is_the_empty_file() -> None:
    """Hashing no chunks at all names the empty file."""
    assert name_of_chunks([]) == "1136548044"
    assert NameHasher().name() == "1136548044"


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_streaming_in_chunks_equals_one_shot(data: bytes, cuts: list[int]) -> None:
    """Feeding the bytes in arbitrary chunks gives the same name, md5 and size as in one go."""
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    hasher = NameHasher()
    for chunk in chunks:
        hasher.update(memoryview(chunk))
    assert hasher.name() == reference_name(data) == name_of_chunks([data])
    assert hasher.md5_hex() == hashlib.md5(data).hexdigest()
    assert hasher.size == len(data)


def test_copy_is_independent() -> None:
    """A copied hasher continues on its own without disturbing the original."""
    hasher = NameHasher()
    hasher.update(b"eust")
    twin = hasher.copy()
    twin.update(b"ore\n")
    assert twin.name() == "2106965694"
    assert twin.size == 8
    assert hasher.name() == reference_name(b"eust")
    assert hasher.size == 4


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=256))
def test_every_computed_name_is_valid(data: bytes) -> None:
    """Every name the hasher produces passes is_valid_name."""
    assert is_valid_name(name_of_chunks([data]))


@pytest.mark.parametrize("value", ["0000000000", "1136548044", "4294967295", "0502633748"])
def test_valid_names(value: str) -> None:
    """Ten ASCII digits up to 4294967295 are valid names."""
    assert is_valid_name(value)


@pytest.mark.parametrize(
    "value",
    [
        "１１３６５４８０４４",  # fullwidth digits: str.isdigit says yes
        "١١٣٦٥٤٨٠٤٤",  # Arabic-Indic digits
        "11365480441",  # eleven digits
        "113654804",  # nine digits
        "4294967296",  # 2**32
        "9999999999",
        "",
        " 113654804",
        "113654804 ",
        "+113654804",
        "-113654804",
        "11365480e4",
        "113654804\n",
        "１136548044",  # one non-ASCII digit
        "²136548044",  # superscript two: isdigit but not ASCII
    ],
)
def test_invalid_name_strings(value: str) -> None:
    """Anything but exactly ten ASCII digits up to 2**32-1 is refused."""
    assert not is_valid_name(value)


@pytest.mark.parametrize("value", [1136548044, 0, None, 1136548044.0, b"1136548044", ["1"]])
def test_non_strings_are_not_names(value: object) -> None:
    """Integers, bytes and other non-strings are never valid names."""
    assert not is_valid_name(value)


def test_max_name_is_two_to_the_32_minus_one() -> None:
    """The largest name is 4294967295."""
    assert MAX_NAME == 2**32 - 1
