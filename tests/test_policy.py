"""Url rules: resolution, schemes and hosts, safe file names, encoding, redaction, addresses."""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from eumirror.core.errors import ImageError
from eumirror.core.policy import (
    MAX_FILE_NAME_BYTES,
    Source,
    dest_to_url,
    image_dest,
    is_public_address,
    local_image_path,
    redact,
    resolve_image_url,
    safe_file_name,
)

HTTP = Source("http://up.example/eustore/catalog")
HTTPS = Source("https://up.example/eustore/catalog")
FILE = Source("file:///data/cat/catalog")


# -- Source ------------------------------------------------------------------------------------


def test_source_properties() -> None:
    """A Source knows whether it is a file, its host (lower-cased) and a file catalog's folder."""
    assert FILE.is_file and not HTTP.is_file
    assert Source("http://UP.Example:8080/c").host == "up.example"
    assert FILE.folder() == "/data/cat"
    assert Source("file:///data/my%20cat/catalog").folder() == "/data/my cat"


# -- http(s) catalogs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("x.tgz", "http://up.example/eustore/x.tgz"),
        ("starter-emis/x.tgz", "http://up.example/eustore/starter-emis/x.tgz"),
        ("a/b/c/x.tgz", "http://up.example/eustore/a/b/c/x.tgz"),
        ("/x.tgz", "http://up.example/x.tgz"),
        ("/other/path/x.tgz", "http://up.example/other/path/x.tgz"),
        ("../x.tgz", "http://up.example/x.tgz"),
        ("../../../../x.tgz", "http://up.example/x.tgz"),
        ("./a/./b/../x.tgz", "http://up.example/eustore/a/x.tgz"),
        ("http://up.example/y/x.tgz", "http://up.example/y/x.tgz"),
        ("https://cdn.example/x.tgz", "https://cdn.example/x.tgz"),
        ("//cdn.example/x.tgz", "http://cdn.example/x.tgz"),
        ("%2e%2e/x.tgz", "http://up.example/eustore/%2e%2e/x.tgz"),
        ("a%2fb.tgz", "http://up.example/eustore/a%2fb.tgz"),
        ("x%20y.tgz", "http://up.example/eustore/x%20y.tgz"),
        ("x.tgz?sig=1", "http://up.example/eustore/x.tgz?sig=1"),
    ],
)
def test_http_resolution(url: str, expected: str) -> None:
    """Image urls in an http catalog resolve against the catalog's url as RFC 3986 says."""
    assert resolve_image_url(HTTP, url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "file:x.tgz",
        "data:application/octet-stream,abc",
        "ftp://up.example/x.tgz",
        "gopher://up.example/x",
        "javascript:alert(1)",
    ],
)
def test_http_catalog_refuses_other_schemes(url: str) -> None:
    """An http(s) catalog's images are fetched over http(s) only."""
    with pytest.raises(ImageError, match="not http"):
        resolve_image_url(HTTP, url)


@pytest.mark.parametrize(
    "url", ["a\\b.tgz", "..\\..\\x.tgz", "x y.tgz", "x\ty.tgz", "x\n.tgz", "x\x00.tgz", "x\x7f"]
)
def test_backslash_space_and_controls_are_refused(url: str) -> None:
    """A literal backslash, space or control character in an image url is refused."""
    with pytest.raises(ImageError):
        resolve_image_url(HTTP, url)
    with pytest.raises(ImageError):
        resolve_image_url(FILE, url)


def test_https_downgrade_to_other_host_is_refused() -> None:
    """An https catalog may not send its images over plain http to another host."""
    with pytest.raises(ImageError, match="downgrades"):
        resolve_image_url(HTTPS, "http://evil.example/x.tgz")


def test_https_to_http_same_host_is_allowed() -> None:
    """An https catalog may point at plain http on its own host (case-insensitively)."""
    assert resolve_image_url(HTTPS, "http://UP.example/x.tgz") == "http://UP.example/x.tgz"


def test_https_scheme_relative_stays_https() -> None:
    """A scheme-relative url in an https catalog stays on https."""
    assert resolve_image_url(HTTPS, "//cdn.example/x.tgz") == "https://cdn.example/x.tgz"


def test_http_without_host_is_refused() -> None:
    """An http url of the other scheme without a host is refused, not joined to the catalog's."""
    with pytest.raises(ImageError, match="no host"):
        resolve_image_url(HTTPS, "http:x.tgz")


def test_unparseable_url_is_an_image_error() -> None:
    """An image url that urllib cannot parse is an ImageError, not a stray ValueError."""
    with pytest.raises(ImageError):
        resolve_image_url(HTTP, "http://[bad/x.tgz")


# -- file catalogs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("x.tgz", "file:///data/cat/x.tgz"),
        ("sub/x.tgz", "file:///data/cat/sub/x.tgz"),
        ("sub/deeper/x.tgz", "file:///data/cat/sub/deeper/x.tgz"),
        ("./a/./b/../x.tgz", "file:///data/cat/a/x.tgz"),
        ("/data/cat/x.tgz", "file:///data/cat/x.tgz"),
        ("file:///data/cat/x.tgz", "file:///data/cat/x.tgz"),
        ("//localhost/data/cat/x.tgz", "file://localhost/data/cat/x.tgz"),
        ("%252e%252e/x.tgz", "file:///data/cat/%252e%252e/x.tgz"),
        ("x%20y.tgz", "file:///data/cat/x%20y.tgz"),
    ],
)
def test_file_resolution_inside_folder(url: str, expected: str) -> None:
    """A file catalog's images inside its folder (or subfolders) resolve to file urls."""
    assert resolve_image_url(FILE, url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "../x.tgz",
        "../../etc/passwd",
        "/x.tgz",
        "/etc/passwd",
        "/data/catalog2/x.tgz",
        "/data/cat",
        ".",
        "%2e%2e/x.tgz",
        "sub/%2e%2e/%2e%2e/x.tgz",
        "%2E%2E/x.tgz",
        "sub%2f..%2f..%2fx.tgz",
        "file:///etc/passwd",
        "file://otherhost/data/cat/x.tgz",
        "//otherhost/data/cat/x.tgz",
        "http://up.example/x.tgz",
        "https://up.example/x.tgz",
        "x%00.tgz",
        "x%5c..%5c..%5cetc",
    ],
)
def test_file_catalog_refuses_escapes(url: str) -> None:
    """A file catalog's image must be a file inside its folder, whatever the encoding trick."""
    with pytest.raises(ImageError):
        resolve_image_url(FILE, url)


def test_file_catalog_double_encoding_is_a_literal_name() -> None:
    """%252e%252e decodes once to a literal '%2e%2e' folder name, still inside the folder."""
    resolved = resolve_image_url(FILE, "%252e%252e/x.tgz")
    assert local_image_path(FILE, resolved) == "/data/cat/%2e%2e/x.tgz"


def test_local_image_path_decodes_once() -> None:
    """local_image_path gives the percent-decoded, normalised local path."""
    assert local_image_path(FILE, "file:///data/cat/sub/a%20b.tgz") == "/data/cat/sub/a b.tgz"


def test_encoded_slashes_stay_inside_the_folder() -> None:
    """An encoded absolute path (%2fetc%2fpasswd) is only a subpath of the catalog's folder."""
    resolved = resolve_image_url(FILE, "%2fetc%2fpasswd")
    assert local_image_path(FILE, resolved) == "/data/cat/etc/passwd"


def test_file_catalog_invalid_utf8_escape_is_an_image_error() -> None:
    """A file-catalog url with an invalid UTF-8 percent-escape is an ImageError."""
    with pytest.raises(ImageError):
        resolve_image_url(FILE, "%ff.tgz")


# -- safe file names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/a/euca-centos-2011.07.02-i386.tgz", "euca-centos-2011.07.02-i386.tgz"),
        ("http://h/extras/euca-ubuntu%2012.04-x86_64.tgz", "euca-ubuntu 12.04-x86_64.tgz"),
        ("http://h/%C3%BCber.tgz", "über.tgz"),
        ("http://h/x.tgz?name=../../evil", "x.tgz"),
        ("http://h/x.tgz#frag", "x.tgz"),
        ("http://h/%252e%252e", "%2e%2e"),
    ],
)
def test_safe_file_name_decodes_last_segment(url: str, expected: str) -> None:
    """The file name is the url's last path segment, percent-decoded once."""
    assert safe_file_name(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/", "image.tgz"),
        ("http://h", "image.tgz"),
        ("http://h/dir/", "image.tgz"),
        ("http://h/.", "image.tgz"),
        ("http://h/..", "image.tgz"),
        ("http://h/%2e", "image.tgz"),
        ("http://h/%2e%2e", "image.tgz"),
        ("http://h/.hidden.tgz", "_hidden.tgz"),
        ("http://h/...", "_.."),
        ("http://h/a%2fb.tgz", "a_b.tgz"),
        ("http://h/..%2f..%2fetc%2fpasswd", "_._.._etc_passwd"),
        ("http://h/a%5cb.tgz", "a_b.tgz"),
        ("http://h/a%00b.tgz", "a_b.tgz"),
        ("http://h/a%0ab%0d.tgz", "a_b_.tgz"),
        ("http://h/a%7fb.tgz", "a_b.tgz"),
        ("http://h/a%e2%80%8bb.tgz", "a_b.tgz"),  # zero-width space (Cf)
        ("http://h/a%e2%80%a8b.tgz", "a_b.tgz"),  # line separator
    ],
)
def test_safe_file_name_replaces_unsafe_forms(url: str, expected: str) -> None:
    """Empty, dot, leading-dot, slash, backslash and control-character names get safe forms."""
    assert safe_file_name(url) == expected


def test_safe_file_name_fallback_is_configurable() -> None:
    """An unusable segment is replaced by the given fallback."""
    assert safe_file_name("http://h/..", fallback="x.bin") == "x.bin"


def test_safe_file_name_invalid_utf8_is_replaced() -> None:
    """Invalid UTF-8 escapes decode to replacement characters, giving an encodable name."""
    name = safe_file_name("http://h/%ff%fe.tgz")
    assert name.endswith(".tgz")
    name.encode("utf-8")


def test_very_long_name_keeps_extension() -> None:
    """A very long name is cut to the byte limit and keeps a short extension."""
    name = safe_file_name("http://h/" + "x" * 1000 + ".tgz")
    assert len(name.encode()) <= MAX_FILE_NAME_BYTES
    assert name.endswith(".tgz") and name.startswith("xxxx")


def test_very_long_multibyte_name_is_cut_on_a_character_boundary() -> None:
    """Cutting a long name never splits a UTF-8 character."""
    name = safe_file_name("http://h/" + "é" * 400 + ".tar.gz")
    encoded = name.encode("utf-8")
    assert len(encoded) <= MAX_FILE_NAME_BYTES
    assert name.endswith(".gz")
    assert set(name[:-3]) <= {"é", "."}
    encoded.decode("utf-8")


def test_very_long_name_without_dot() -> None:
    """A very long name without an extension is cut to the byte limit."""
    name = safe_file_name("http://h/" + "y" * 1000)
    assert name == "y" * MAX_FILE_NAME_BYTES


def test_very_long_name_with_long_tail_keeps_its_prefix() -> None:
    """A long name with a dot early on keeps as much of its text as the limit allows."""
    name = safe_file_name("http://h/a." + "b" * 300)
    assert len(name.encode()) > MAX_FILE_NAME_BYTES // 2


def _assert_safe(name: str) -> None:
    assert name
    assert "/" not in name and "\x00" not in name and "\\" not in name
    assert not name.startswith(".")
    assert name not in (".", "..")
    assert len(name.encode("utf-8")) <= MAX_FILE_NAME_BYTES
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)


@settings(max_examples=400, deadline=None)
@given(tail=st.text(max_size=300))
def test_property_safe_file_name_of_any_path(tail: str) -> None:
    """For any path text, the file name is non-empty, has no slash/NUL/control, no leading dot."""
    _assert_safe(safe_file_name("http://h/" + tail))


url_alphabet = st.sampled_from(
    [*"abc./\\%:?#@[]~ \x00\x01\n\r\x7fé", "%2f", "%2e", "%00", "%5c", "%ff", "%c3", "%0a"]
)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(url_alphabet, max_size=60), prefix=st.sampled_from(["", "http://h/", "//"]))
def test_property_safe_file_name_of_any_url(parts: list[str], prefix: str) -> None:
    """For any url string urllib can split, the file name is always safe to create."""
    url = prefix + "".join(parts)
    try:
        urlsplit(url)
    except ValueError:
        assume(False)
    _assert_safe(safe_file_name(url))


@settings(max_examples=200, deadline=None)
@given(url=st.text(max_size=200))
def test_property_safe_file_name_of_arbitrary_text(url: str) -> None:
    """For arbitrary strings urllib can split, the file name is always safe to create."""
    try:
        urlsplit(url)
    except ValueError:
        assume(False)
    _assert_safe(safe_file_name(url))


def test_image_dest_puts_the_name_in_the_path() -> None:
    """A verified tarball lives at images/<name>/<safe file name>."""
    assert image_dest("1136548044", "http://h/a/..%2fx.tgz") == "images/1136548044/_._x.tgz"
    assert image_dest("1136548044", "http://h/a/.x.tgz") == "images/1136548044/_x.tgz"


# -- dest_to_url -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        ("images/1136548044/x.tgz", "images/1136548044/x.tgz"),
        ("images/1136548044/a b.tgz", "images/1136548044/a%20b.tgz"),
        ("images/1136548044/a?b#c.tgz", "images/1136548044/a%3Fb%23c.tgz"),
        ("images/1136548044/100%.tgz", "images/1136548044/100%25.tgz"),
        ("images/1136548044/über.tgz", "images/1136548044/%C3%BCber.tgz"),
        ("images/1136548044/a:b.tgz", "images/1136548044/a:b.tgz"),
        ("images/1136548044/a;b=c&d+e.tgz", "images/1136548044/a;b=c&d+e.tgz"),
        ("images/1136548044/a~b_c-d.e", "images/1136548044/a~b_c-d.e"),
        ("images/1136548044/u@h!$'(x),*.tgz", "images/1136548044/u@h!$'(x),*.tgz"),
        (
            'images/1136548044/a[b]{c}|d^e`f"g<h>.tgz',
            "images/1136548044/a%5Bb%5D%7Bc%7D%7Cd%5Ee%60f%22g%3Ch%3E.tgz",
        ),
        (
            "images/1136548044/euca-fedora-17(x86_64)+kvm.tar.gz",
            "images/1136548044/euca-fedora-17(x86_64)+kvm.tar.gz",
        ),
        ("images/1136548044/(a b)+.tgz", "images/1136548044/(a%20b)+.tgz"),
    ],
)
def test_dest_to_url_encodes_only_what_a_path_segment_requires(dest: str, expected: str) -> None:
    """Only characters that are not RFC 3986 pchars are encoded; sub-delims, ':' and '@' stay."""
    assert dest_to_url(dest, "") == expected


@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        ("images/1/a+b.tgz", "images/1/a%2Bb.tgz"),
        ("images/1/(a b)+.tgz", "images/1/(a%20b)%2B.tgz"),
        ("images/1/plain.tgz", "images/1/plain.tgz"),
    ],
)
def test_dest_to_url_can_encode_plus_for_object_stores(dest: str, expected: str) -> None:
    """With encode_plus a '+' becomes %2B (an object store reads a literal '+' as a space)."""
    assert dest_to_url(dest, "", encode_plus=True) == expected


def test_dest_to_url_never_starts_a_relative_url_with_a_scheme() -> None:
    """A ':' in the first segment of a relative url is encoded; under a public base it is not."""
    assert dest_to_url("a:b/x.tgz", "") == "a%3Ab/x.tgz"
    assert dest_to_url("a:b/x y.tgz", "") == "a%3Ab/x%20y.tgz"
    assert dest_to_url("a:b/x.tgz", "http://f/") == "http://f/a:b/x.tgz"


def test_verify_finds_the_file_a_minimally_encoded_url_names(tmp_path: Path) -> None:
    """verify maps a published url with literal sub-delims back to the file on disk."""
    from eumirror.commands.verify import local_dest
    from eumirror.core.config import Config

    config = Config(path=tmp_path / "c.toml", root=tmp_path, public_url="http://f/eu/")
    for dest in ("images/1/euca-fedora-17(x86_64)+kvm.tar.gz", "images/1/a b;c=d@e:f.tgz"):
        for base in ("", "http://f/eu/up/"):
            assert local_dest(config, "up", dest_to_url(dest, base)) == dest


def test_dest_to_url_with_public_base() -> None:
    """With a public base the url is absolute under it."""
    assert (
        dest_to_url("images/1136548044/a b.tgz", "http://front.example/eustore/up/")
        == "http://front.example/eustore/up/images/1136548044/a%20b.tgz"
    )


def test_relative_dest_url_stays_relative_under_urljoin() -> None:
    """A colon in the file name is encoded so the relative url is not read as a scheme."""
    url = dest_to_url("images/1136548044/http:x", "")
    assert urlsplit(url).scheme == ""


@settings(max_examples=300, deadline=None)
@given(tail=st.text(max_size=80))
def test_property_dest_to_url_round_trips(tail: str) -> None:
    """Unquoting the url of a safe dest gives the dest back, and only RFC 3986 pchars appear."""
    dest = image_dest("1136548044", "http://h/" + tail)
    url = dest_to_url(dest, "")
    assert unquote(url, errors="strict") == dest
    pchars = set(string.ascii_letters + string.digits + "-._~%/!$&'()*+,;=:@")
    assert set(url) <= pchars
    assert urlsplit(url).scheme == "" and urlsplit(url).path == url


# -- redaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:s3cret@h.example/c", "http://***@h.example/c"),
        ("https://user:s3cret@h.example:8443/c?q=1#f", "https://***@h.example:8443/c?q=1#f"),
        ("http://token@h.example/c", "http://***@h.example/c"),
        ("http://:s3cret@h.example/c", "http://***@h.example/c"),
        ("http://u:s3cret@[::1]:8080/c", "http://***@[::1]:8080/c"),
        ("http://h.example/c", "http://h.example/c"),
        ("file:///data/catalog", "file:///data/catalog"),
    ],
)
def test_redact_hides_credentials(url: str, expected: str) -> None:
    """Credentials in an url are replaced by *** and the rest is kept."""
    assert redact(url) == expected
    assert "s3cret" not in redact(url)


def test_redact_unparseable() -> None:
    """An url urllib cannot split is shown as a placeholder, not raised."""
    assert redact("http://[bad/x") == "<unparseable url>"


def test_redact_never_raises_on_bad_port() -> None:
    """redact hides the password even when the port is out of range, without raising."""
    shown = redact("http://user:s3cret@h.example:99999/c")
    assert "s3cret" not in shown


# -- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "fc00::",
        "fd12:3456::1",
        "fe80::1",
        "fe80::1%eth0",
        "ff02::1",
        "2001:db8::1",
        "not-an-address",
        "",
    ],
)
def test_non_public_addresses(address: str) -> None:
    """Loopback, private, link-local, unspecified, multicast and mapped ones are not public."""
    assert is_public_address(address) is False


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses(address: str) -> None:
    """Globally routable unicast addresses are public."""
    assert is_public_address(address) is True


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="abcXYZ019._~!$&'()*+,;=:@%/-", min_size=1, max_size=40),
    st.sampled_from(
        ["http://h.example/catalog", "https://h.example:8443/a/b/catalog?x=1", "file:///srv/c/cat"]
    ),
)
def test_fast_path_resolution_agrees_with_urljoin(rel: str, base: str) -> None:
    """The plain-relative fast path resolves exactly as RFC 3986 (urljoin) would, or defers."""
    from urllib.parse import urljoin

    from eumirror.core.policy import _is_plain_relative

    source = Source(base)
    if _is_plain_relative(rel, allow_percent=not source.is_file):
        assert source.base_dir + rel == urljoin(base, rel)
