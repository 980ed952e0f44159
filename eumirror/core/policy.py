"""Rules about urls and paths: resolution, allowed schemes and hosts, trust, safe file names,
redaction.

Pure. No local path is ever built from an upstream url except through `safe_file_name`.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from .errors import ImageError

HTTP_SCHEMES = frozenset({"http", "https"})
_FORBIDDEN_IN_URL = re.compile(r"[\x00-\x20\x7f\\]")
MAX_FILE_NAME_BYTES = 200
# No ";": urllib still splits RFC 1808 path parameters, and its answer is the one we keep.
_PLAIN_RELATIVE = re.compile(
    r"(?![^/]*:)"  # no scheme
    r"(?!.*//)"  # no empty segment (urllib folds them)
    r"(?!(?:.*/)?\.\.?(?:/|\Z))"  # no dot segment
    r"[A-Za-z0-9._~!$&'()*+,=@%-][A-Za-z0-9._~!$&'()*+,=:@%/-]*\Z"
)
_PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,199}\Z")
# RFC 3986 pchar: unreserved, sub-delims, ":" and "@" stay literal; everything else is encoded.
_SUB_DELIMS = "!$&'()*+,;="
_PCHAR_SAFE = _SUB_DELIMS + ":@"
# The fast path: nothing to encode, and no ":" in a first segment (a relative reference would
# read it as a scheme).
_PLAIN_DEST = re.compile(r"(?![^/]*:)[A-Za-z0-9._~/!$&'()*+,;=:@-]+\Z")
_PLAIN_DEST_NO_PLUS = re.compile(r"(?![^/]*:)[A-Za-z0-9._~/!$&'()*,;=:@-]+\Z")


@dataclass(frozen=True)
class Trust:
    """What the requests of one upstream may reach, and how: never shared between upstreams.

    `hosts` may have private addresses (the catalog's host and the upstream's allow_hosts);
    every other host must resolve to public addresses only. `proxy` is None to follow the
    environment (http_proxy, https_proxy, no_proxy), "" for none, or a proxy url. `auth` is the
    catalog url's userinfo, sent only to the catalog's own origin (`auth_origin`).
    """

    hosts: frozenset[str] = frozenset()
    proxy: str | None = field(default=None, repr=False)
    ca_file: str = ""
    auth: tuple[str, str] | None = field(default=None, repr=False)
    auth_origin: str = ""


def origin(url: str) -> str:
    """scheme://host:port of an url, lower-cased, with the default port spelled out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The url without its userinfo, and the (user, password) it carried, percent-decoded.

    Credentials then travel only as an Authorization header, never in an url that could
    reach a log line, a state file or a message.
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username), unquote(parts.password or ""))


def check_url(value: str, schemes: frozenset[str]) -> None:
    """Refuse an url that cannot be requested: scheme, host, port. The message shows the url
    redacted, so a password in it is never echoed."""
    shown = redact(value)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        problem = "its port is not a number from 1 to 65535" if "ort" in str(exc) else ""
        raise ValueError(f"{shown!r}: {problem or 'it cannot be parsed as an url'}") from None
    if parts.scheme.lower() not in schemes:
        allowed = ", ".join(f"{s}://" for s in sorted(schemes))
        raise ValueError(f"{shown!r}: use {allowed}")
    if port == 0:
        raise ValueError(f"{shown!r}: its port is not a number from 1 to 65535")
    host = parts.hostname or ""
    if not _valid_host(host):
        raise ValueError(f"{shown!r}: {host!r} is not a valid host name or address")
    if _FORBIDDEN_IN_URL.search(value):
        raise ValueError(f"{shown!r}: contains a space, control character or backslash")


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")


def _valid_host(host: str) -> bool:
    if not host:
        return False
    if is_ip_literal(host):
        return True
    if re.fullmatch(r"[0-9.]+", host):
        return False  # 127.1, 2130706433: legacy forms aiohttp refuses
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.rstrip(".").split(".")
    return len(ascii_host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def is_ip_literal(host: str) -> bool:
    """An IPv4 or IPv6 address (no lookup needed, none done)."""
    if not host or not (host[-1].isdigit() or ":" in host):
        return False  # the common case, a name: no parsing
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Source:
    """Where an upstream catalog lives: an http(s) url or a local file (as a file:// url)."""

    url: str

    @property
    def is_file(self) -> bool:
        return self.url.startswith("file:")

    @functools.cached_property
    def base_dir(self) -> str:
        """The catalog url up to its last slash: what a plain relative path is appended to."""
        parts = urlsplit(self.url)
        path = parts.path.rsplit("/", 1)[0] + "/" if "/" in parts.path else "/"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def folder(self) -> str:
        """The local folder of a file catalog: its images must be inside it."""
        return posixpath.dirname(unquote(urlsplit(self.url).path))


def resolve_image_url(source: Source, image_url: str) -> str:
    """Resolve an image url against its catalog per RFC 3986 and apply the upstream's rules."""
    if _is_plain_relative(image_url, allow_percent=not source.is_file):
        return source.base_dir + image_url
    if _FORBIDDEN_IN_URL.search(image_url):
        raise ImageError(
            f"image url {redact(image_url)!r} contains a space, control character or backslash"
        )
    try:
        resolved = urljoin(source.url, image_url)
        parts = urlsplit(resolved)
        parts.port  # noqa: B018 (validates the port)
    except ValueError as exc:
        raise ImageError(f"image url {redact(image_url)!r} cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if source.is_file:
        if scheme != "file" or parts.netloc not in ("", "localhost"):
            raise ImageError(f"image url {redact(image_url)!r} leaves the file catalog's folder")
        local_image_path(source, resolved)
        return resolved
    if scheme not in HTTP_SCHEMES:
        raise ImageError(f"image url {redact(image_url)!r} is not http(s) in an http(s) catalog")
    if not parts.hostname:
        raise ImageError(f"image url {redact(image_url)!r} has no host")
    if (
        source.url.lower().startswith("https:")
        and scheme == "http"
        and (parts.hostname or "").lower() != source.host
    ):
        raise ImageError(
            f"image url {redact(image_url)!r} downgrades https to http on another host"
        )
    return resolved


def _is_plain_relative(url: str, *, allow_percent: bool) -> bool:
    """A relative path with no scheme, dot segment, query or fragment: appending is resolving.

    The fast path for the common case; anything else goes through urljoin and every check.
    """
    return _PLAIN_RELATIVE.match(url) is not None and (allow_percent or "%" not in url)


def local_image_path(source: Source, resolved: str) -> str:
    """The file a file-catalog image url names, refused unless it is inside the catalog's folder.

    The caller still checks the real path (symlinks) when it opens the file.
    """
    raw_path = urlsplit(resolved).path
    try:
        decoded = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise ImageError(f"image url {resolved!r} encodes bytes that are not UTF-8") from None
    if "\x00" in decoded or "\\" in decoded:
        raise ImageError(f"image url {resolved!r} encodes a NUL or backslash")
    path = posixpath.normpath(decoded)
    folder = posixpath.normpath(source.folder())
    if posixpath.commonpath([folder, path]) != folder or path == folder:
        raise ImageError(f"image url {resolved!r} points outside the catalog's folder {folder}")
    return path


def safe_file_name(url: str, *, fallback: str = "image.tgz") -> str:
    """The last path segment of `url`, percent-decoded, made safe to use as one file name."""
    if "?" not in url and "#" not in url and "/" in url.partition("://")[2]:
        tail = url.rsplit("/", 1)[-1]
        if _PLAIN_FILE_NAME.match(tail):
            return tail
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    name = unquote(segment, errors="replace")
    name = "".join(
        "_" if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch
        for ch in name
    )
    if name in ("", ".", ".."):
        return fallback
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not (dot and stem and len(ext.encode("utf-8")) <= 16):
            stem, ext = name, ""
        suffix = "." + ext if ext else ""
        keep = MAX_FILE_NAME_BYTES - len(suffix.encode("utf-8"))
        name = stem.encode("utf-8")[:keep].decode("utf-8", "ignore") + suffix
    return name


def image_dest(name: str, source_url: str) -> str:
    """Where a verified tarball lives under its upstream's folder: the name is in the path."""
    return f"images/{name}/{safe_file_name(source_url)}"


def dest_to_url(dest: str, public_base: str, *, encode_plus: bool = False) -> str:
    """The url written into the published catalog for a tarball at `dest`.

    Only what RFC 3986 requires in a path segment is percent-encoded: sub-delimiters, `:` and
    `@` stay literal, so a client saving the file under the url's last segment gets the
    upstream's file name (`euca-fedora-17(x86_64)+kvm.tar.gz`). `encode_plus` also encodes `+`
    as `%2B`, for object stores that read a literal `+` in a key as a space.
    """
    plain = _PLAIN_DEST_NO_PLUS if encode_plus else _PLAIN_DEST
    if plain.match(dest):
        return public_base + dest
    safe = _PCHAR_SAFE.replace("+", "") if encode_plus else _PCHAR_SAFE
    parts = [quote(part, safe=safe) for part in PurePosixPath(dest).parts]
    if not public_base and parts:
        parts[0] = parts[0].replace(":", "%3A")  # not a scheme in a relative reference
    return public_base + "/".join(parts)


def redact(url: str) -> str:
    """Hide credentials in an url before it reaches a log, a message or /status."""
    if "@" not in url and "[" not in url and url.isascii():
        return url  # no userinfo, nothing urlsplit could refuse: the common case, twice a file
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    netloc = f"***@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses: the only ones an unlisted host may have."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
