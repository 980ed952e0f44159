"""The files state's chunked layout: one valid JSON document, read back a line at a time."""

from __future__ import annotations

import json

import orjson
import pytest

from eumirror.storage.statefile import RECORDS_PER_LINE, iter_chunked, loads_chunked


def dumped(doc: dict[str, object]) -> bytes:
    return b"".join(iter_chunked(doc))


def state(n: int) -> dict[str, object]:
    files = {f"images/{i:010d}/f{i}.tgz": [f"{i:010d}", i, 10**18 + i, "ab" * 16] for i in range(n)}
    published = {f"http://u/é{i}": [f"images/{i:010d}/f{i}.tgz"] * 2 for i in range(n)}
    return {"index": "t0k", "files": files, "published": published, "removed": {}, "format": 1}


@pytest.mark.parametrize("n", [0, 1, RECORDS_PER_LINE, RECORDS_PER_LINE + 1, 2500])
def test_round_trip_is_one_json_document(n: int) -> None:
    doc = state(n)
    data = dumped(doc)
    assert loads_chunked(data) == doc
    assert orjson.loads(data) == doc  # any JSON reader (jq too) reads the same document
    assert json.loads(data) == doc
    assert data.startswith(b'{"index":"t0k"')  # the stat index ties itself to this prefix


def test_records_are_spread_over_lines() -> None:
    data = dumped(state(2500))
    lines = data.split(b"\n")
    # head, then per map: header, its lines, "}", then the closing "}" and the final newline
    assert len(lines) == 1 + (1 + 3 + 1) * 2 + (1 + 1 + 1) + 2
    assert max(line.count(b'"images/') for line in lines) <= 2 * RECORDS_PER_LINE


@pytest.mark.parametrize(
    "data",
    [
        orjson.dumps(state(3)),  # a state written before the chunked layout
        json.dumps(state(3), indent=2).encode() + b"\n",  # pretty-printed by hand
        b'{"index":"x"\n,"files":{\n"a":1\n}\n}\n'.replace(b'"a":1', b'"a":1,"b":2'),
    ],
)
def test_other_layouts_are_read_whole(data: bytes) -> None:
    assert loads_chunked(data) == orjson.loads(data)


def test_a_layout_lookalike_that_is_not_json_is_refused() -> None:
    good = dumped(state(3))
    with pytest.raises(ValueError):
        loads_chunked(good.replace(b'"images/0000000001', b"images/0000000001", 1))
    with pytest.raises(ValueError):
        loads_chunked(good[:-3])  # cut off


def test_a_relative_url_and_its_dest_are_one_string_once_loaded() -> None:
    """Read back, a published pair whose url is its dest holds one string for both (a 100k
    mirror's state is 8 MB smaller in memory); a pair that differs keeps both."""
    from eumirror.storage.fs import Files

    doc = loads_chunked(
        dumped(state(3) | {"published": {"u1": ["a", "a"], "u2": ["http://x/a", "a"]}})
    )
    files = Files.from_doc(doc)
    assert files.trusted
    same, other = files.published["u1"], files.published["u2"]
    assert same == ["a", "a"] and same[0] is same[1]
    assert other == ["http://x/a", "a"]
    assert not Files.from_doc(doc | {"published": {"u": ["a", 1]}}).trusted
