"""The TOML configuration: strict parse into frozen dataclasses.

Every error names the key and the file. Only `load_config` touches the filesystem.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError
from .filters import Filters, parse_filters
from .policy import (
    HTTP_SCHEMES,
    Source,
    Trust,
    check_url,
    origin,
    redact,
    split_credentials,
)

DEFAULT_PATH = Path("/etc/eumirror/eumirror.toml")
UPSTREAM_KEYS = {
    "name",
    "catalog",
    "allow_hosts",
    "proxy",
    "ca_file",
    "notify",
    "notify_token_file",
    "include",
    "exclude",
    "on_publish",
    "hook_timeout",
}
UPSTREAM_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB)\Z")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\Z")
_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Limits:
    catalog_max_bytes: int = 64 << 20
    connect_timeout: float = 15.0
    low_speed_limit: int = 1 << 10
    low_speed_time: float = 30.0
    retries: int = 3
    max_shrink: float = 0.5
    free_space_reserve: int = 256 << 20
    max_image_bytes: int = 64 << 30
    max_rate: int | None = None
    """Bytes per second for all downloads together; None: unlimited."""
    connections_per_download: int = 4
    """Ranged connections one big tarball may be fetched over: a long fat link caps each TCP
    flow, not the sum."""
    split_above: int = 256 << 20
    """Only tarballs larger than this are split (rclone's multi-thread cutoff): a split costs
    a read-back to hash and a buffer per connection, worth it only for long transfers."""


@dataclass(frozen=True)
class Schedule:
    interval: float | None = 6 * 3600.0
    cron: str | None = None
    jitter: float = 0.0
    verify_interval: float | None = None
    """Seconds between two scheduled verifications of everything on disk; None: never."""


@dataclass(frozen=True)
class StatusListen:
    host: str = "127.0.0.1"
    port: int = 9105
    progress_interval: float = 30.0
    """Seconds between two `progress` log events of a sync or verify (not on a terminal)."""
    trigger_token_file: Path | None = None


@dataclass(frozen=True)
class Serve:
    """`[serve]`: the content server (absent: nothing but the status endpoint is served)."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_connections: int = 1024
    idle_timeout: float = 75.0
    send_timeout: float = 60.0


@dataclass(frozen=True)
class Upstream:
    name: str
    source: Source
    allow_hosts: frozenset[str] = frozenset()
    proxy: str | None = field(default=None, repr=False)
    """None: from the environment; "": no proxy; else the proxy's url."""
    ca_file: str = ""
    """Extra certificate authorities for this upstream's https, a PEM file."""
    auth: tuple[str, str] | None = field(default=None, repr=False)
    """The catalog url's userinfo, taken out of the url at load (see policy.split_credentials)."""
    notify: tuple[str, ...] = ()
    notify_token_file: Path | None = None

    filters: Filters = field(default_factory=Filters)
    on_publish: tuple[str, ...] = ()
    """The hook's argv, run after each new generation; () when none."""
    hook_timeout: float = 3600.0

    @functools.cached_property
    def trust(self) -> Trust:
        """What this upstream's requests may reach: its catalog host and its allow_hosts only."""
        hosts = set(self.allow_hosts)
        if self.source.host and not self.source.is_file:
            hosts.add(self.source.host)
        return Trust(
            hosts=frozenset(hosts),
            proxy=self.proxy,
            ca_file=self.ca_file,
            auth=self.auth,
            auth_origin=origin(self.source.url) if self.auth else "",
        )


@dataclass(frozen=True)
class S3Root:
    """`root = "s3://bucket/prefix"` and `[s3]`: where an object-storage mirror publishes."""

    bucket: str
    prefix: str
    """"" or a path without leading or trailing slashes."""
    endpoint_url: str | None = None
    """None: AWS."""
    region: str | None = None
    addressing_style: str = "path"
    profile: str | None = None
    """A profile of the shared credentials file; None: the usual AWS environment."""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        """The object key of a path under the root (`U/catalog`, `U/images/N/F`)."""
        return "/".join((self.prefix, *parts) if self.prefix else parts)


@dataclass(frozen=True)
class Config:
    path: Path
    root: Path
    """The local folder: the mirror itself, or with an s3 root, the state folder (lock, state,
    history)."""
    public_url: str = ""
    concurrency: int = 4
    keep_removed: float = 3600.0
    keep_generations: int = 5
    """Published catalogs kept per upstream for rollback, the live one included."""
    schedule: Schedule = field(default_factory=Schedule)
    status: StatusListen = field(default_factory=StatusListen)
    limits: Limits = field(default_factory=Limits)
    upstreams: tuple[Upstream, ...] = ()
    serve: Serve | None = None
    s3: S3Root | None = None
    """Set when the mirror is published into an S3 bucket."""

    @property
    def where(self) -> str:
        """Where the mirror is published, for people: a folder or s3://bucket/prefix."""
        return self.s3.url if self.s3 else str(self.root)


def config_path(explicit: str | None) -> Path:
    """--config, else $EUMIRROR_CONFIG, else the system default."""
    chosen = explicit or os.environ.get("EUMIRROR_CONFIG") or str(DEFAULT_PATH)
    return Path(chosen)


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice a typo most likely meant (difflib's ratio at least 0.6), or None."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def load_config(path: Path, *, need_upstreams: bool = True) -> Config:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found",
            hint="pass --config PATH or set EUMIRROR_CONFIG",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    config = parse_config(data, path=Path(os.path.abspath(path)))
    if not config.upstreams and need_upstreams:
        # parse_config allows it (a fragment to test); a file to run with must name an upstream.
        raise ConfigError(
            f"{config.path}: no [[upstream]] configured, nothing to mirror",
            hint='add one: [[upstream]] name = "..." catalog = "http://.../catalog"',
        )
    return config


def parse_config(data: bytes, *, path: Path) -> Config:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the configuration is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return _Reader(path).config(doc)


T = TypeVar("T")


class _Reader:
    """Walks the TOML document; every complaint carries `file: key`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def table(self, doc: Mapping[str, Any], key: str, allowed: set[str]) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        self.only(value, allowed, key)
        return value

    def only(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                problem = "unknown key" if where else "unknown section"
                if close := closest(key, allowed):
                    problem += f"; did you mean {close}?"
                raise self.fail(name, problem)

    def get(
        self,
        table: Mapping[str, Any],
        where: str,
        key: str,
        kind: type[T],
        default: T,
        convert: Callable[[Any], T] | None = None,
    ) -> T:
        if key not in table:
            return default
        value = table[key]
        name = f"{where}.{key}"
        if convert is not None:
            try:
                return convert(value)
            except ValueError as exc:
                raise self.fail(name, str(exc)) from None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(name, f"must be {kind.__name__}, not {type(value).__name__}")
        return value

    def config(self, doc: Mapping[str, Any]) -> Config:
        self.only(doc, {"mirror", "schedule", "status", "limits", "upstream", "serve", "s3"}, "")
        mirror = self.table(
            doc,
            "mirror",
            {"root", "state_dir", "public_url", "concurrency", "keep_removed", "keep_generations"},
        )
        if "root" not in mirror:
            raise self.fail("mirror.root", "required: the folder eumirror writes to")
        root_text = self.get(mirror, "mirror", "root", str, "")
        if not root_text:
            raise self.fail("mirror.root", "must not be empty")
        public_url = self.get(mirror, "mirror", "public_url", str, "", _public_url)
        concurrency = self.get(mirror, "mirror", "concurrency", int, 4)
        if not 1 <= concurrency <= 64:
            raise self.fail("mirror.concurrency", "must be between 1 and 64")
        keep_removed = self.get(mirror, "mirror", "keep_removed", float, 3600.0, parse_duration)
        status = self.status(doc)
        serve = self.serve(doc, status, s3_root=root_text.startswith("s3://"))
        keep_generations = self.get(mirror, "mirror", "keep_generations", int, 5)
        if not 1 <= keep_generations <= 1000:
            raise self.fail("mirror.keep_generations", "must be between 1 and 1000")
        s3 = self.s3(doc, mirror, root_text)
        state_dir = self.path_of(mirror, "mirror", "state_dir")
        if s3 is None and state_dir is not None:
            raise self.fail(
                "mirror.state_dir", "only with an s3 root (a folder root keeps its state inside)"
            )
        local = state_dir or Path(os.path.normpath(self.base / Path(root_text).expanduser()))
        return Config(
            path=self.path,
            root=local,
            s3=s3,
            public_url=public_url,
            concurrency=concurrency,
            keep_removed=keep_removed,
            keep_generations=keep_generations,
            schedule=self.schedule(doc),
            status=status,
            limits=self.limits(doc),
            upstreams=self.upstreams(doc),
            serve=serve,
        )

    def s3(self, doc: Mapping[str, Any], mirror: Mapping[str, Any], root: str) -> S3Root | None:
        table = self.table(doc, "s3", {"endpoint_url", "region", "addressing_style", "profile"})
        if not root.startswith("s3://"):
            if "s3" in doc:
                raise self.fail("s3", 'only with root = "s3://bucket/prefix"')
            return None
        if "state_dir" not in mirror:
            raise self.fail(
                "mirror.state_dir",
                "required with an s3 root: the local folder for the lock, state and history, "
                'e.g. "/var/lib/eumirror"',
            )
        bucket, _, prefix = root[5:].partition("/")
        prefix = prefix.strip("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise self.fail("mirror.root", f"{bucket!r} is not a valid bucket name")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise self.fail("mirror.root", "the prefix must not hold empty, . or .. parts")
        endpoint = self.get(table, "s3", "endpoint_url", str, "")
        if endpoint and urlsplit(endpoint).scheme not in HTTP_SCHEMES:
            raise self.fail("s3.endpoint_url", "must be an http:// or https:// url")
        style = self.get(table, "s3", "addressing_style", str, "path")
        if style not in ("path", "virtual"):
            raise self.fail("s3.addressing_style", 'must be "path" or "virtual"')
        return S3Root(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=endpoint.rstrip("/") or None,
            region=self.get(table, "s3", "region", str, "") or None,
            addressing_style=style,
            profile=self.get(table, "s3", "profile", str, "") or None,
        )

    def schedule(self, doc: Mapping[str, Any]) -> Schedule:
        table = self.table(doc, "schedule", {"interval", "cron", "jitter", "verify_interval"})
        if "interval" in table and "cron" in table:
            raise self.fail("schedule.cron", "set interval or cron, not both")
        interval = self.get(table, "schedule", "interval", float, 6 * 3600.0, parse_duration)
        if interval <= 0:
            raise self.fail("schedule.interval", "must be longer than zero")
        cron = self.get(table, "schedule", "cron", str, "", _cron) or None
        jitter = self.get(table, "schedule", "jitter", float, 0.0, parse_duration)
        verify = self.get(table, "schedule", "verify_interval", float, 0.0, parse_duration)
        if "verify_interval" in table and verify <= 0:
            raise self.fail("schedule.verify_interval", "must be longer than zero")
        return Schedule(
            interval=None if cron else interval,
            cron=cron,
            jitter=jitter,
            verify_interval=verify or None,
        )

    def status(self, doc: Mapping[str, Any]) -> StatusListen:
        table = self.table(doc, "status", {"listen", "progress_interval", "trigger_token_file"})
        host, port = self.get(table, "status", "listen", tuple, ("127.0.0.1", 9105), parse_listen)
        every = self.get(table, "status", "progress_interval", float, 30.0, parse_duration)
        if every <= 0:
            raise self.fail("status.progress_interval", "must be longer than zero")
        token = self.path_of(table, "status", "trigger_token_file")
        return StatusListen(host=host, port=port, progress_interval=every, trigger_token_file=token)

    def path_of(self, table: Mapping[str, Any], where: str, key: str) -> Path | None:
        """An optional file path, relative to the config file's folder."""
        text = self.get(table, where, key, str, "")
        if key in table and not text:
            raise self.fail(f"{where}.{key}", "must not be empty")
        return Path(os.path.normpath(self.base / Path(text).expanduser())) if text else None

    def serve(self, doc: Mapping[str, Any], status: StatusListen, *, s3_root: bool) -> Serve | None:
        keys = {"listen", "tls_cert", "tls_key", "max_connections", "idle_timeout", "send_timeout"}
        if "serve" not in doc:
            return None
        t = self.table(doc, "serve", keys)
        if s3_root:
            raise self.fail("serve", "an s3 root is served by the object store; remove [serve]")
        if "listen" not in t:
            raise self.fail("serve.listen", 'required, e.g. "0.0.0.0:8080"')
        host, port = self.get(t, "serve", "listen", tuple, ("", 0), parse_listen)
        if port and port == status.port and same_host(host, status.host):
            raise self.fail("serve.listen", f"{host}:{port} is also [status] listen; use another")
        cert, key = self.path_of(t, "serve", "tls_cert"), self.path_of(t, "serve", "tls_key")
        if (cert is None) != (key is None):
            raise self.fail(
                "serve.tls_key" if key is None else "serve.tls_cert", "set both or none"
            )
        d = Serve(host, port)
        serve = Serve(
            host,
            port,
            tls_cert=cert,
            tls_key=key,
            max_connections=self.get(t, "serve", "max_connections", int, d.max_connections),
            idle_timeout=self.get(
                t, "serve", "idle_timeout", float, d.idle_timeout, parse_duration
            ),
            send_timeout=self.get(
                t, "serve", "send_timeout", float, d.send_timeout, parse_duration
            ),
        )
        if serve.max_connections < 1:
            raise self.fail("serve.max_connections", "must be at least 1")
        for name in ("idle_timeout", "send_timeout"):
            if getattr(serve, name) <= 0:
                raise self.fail(f"serve.{name}", "must be more than zero")
        return serve

    def limits(self, doc: Mapping[str, Any]) -> Limits:
        keys = {
            "catalog_max_bytes",
            "connect_timeout",
            "low_speed_limit",
            "low_speed_time",
            "retries",
            "max_shrink",
            "free_space_reserve",
            "max_image_bytes",
            "max_rate",
            "connections_per_download",
            "split_above",
        }
        t = self.table(doc, "limits", keys)
        d = Limits()
        retries = self.get(t, "limits", "retries", int, d.retries)
        if not 0 <= retries <= 20:
            raise self.fail("limits.retries", "must be between 0 and 20")
        max_shrink = self.get(t, "limits", "max_shrink", float, d.max_shrink)
        if not 0.0 <= max_shrink <= 1.0:
            raise self.fail("limits.max_shrink", "must be between 0.0 and 1.0")
        limits = Limits(
            catalog_max_bytes=self.get(
                t, "limits", "catalog_max_bytes", int, d.catalog_max_bytes, parse_size
            ),
            connect_timeout=self.get(
                t, "limits", "connect_timeout", float, d.connect_timeout, parse_duration
            ),
            low_speed_limit=self.get(
                t, "limits", "low_speed_limit", int, d.low_speed_limit, parse_size
            ),
            low_speed_time=self.get(
                t, "limits", "low_speed_time", float, d.low_speed_time, parse_duration
            ),
            retries=retries,
            max_shrink=max_shrink,
            free_space_reserve=self.get(
                t, "limits", "free_space_reserve", int, d.free_space_reserve, parse_size
            ),
            max_image_bytes=self.get(
                t, "limits", "max_image_bytes", int, d.max_image_bytes, parse_size
            ),
            connections_per_download=self.get(
                t, "limits", "connections_per_download", int, d.connections_per_download
            ),
            split_above=self.get(t, "limits", "split_above", int, d.split_above, parse_size),
        )
        if not 1 <= limits.connections_per_download <= 16:
            raise self.fail("limits.connections_per_download", "must be between 1 and 16")
        if limits.split_above < 2 * (16 << 20):
            raise self.fail("limits.split_above", "must be at least 32MiB (two pieces)")
        for key in ("catalog_max_bytes", "connect_timeout", "low_speed_time", "max_image_bytes"):
            if getattr(limits, key) <= 0:
                raise self.fail(f"limits.{key}", "must be more than zero")
        if "max_rate" in t:
            rate = self.get(t, "limits", "max_rate", int, 0, parse_size)
            if rate <= 0:
                raise self.fail(
                    "limits.max_rate", "must be more than zero (leave it out: unlimited)"
                )
            limits = dataclasses.replace(limits, max_rate=rate)
        return limits

    def upstreams(self, doc: Mapping[str, Any]) -> tuple[Upstream, ...]:
        raw = doc.get("upstream", [])
        if not isinstance(raw, list):
            raise self.fail("upstream", "must be an array of tables: [[upstream]]")
        upstreams: list[Upstream] = []
        for position, table in enumerate(raw):
            where = f"upstream[{position}]"
            if not isinstance(table, dict):
                raise self.fail(where, "must be a table")
            self.only(table, UPSTREAM_KEYS, where)
            for key in ("name", "catalog"):
                if key not in table:
                    raise self.fail(f"{where}.{key}", "required")
            name = self.get(table, where, "name", str, "")
            if not UPSTREAM_NAME.match(name):
                raise self.fail(f"{where}.name", f"{name!r} must match [a-z0-9][a-z0-9._-]*")
            if any(u.name == name for u in upstreams):
                raise self.fail(f"{where}.name", f"duplicate upstream {name!r}")
            catalog = self.get(table, where, "catalog", str, "")
            try:
                source = self.source(catalog)
            except ValueError as exc:
                raise self.fail(f"{where}.catalog", str(exc)) from None
            bare, auth = split_credentials(source.url)
            hosts = self.get(table, where, "allow_hosts", list, [])
            if not all(isinstance(h, str) and h for h in hosts):
                raise self.fail(f"{where}.allow_hosts", "must be a list of host names")
            proxy = self.get(table, where, "proxy", str, None, _proxy_url)
            ca_file = self.get(table, where, "ca_file", str, "")
            if ca_file:
                ca_file = os.path.normpath(self.base / Path(ca_file).expanduser())
                if not os.path.isfile(ca_file):
                    raise self.fail(f"{where}.ca_file", f"{ca_file}: no such file")
            notify = self.get(table, where, "notify", list, [])
            for url in notify:
                parts = urlsplit(url) if isinstance(url, str) else None
                if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                    raise self.fail(f"{where}.notify", f"{url!r} is not an http(s) url")
            token = self.path_of(table, where, "notify_token_file")
            upstreams.append(
                Upstream(
                    name,
                    Source(bare),
                    frozenset(h.lower().rstrip(".") for h in hosts),
                    proxy=proxy,
                    ca_file=ca_file,
                    auth=auth,
                    notify=tuple(notify),
                    notify_token_file=token,
                    **self.controls(table, where),
                )
            )
        return tuple(upstreams)

    def controls(self, table: Mapping[str, Any], where: str) -> dict[str, Any]:
        """An upstream's filters and hook (issue 12's operator controls)."""
        try:
            filters = parse_filters(table.get("include"), table.get("exclude"))
        except ValueError as exc:
            key, _, problem = str(exc).partition(": ")
            raise self.fail(f"{where}.{key}", problem) from None
        hook = self.get(table, where, "on_publish", list, [])
        if "on_publish" in table and (not hook or not all(isinstance(a, str) and a for a in hook)):
            raise self.fail(
                f"{where}.on_publish",
                "must be a non-empty list of strings: the program and its arguments, e.g. "
                '["/usr/local/bin/register-images", "--cloud", "prod"]',
            )
        timeout = self.get(table, where, "hook_timeout", float, 3600.0, parse_duration)
        if timeout <= 0:
            raise self.fail(f"{where}.hook_timeout", "must be longer than zero")
        return {"filters": filters, "on_publish": tuple(hook), "hook_timeout": timeout}

    def source(self, catalog: str) -> Source:
        if not catalog:
            raise ValueError("must not be empty")
        parts = urlsplit(catalog)
        scheme = parts.scheme.lower()
        if scheme in HTTP_SCHEMES:
            check_url(catalog, HTTP_SCHEMES)
            return Source(catalog)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"{catalog!r}: a file url must be local")
            return Source(catalog)
        if scheme and len(scheme) > 1:
            raise ValueError(f"{catalog!r}: use http://, https://, file:// or a plain path")
        return Source(Path(os.path.normpath(self.base / Path(catalog).expanduser())).as_uri())


def parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str) or not (m := _SIZE.match(value.strip())):
        raise ValueError(f'{value!r} is not a size such as "64MiB" (units B, KiB, MiB, GiB)')
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a duration of zero or more seconds")
        return float(value)
    if not isinstance(value, str) or not (m := _DURATION.match(value.strip())):
        raise ValueError(f'{value!r} is not a duration such as "90s", "15m", "6h", "1d"')
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_listen(value: Any) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ValueError('must be a string such as "127.0.0.1:9105" or "[::1]:9105"')
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value.strip())
    if not m:
        raise ValueError(f'{value!r} is not HOST:PORT ("127.0.0.1:9105", "[::1]:9105")')
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is above 65535")
    return host, port


def same_host(a: str, b: str) -> bool:
    """Two listen hosts that would take the same port (a wildcard takes every address)."""
    wild = {"0.0.0.0", "::", ""}
    return a == b or a in wild or b in wild


def _public_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value:
        return ""
    check_url(value, HTTP_SCHEMES)
    if urlsplit(value).username is not None:
        raise ValueError(
            f"{redact(value)!r} carries credentials, and the published catalog would show them"
        )
    return value if value.endswith("/") else value + "/"


def _proxy_url(value: Any) -> str:
    """A per-upstream proxy: "" for none, else an http:// proxy url."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if value:
        check_url(value, frozenset({"http"}))
    return value


def _cron(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError('must be a string such as "17 */6 * * *"')
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a crontab expression: {exc}") from None
    return value
