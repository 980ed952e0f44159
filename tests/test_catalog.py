"""The catalog document: strict parse, per-image failures, faithful serialisation."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eumirror.core.catalog import (
    CATALOG_VERSION,
    BadImage,
    Catalog,
    dump_catalog,
    image_problem,
    loads_strict,
    parse_catalog,
)
from eumirror.core.errors import CatalogError

NAME_A = "1136548044"
NAME_B = "3867013014"


def doc_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode("utf-8")


def catalog_of(*images: Any, **top: Any) -> bytes:
    return doc_bytes({"version": CATALOG_VERSION, **top, "images": list(images)})


def typed(value: Any) -> Any:
    """A comparable form that tells 1, 1.0 and True apart and keeps object key order."""
    if isinstance(value, dict):
        return ("object", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def round_trip(cat: Catalog) -> bytes:
    return dump_catalog(cat.top, [img.fields for img in cat.images])


# -- strict parse ------------------------------------------------------------------------------


def test_minimal_catalog() -> None:
    """A version and an empty images list is a valid, empty catalog."""
    cat = parse_catalog(catalog_of())
    assert cat.images == () and cat.bad == ()
    assert cat.top["version"] == CATALOG_VERSION


def test_well_formed_images_are_kept_verbatim() -> None:
    """Each well-formed image keeps its index, name, url and its fields as parsed."""
    entry = {"name": NAME_A, "url": "a/x.tgz", "os": "centos", "extra": [1, {"k": None}]}
    cat = parse_catalog(catalog_of(entry))
    (img,) = cat.images
    assert (img.index, img.name, img.url) == (0, NAME_A, "a/x.tgz")
    assert img.fields == entry


def test_not_utf8_is_refused() -> None:
    """A document that is not UTF-8 is a CatalogError."""
    data = b'{"version": "v\xff", "images": []}'
    with pytest.raises(CatalogError, match="not UTF-8"):
        parse_catalog(data)


def test_latin1_text_is_refused() -> None:
    """A Latin-1 encoded accent is not UTF-8 and is refused."""
    data = '{"version": "café", "images": []}'.encode("latin-1")
    with pytest.raises(CatalogError):
        parse_catalog(data)


def test_byte_order_mark_is_refused() -> None:
    """A UTF-8 byte order mark before the document is refused."""
    with pytest.raises(CatalogError, match="byte order mark"):
        parse_catalog(b"\xef\xbb\xbf" + catalog_of())


def test_utf16_is_refused() -> None:
    """A UTF-16 document is refused."""
    with pytest.raises(CatalogError):
        parse_catalog(json.dumps({"version": "v", "images": []}).encode("utf-16"))


@pytest.mark.parametrize(
    "text",
    [
        '{"version": "v", "version": "w", "images": []}',
        '{"version": "v", "images": [{"name": "1136548044", "url": "a", "url": "b"}]}',
        '{"version": "v", "images": [], "x": {"k": 1, "k": 2}}',
    ],
)
def test_duplicate_keys_are_refused(text: str) -> None:
    """A duplicate key anywhere in the document is refused, not silently last-wins."""
    with pytest.raises(CatalogError, match="duplicate key"):
        parse_catalog(text.encode())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_refused(constant: str) -> None:
    """NaN and Infinity, which Python's json accepts, are refused."""
    text = f'{{"version": "v", "images": [], "x": {constant}}}'
    with pytest.raises(CatalogError):
        parse_catalog(text.encode())


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400 + ".0"])
def test_overflowing_floats_are_refused(number: str) -> None:
    """A float literal that overflows to infinity is refused."""
    text = f'{{"version": "v", "images": [], "x": {number}}}'
    with pytest.raises(CatalogError, match="out of range"):
        parse_catalog(text.encode())


def test_huge_integer_is_refused() -> None:
    """A 5000-digit integer is a CatalogError, not a ValueError from int()."""
    text = '{"version": "v", "images": [], "x": ' + "9" * 5000 + "}"
    with pytest.raises(CatalogError):
        parse_catalog(text.encode())


def test_large_but_reasonable_integer_round_trips() -> None:
    """A 100-digit integer parses and serialises exactly."""
    big = int("9" * 100)
    cat = parse_catalog(catalog_of({"name": NAME_A, "url": "x", "n": big}))
    assert json.loads(round_trip(cat))["images"][0]["n"] == big


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_refused(opener: str) -> None:
    """A document nested 100000 levels deep is a CatalogError, not a RecursionError."""
    with pytest.raises(CatalogError):
        parse_catalog((opener * 100_000).encode())


@pytest.mark.parametrize(
    "text",
    ["[]", '"catalog"', "42", "null", "true", '[{"version": "v", "images": []}]'],
)
def test_top_level_must_be_an_object(text: str) -> None:
    """A document whose top level is not an object is refused."""
    with pytest.raises(CatalogError, match="not a JSON object"):
        parse_catalog(text.encode())


@pytest.mark.parametrize(
    "doc",
    [
        {"images": []},
        {"version": 1, "images": []},
        {"version": None, "images": []},
        {"version": ["v"], "images": []},
    ],
)
def test_version_must_be_a_string(doc: dict[str, Any]) -> None:
    """A missing or non-string version is refused."""
    with pytest.raises(CatalogError, match="version"):
        parse_catalog(doc_bytes(doc))


@pytest.mark.parametrize("images", [None, {}, "x", 3, {"0": {"name": NAME_A, "url": "x"}}])
def test_images_must_be_a_list(images: Any) -> None:
    """A missing or non-list images value is refused."""
    doc: dict[str, Any] = {"version": "v"}
    if images is not None:
        doc["images"] = images
    with pytest.raises(CatalogError, match="images"):
        parse_catalog(doc_bytes(doc))


@pytest.mark.parametrize("text", ["", " ", "{", '{"version": "v", "images": []} x', "{'a': 1}"])
def test_invalid_json_is_refused(text: str) -> None:
    """Truncated, trailing or otherwise invalid JSON is a CatalogError."""
    with pytest.raises(CatalogError):
        parse_catalog(text.encode())


def test_size_cap() -> None:
    """A document larger than max_bytes is refused; exactly max_bytes is fine."""
    data = catalog_of({"name": NAME_A, "url": "x.tgz"})
    assert parse_catalog(data, max_bytes=len(data)).images
    with pytest.raises(CatalogError, match="larger than"):
        parse_catalog(data, max_bytes=len(data) - 1)


def test_loads_strict_names_what_it_parsed() -> None:
    """loads_strict's message starts with the caller's description of the document."""
    with pytest.raises(CatalogError, match=r"^catalog /x/y is not valid JSON"):
        loads_strict(b"{", what="catalog /x/y")


# -- per-image failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("not an object", "not a JSON object"),
        ([NAME_A, "x.tgz"], "not a JSON object"),
        (None, "not a JSON object"),
        ({"name": NAME_A}, "url"),
        ({"name": NAME_A, "url": ""}, "url"),
        ({"name": NAME_A, "url": 7}, "url"),
        ({"name": NAME_A, "url": None}, "url"),
        ({"url": "x.tgz"}, "name"),
        ({"name": 1136548044, "url": "x.tgz"}, "name"),
        ({"name": "113654804", "url": "x.tgz"}, "name"),
        ({"name": "4294967296", "url": "x.tgz"}, "name"),
        ({"name": "１１３６５４８０４４", "url": "x.tgz"}, "name"),
        ({"name": "", "url": "x.tgz"}, "name"),
    ],
)
def test_malformed_image_fails_alone(entry: Any, fragment: str) -> None:
    """A malformed image becomes a BadImage with a reason; its neighbours are kept."""
    good_before = {"name": NAME_A, "url": "a.tgz"}
    good_after = {"name": NAME_B, "url": "b.tgz"}
    cat = parse_catalog(catalog_of(good_before, entry, good_after))
    assert [(i.index, i.url) for i in cat.images] == [(0, "a.tgz"), (2, "b.tgz")]
    (bad,) = cat.bad
    assert isinstance(bad, BadImage)
    assert bad.index == 1
    assert bad.fields == entry
    assert fragment in bad.reason


def test_bad_image_reason_is_short_for_huge_names() -> None:
    """The reason quoting a bad name is truncated so one line stays readable."""
    reason = image_problem({"name": "9" * 1000, "url": "x"})
    assert reason and len(reason) < 200


def test_publisher_mode_allows_missing_names() -> None:
    """With strict_names=False an image without a name (or a placeholder) is accepted."""
    cat = parse_catalog(
        catalog_of({"url": "a.tgz"}, {"name": "TBD", "url": "b.tgz"}), strict_names=False
    )
    assert [i.name for i in cat.images] == ["", "TBD"]
    assert cat.bad == ()


def test_image_problem_ok() -> None:
    """A well-formed image has no problem."""
    assert image_problem({"name": NAME_A, "url": "x.tgz"}) == ""


# -- serialisation -----------------------------------------------------------------------------


RICH_DOC: dict[str, Any] = {
    "version": CATALOG_VERSION,
    "generator": {"tool": "publish.py", "at": 1.5},
    "images": [
        {
            "name": "4150406313",
            "description": "CentOS 5 1.3GB root, Hypervisor-Specific Kernels",
            "version": "2011.07.02",
            "architecture": "i386",
            "single-kernel": "False",
            "hypervisors-supported": ["xen", "kvm"],
            "os": "centos",
            "url": "starter-emis/euca-centos-2011.07.02-i386.tgz",
            "date": "20110716161844",
            "recipe": "centos-based",
            "stamp": "6e69-7565",
            "contact": "images@lists.eucalyptus.com",
        },
        {
            "url": "http://other.example/Ωmega/ünïcode.tgz",
            "name": "0502633748",
            "size": 123456789012,
            "ratio": 0.1,
            "negzero": -0.0,
            "exp": 1e300,
            "flag": True,
            "nothing": None,
            "one_int": 1,
            "one_float": 1.0,
            "nested": {"z": [1, [2, {"y": "✓"}]], "a": {}},
            "empty_list": [],
            "quote": 'he said "hi"\\ \n\t\u2028\u0000',
            "emoji": "🐧",
        },
    ],
    "trailer": [1, "two", None],
}


def test_round_trip_is_exact() -> None:
    """Dumping the parsed images and parsing again gives the document back, types and order kept."""
    data = doc_bytes(RICH_DOC)
    cat = parse_catalog(data)
    out = round_trip(cat)
    assert typed(json.loads(out)) == typed(RICH_DOC)
    again = parse_catalog(out)
    assert typed(dict(again.top)) == typed(RICH_DOC)


def test_output_is_utf8_json_with_raw_non_ascii() -> None:
    """The output is valid UTF-8 JSON and writes non-ASCII text as UTF-8, not escapes."""
    out = round_trip(parse_catalog(doc_bytes(RICH_DOC)))
    text = out.decode("utf-8")
    assert "Ωmega" in text and "🐧" in text
    assert out.endswith(b"\n")
    loads_strict(out)


def test_dump_writes_given_images_not_the_tops() -> None:
    """The images argument replaces the images of `top`, in the place `images` held."""
    cat = parse_catalog(doc_bytes(RICH_DOC))
    out = json.loads(dump_catalog(cat.top, [{"name": NAME_A, "url": "images/x"}]))
    assert list(out) == ["version", "generator", "images", "trailer"]
    assert out["images"] == [{"name": NAME_A, "url": "images/x"}]


def test_dump_empty_images() -> None:
    """An empty image list serialises as a valid empty array."""
    out = json.loads(dump_catalog({"version": "v", "images": []}, []))
    assert out == {"version": "v", "images": []}


def test_dump_adds_images_when_top_lacks_it() -> None:
    """A top without an images key still gets one, at the end."""
    out = json.loads(dump_catalog({"version": "v", "x": 1}, [{"name": NAME_A, "url": "u"}]))
    assert list(out) == ["version", "x", "images"]
    assert out["images"] == [{"name": NAME_A, "url": "u"}]


def test_dump_only_images_key() -> None:
    """A top that holds only images serialises without a dangling comma."""
    out = dump_catalog({"images": []}, [{"name": NAME_A, "url": "u"}])
    assert json.loads(out) == {"images": [{"name": NAME_A, "url": "u"}]}


def test_sample_catalog_round_trips() -> None:
    """The shipped sample catalog survives parse and dump unchanged."""
    from importlib.resources import files

    data = files("eumirror").joinpath("sample/catalog").read_bytes()
    cat = parse_catalog(data)
    assert cat.bad == () and len(cat.images) == 3
    assert typed(json.loads(round_trip(cat))) == typed(json.loads(data))


def test_lone_surrogate_escape_never_crashes_dump() -> None:
    """A string holding a lone-surrogate escape is either refused by parse or dumped as JSON."""
    data = b'{"version": "v", "images": [{"name": "1136548044", "url": "x", "d": "\\ud800"}]}'
    try:
        cat = parse_catalog(data)
    except CatalogError:
        return
    out = round_trip(cat)
    assert json.loads(out)["images"][0]["d"] == "\ud800"


# -- properties --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(n).rjust(10, "0"))
urls = st.text(min_size=1, max_size=40)


@st.composite
def image_dicts(draw: st.DrawFn) -> dict[str, Any]:
    extra = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
    extra.pop("name", None)
    extra.pop("url", None)
    items = [*extra.items(), ("name", draw(names)), ("url", draw(urls))]
    order = draw(st.permutations(range(len(items))))
    return {items[i][0]: items[i][1] for i in order}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    images=st.lists(image_dicts(), max_size=4),
    extra_top=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ("version", "images")),
        json_values,
        max_size=3,
    ),
)
def test_property_round_trip(images: list[dict[str, Any]], extra_top: dict[str, Any]) -> None:
    """For arbitrary JSON image dicts with a valid name and url, parse(dump(x)) equals x exactly."""
    doc = {"version": CATALOG_VERSION, "images": images, **extra_top}
    cat = parse_catalog(doc_bytes(doc))
    assert cat.bad == ()
    out = round_trip(cat)
    out.decode("utf-8")
    again = parse_catalog(out)
    assert typed(dict(again.top)) == typed(doc)
    assert [typed(dict(i.fields)) for i in again.images] == [typed(i) for i in images]


json_tokens = st.sampled_from(
    [b'{', b'}', b'[', b']', b',', b':', b'"version"', b'"images"', b'"name"', b'"url"',
     b'"1136548044"', b'"x.tgz"', b"1", b"-0", b"1e400", b"NaN", b"Infinity", b"null", b"true",
     b'"\\u0000"', b" ", b'"', b"\\", b"\xff", b"\xef\xbb\xbf", b"9" * 5000]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_parse_raises_only_catalog_error_on_bytes(data: bytes) -> None:
    """On arbitrary bytes, parse_catalog returns a Catalog or raises CatalogError, nothing else."""
    try:
        result = parse_catalog(data, max_bytes=10_000)
    except CatalogError:
        return
    assert isinstance(result, Catalog)


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(json_tokens, max_size=40))
def test_parse_raises_only_catalog_error_on_json_like_text(tokens: list[bytes]) -> None:
    """On JSON-like token soup, parse_catalog returns a Catalog or raises CatalogError only."""
    data = b"".join(tokens)
    try:
        result = parse_catalog(data)
    except CatalogError:
        return
    assert isinstance(result, Catalog)


@settings(max_examples=100, deadline=None)
@given(body=json_values)
def test_parse_raises_only_catalog_error_on_arbitrary_json(body: Any) -> None:
    """Any JSON value as the document, or as its images, gives a Catalog or a CatalogError."""
    for doc in (body, {"version": "v", "images": body}, {"version": "v", "images": [body]}):
        with contextlib.suppress(CatalogError):
            parse_catalog(doc_bytes(doc))
