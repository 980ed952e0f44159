"""The TOML configuration: strict parse, defaults, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from eumirror.core.config import (
    DEFAULT_PATH,
    Config,
    Limits,
    Schedule,
    StatusListen,
    config_path,
    load_config,
    parse_config,
    parse_duration,
    parse_listen,
    parse_size,
)
from eumirror.core.errors import ConfigError, ExitCode

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
PATH = Path("/etc/eumirror/test-eumirror.toml")
MIRROR = '[mirror]\nroot = "/var/lib/eumirror"\n'
UPSTREAM = '[[upstream]]\nname = "eucalyptus"\ncatalog = "http://emis.eucalyptus.com/catalog"\n'


def parse(text: str, path: Path = PATH) -> Config:
    return parse_config(text.encode("utf-8"), path=path)


def error_of(text: str, path: Path = PATH) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, path)
    return info.value


def assert_names(error: ConfigError, key: str, path: Path = PATH) -> None:
    assert str(path) in error.message, error.message
    assert key in error.message, error.message
    assert error.exit_code == ExitCode.USAGE == 2


# -- valid configurations ----------------------------------------------------------------------


def test_minimal_config_and_defaults() -> None:
    """A config with only mirror.root and one upstream parses with the contract's defaults."""
    config = parse(MIRROR + UPSTREAM)
    assert config.path == PATH
    assert config.root == Path("/var/lib/eumirror")
    assert config.public_url == ""
    assert config.concurrency == 4
    assert config.schedule == Schedule(interval=6 * 3600.0, cron=None, jitter=0.0)
    assert config.status == StatusListen("127.0.0.1", 9105)
    assert config.limits == Limits()
    assert config.limits.catalog_max_bytes == 64 * 1024 * 1024
    assert config.limits.connect_timeout == 15.0
    assert config.limits.low_speed_limit == 1024
    assert config.limits.low_speed_time == 30.0
    assert config.limits.retries == 3
    assert config.limits.max_shrink == 0.5
    (up,) = config.upstreams
    assert up.name == "eucalyptus"
    assert up.source.url == "http://emis.eucalyptus.com/catalog"
    assert up.allow_hosts == frozenset()


def test_full_config() -> None:
    """Every documented key is read and converted."""
    config = parse(
        """
[mirror]
root = "/srv/mirror"
public_url = "http://frontend.example/eustore"
concurrency = 8
keep_removed = "2h"

[schedule]
cron = "17 */6 * * *"
jitter = "5m"

[status]
listen = "[::1]:9105"

[limits]
catalog_max_bytes = "1GiB"
connect_timeout = "90s"
low_speed_limit = "2KiB"
low_speed_time = "1m"
retries = 0
max_shrink = 1
free_space_reserve = "512B"

[[upstream]]
name = "a.b_c-1"
catalog = "https://emis.example/catalog"
allow_hosts = ["Images.Internal.Example"]

[[upstream]]
name = "0local"
catalog = "file:///media/usb/catalog"
"""
    )
    assert config.public_url == "http://frontend.example/eustore/"
    assert config.concurrency == 8
    assert config.keep_removed == 7200.0
    assert config.schedule == Schedule(interval=None, cron="17 */6 * * *", jitter=300.0)
    assert config.status == StatusListen("::1", 9105)
    assert config.limits == Limits(
        catalog_max_bytes=1 << 30,
        connect_timeout=90.0,
        low_speed_limit=2048,
        low_speed_time=60.0,
        retries=0,
        max_shrink=1.0,
        free_space_reserve=512,
    )
    assert [u.name for u in config.upstreams] == ["a.b_c-1", "0local"]
    assert config.upstreams[0].allow_hosts == frozenset({"images.internal.example"})
    assert config.upstreams[1].source.url == "file:///media/usb/catalog"


def test_public_url_gets_a_trailing_slash() -> None:
    """public_url without a trailing slash gets one; one with a slash is kept."""
    for given, expected in [
        ("http://f.example/eustore", "http://f.example/eustore/"),
        ("https://f.example/eustore/", "https://f.example/eustore/"),
        ("http://f.example", "http://f.example/"),
        ("", ""),
    ]:
        config = parse(f'[mirror]\nroot = "/r"\npublic_url = "{given}"\n')
        assert config.public_url == expected


def test_relative_root_resolves_against_config_folder() -> None:
    """A relative root resolves against the config file's folder, not the working directory."""
    config = parse('[mirror]\nroot = "../demo-mirror"\n', Path("/opt/eumirror/config/x.toml"))
    assert config.root == Path("/opt/eumirror/demo-mirror")
    config = parse('[mirror]\nroot = "data"\n', Path("/opt/eumirror/config/x.toml"))
    assert config.root == Path("/opt/eumirror/config/data")


def test_plain_path_catalog_resolves_against_config_folder() -> None:
    """A relative plain-path catalog becomes a file url under the config file's folder."""
    config = parse(
        MIRROR + '[[upstream]]\nname = "s"\ncatalog = "../sample dir/catalog"\n',
        Path("/opt/eumirror/config/x.toml"),
    )
    assert config.upstreams[0].source.url == "file:///opt/eumirror/sample%20dir/catalog"
    assert config.upstreams[0].source.is_file


def test_absolute_plain_path_catalog() -> None:
    """An absolute plain-path catalog becomes a file url of that path."""
    config = parse(MIRROR + '[[upstream]]\nname = "s"\ncatalog = "/media/usb/catalog"\n')
    assert config.upstreams[0].source.url == "file:///media/usb/catalog"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("[::1]:9105", ("::1", 9105)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("0.0.0.0:9105", ("0.0.0.0", 9105)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::]:80", ("::", 80)),
    ],
)
def test_listen_forms(listen: str, expected: tuple[str, int]) -> None:
    """listen takes HOST:PORT, [IPv6]:PORT, and port 0 for a free port."""
    config = parse(MIRROR + f'[status]\nlisten = "{listen}"\n')
    assert (config.status.host, config.status.port) == expected


def test_interval_takes_integer_seconds_and_fractions() -> None:
    """A duration may be a bare number of seconds or a decimal with a unit."""
    assert parse(MIRROR + "[schedule]\ninterval = 90\n").schedule.interval == 90.0
    assert parse(MIRROR + '[schedule]\ninterval = "1.5h"\n').schedule.interval == 5400.0


def test_no_upstreams_parses_as_a_fragment_but_does_not_load(tmp_path: Path) -> None:
    """parse_config takes a fragment without upstreams; a configuration file needs one (exit 2)."""
    assert parse(MIRROR).upstreams == ()
    path = tmp_path / "eumirror.toml"
    path.write_text(MIRROR)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    assert str(path) in info.value.message and "[[upstream]]" in info.value.line()


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_parse(path: Path) -> None:
    """Every example configuration shipped in config/ parses."""
    config = load_config(path)
    assert config.upstreams
    assert config.root.is_absolute()


def test_example_configs_exist() -> None:
    """The config folder holds example configurations to test."""
    assert len(list(CONFIG_DIR.glob("*.toml"))) >= 1


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MIRROR + "[bogus]\nx = 1\n", "bogus"),
        (MIRROR + "bogus = 1\n", "mirror.bogus"),
        (MIRROR + "[schedule]\nevery = '1h'\n", "schedule.every"),
        (MIRROR + "[status]\nport = 1\n", "status.port"),
        (MIRROR + "[limits]\nmax_bytes = 1\n", "limits.max_bytes"),
        (MIRROR + '[[upstream]]\nname = "a"\ncatalog = "http://h/c"\nurl = 1\n', "upstream[0].url"),
    ],
)
def test_unknown_section_or_key(text: str, key: str) -> None:
    """An unknown section or key is an error naming it and the file."""
    error = error_of(text)
    assert_names(error, key)
    assert "unknown" in error.message


@pytest.mark.parametrize(
    ("text", "key", "meant"),
    [
        (MIRROR + "concurency = 8\n", "mirror.concurency", "concurrency"),
        (MIRROR + "[shedule]\ninterval = '1h'\n", "shedule", "schedule"),
        (MIRROR + "[limits]\nretry = 1\n", "limits.retry", "retries"),
        (MIRROR + '[[upstreams]]\nname = "a"\n', "upstreams", "upstream"),
        (
            MIRROR + '[[upstream]]\nname = "a"\ncatalogue = "http://h/c"\n',
            "upstream[0].catalogue",
            "catalog",
        ),
    ],
)
def test_unknown_key_suggests_the_closest_known_one(text: str, key: str, meant: str) -> None:
    """A misspelt section or key is named, with the known one it most likely meant."""
    error = error_of(text)
    assert_names(error, key)
    assert f"did you mean {meant}?" in error.message


def test_unknown_key_far_from_any_has_no_suggestion() -> None:
    """A key like no known one gets no guess."""
    assert "did you mean" not in error_of(MIRROR + "zzzzzz = 1\n").message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[mirror]\nroot = 5\n", "mirror.root"),
        ('[mirror]\nroot = ["/r"]\n', "mirror.root"),
        (MIRROR + "public_url = 5\n", "mirror.public_url"),
        (MIRROR + 'concurrency = "4"\n', "mirror.concurrency"),
        (MIRROR + "concurrency = 4.5\n", "mirror.concurrency"),
        (MIRROR + "concurrency = true\n", "mirror.concurrency"),
        (MIRROR + "concurrency = 0\n", "mirror.concurrency"),
        (MIRROR + "concurrency = 65\n", "mirror.concurrency"),
        (MIRROR + "keep_removed = true\n", "mirror.keep_removed"),
        (MIRROR + "[status]\nlisten = 9105\n", "status.listen"),
        (MIRROR + "[limits]\nretries = true\n", "limits.retries"),
        (MIRROR + "[limits]\nretries = 1.5\n", "limits.retries"),
        (MIRROR + "[limits]\nretries = -1\n", "limits.retries"),
        (MIRROR + "[limits]\nretries = 21\n", "limits.retries"),
        (MIRROR + '[limits]\nmax_shrink = "half"\n', "limits.max_shrink"),
        (MIRROR + "[limits]\nmax_shrink = true\n", "limits.max_shrink"),
        (MIRROR + "[limits]\nmax_shrink = 1.5\n", "limits.max_shrink"),
        (MIRROR + "[limits]\nmax_shrink = -0.1\n", "limits.max_shrink"),
        (MIRROR + "[limits]\ncatalog_max_bytes = 0\n", "limits.catalog_max_bytes"),
        (MIRROR + '[limits]\nconnect_timeout = "0s"\n', "limits.connect_timeout"),
        (MIRROR + "[limits]\nlow_speed_time = 0\n", "limits.low_speed_time"),
        (MIRROR + "mirror = 1\n", "mirror.mirror"),
        ("mirror = 5\n", "mirror"),
        (MIRROR + "schedule = 5\n", "mirror.schedule"),
        (MIRROR + 'upstream = "x"\n', "mirror.upstream"),
        (MIRROR + '[upstream]\nname = "a"\n', "upstream"),
        (MIRROR + "upstream = [1]\n", "mirror.upstream"),
        (MIRROR + UPSTREAM + 'allow_hosts = "h"\n', "upstream[0].allow_hosts"),
        (MIRROR + UPSTREAM + "allow_hosts = [1]\n", "upstream[0].allow_hosts"),
        (MIRROR + UPSTREAM + 'allow_hosts = [""]\n', "upstream[0].allow_hosts"),
        (MIRROR + '[[upstream]]\nname = 5\ncatalog = "http://h/c"\n', "upstream[0].name"),
        (MIRROR + '[[upstream]]\nname = "a"\ncatalog = 5\n', "upstream[0].catalog"),
    ],
)
def test_bad_types_and_ranges(text: str, key: str) -> None:
    """A value of the wrong type or out of range is an error naming the key and the file."""
    assert_names(error_of(text), key)


def test_upstream_array_of_non_tables() -> None:
    """An upstream array holding something other than tables names the entry."""
    assert_names(error_of("upstream = [1]\n" + MIRROR), "upstream[0]")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("catalog_max_bytes", "12 parsecs"),
        ("catalog_max_bytes", "64MB"),
        ("catalog_max_bytes", "64 mib"),
        ("catalog_max_bytes", "-1KiB"),
        ("catalog_max_bytes", "KiB"),
        ("catalog_max_bytes", ""),
        ("low_speed_limit", "1.5"),
        ("free_space_reserve", "lots"),
    ],
)
def test_bad_sizes(key: str, value: str) -> None:
    """A size without a known unit is an error naming the key and the file."""
    assert_names(error_of(MIRROR + f'[limits]\n{key} = "{value}"\n'), f"limits.{key}")


def test_negative_integer_size() -> None:
    """A negative integer size is refused."""
    assert_names(
        error_of(MIRROR + "[limits]\ncatalog_max_bytes = -1\n"), "limits.catalog_max_bytes"
    )


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("schedule", "interval", '"5 fortnights"'),
        ("schedule", "interval", '"6"'),
        ("schedule", "interval", '"6 hours"'),
        ("schedule", "interval", '"-1h"'),
        ("schedule", "interval", '"0s"'),
        ("schedule", "interval", "0"),
        ("schedule", "interval", "-5"),
        ("schedule", "interval", "true"),
        ("schedule", "jitter", '"soon"'),
        ("schedule", "jitter", '"-5m"'),
        ("limits", "connect_timeout", '"15 sec"'),
        ("limits", "low_speed_time", '"1w"'),
        ("mirror", "keep_removed", '"1y"'),
    ],
)
def test_bad_durations(section: str, key: str, value: str) -> None:
    """A duration without a known unit, or not positive where it must be, names the key."""
    head = MIRROR if section != "mirror" else ""
    text = head + f"[{section}]\n{key} = {value}\n"
    if section == "mirror":
        text += 'root = "/r"\n'
    assert_names(error_of(text), f"{section}.{key}")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("schedule", "interval", "nan"),
        ("schedule", "interval", "inf"),
        ("schedule", "jitter", "nan"),
        ("limits", "connect_timeout", "nan"),
    ],
)
def test_non_finite_durations_are_refused(section: str, key: str, value: str) -> None:
    """A nan or inf duration is a configuration error naming the key."""
    assert_names(error_of(MIRROR + f"[{section}]\n{key} = {value}\n"), f"{section}.{key}")


def test_nan_max_shrink_is_refused() -> None:
    """A nan max_shrink is refused by the range check."""
    assert_names(error_of(MIRROR + "[limits]\nmax_shrink = nan\n"), "limits.max_shrink")


def test_interval_and_cron_both() -> None:
    """Setting both interval and cron is an error naming the schedule key."""
    error = error_of(MIRROR + '[schedule]\ninterval = "1h"\ncron = "17 */6 * * *"\n')
    assert_names(error, "schedule.cron")
    assert "interval" in error.message


@pytest.mark.parametrize(
    "cron", ["17 */6 * *", "99 * * * *", "* * * * * * *", "every day", "", "17 */6 * * mon-xyz"]
)
def test_bad_cron(cron: str) -> None:
    """A malformed crontab expression is an error naming schedule.cron."""
    assert_names(error_of(MIRROR + f'[schedule]\ncron = "{cron}"\n'), "schedule.cron")


def test_cron_not_a_string() -> None:
    """A non-string cron is refused."""
    assert_names(error_of(MIRROR + "[schedule]\ncron = 5\n"), "schedule.cron")


def test_cron_alone_clears_interval() -> None:
    """With cron set, there is no interval."""
    config = parse(MIRROR + '[schedule]\ncron = "*/5 * * * *"\n')
    assert config.schedule.interval is None
    assert config.schedule.cron == "*/5 * * * *"


@pytest.mark.parametrize(
    "name", ["Bad", "-x", "a/b", "", ".eumirror", "..", ".", "_x", "a b", "ä", "a\\b", "UP"]
)
def test_bad_upstream_names(name: str) -> None:
    """An upstream name outside [a-z0-9][a-z0-9._-]* is an error naming it."""
    text = MIRROR + f'[[upstream]]\nname = "{name}"\ncatalog = "http://h/c"\n'.replace("\\", "\\\\")
    assert_names(error_of(text), "upstream[0].name")


def test_duplicate_upstreams() -> None:
    """Two upstreams with the same name are refused, naming the second."""
    error = error_of(MIRROR + UPSTREAM + UPSTREAM)
    assert_names(error, "upstream[1].name")
    assert "duplicate" in error.message


@pytest.mark.parametrize("missing", ["name", "catalog"])
def test_upstream_keys_required(missing: str) -> None:
    """An upstream without a name or catalog names the missing key."""
    lines = {"name": 'name = "a"', "catalog": 'catalog = "http://h/c"'}
    del lines[missing]
    text = MIRROR + "[[upstream]]\n" + "\n".join(lines.values()) + "\n"
    assert_names(error_of(text), f"upstream[0].{missing}")


@pytest.mark.parametrize("text", ["", "[mirror]\n", "[mirror]\nconcurrency = 2\n", UPSTREAM])
def test_missing_root(text: str) -> None:
    """A configuration without mirror.root is an error naming it."""
    assert_names(error_of(text), "mirror.root")


def test_empty_root() -> None:
    """An empty mirror.root is refused."""
    assert_names(error_of('[mirror]\nroot = ""\n'), "mirror.root")


@pytest.mark.parametrize(
    "catalog",
    [
        "",
        "ftp://h/catalog",
        "gopher://h/catalog",
        "http:///catalog",
        "https://",
        "file://otherhost/catalog",
    ],
)
def test_bad_catalogs(catalog: str) -> None:
    """An empty, non-http/file or hostless catalog is an error naming it."""
    text = MIRROR + f'[[upstream]]\nname = "a"\ncatalog = "{catalog}"\n'
    assert_names(error_of(text), "upstream[0].catalog")


@pytest.mark.parametrize(
    "public_url", ["ftp://f/eustore/", "/eustore/", "frontend.example/eustore", "http://"]
)
def test_bad_public_url(public_url: str) -> None:
    """A public_url that is not an absolute http(s) url is refused."""
    assert_names(error_of(MIRROR + f'public_url = "{public_url}"\n'), "mirror.public_url")


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1", "::1:9105", ":9105", "[zz]:1", "h:x", ""],
)
def test_bad_listen(listen: str) -> None:
    """A listen value that is not HOST:PORT with a port up to 65535 is refused."""
    assert_names(error_of(MIRROR + f'[status]\nlisten = "{listen}"\n'), "status.listen")


def test_invalid_toml_names_the_file() -> None:
    """A TOML syntax error names the file."""
    error = error_of("[mirror\nroot = 1\n")
    assert str(PATH) in error.message and "TOML" in error.message


def test_duplicate_toml_key_names_the_file() -> None:
    """A key defined twice is a TOML error naming the file."""
    error = error_of('[mirror]\nroot = "/a"\nroot = "/b"\n')
    assert str(PATH) in error.message


def test_non_utf8_names_the_file() -> None:
    """A configuration that is not UTF-8 is refused, naming the file."""
    with pytest.raises(ConfigError) as info:
        parse_config(b'[mirror]\nroot = "/r\xff"\n', path=PATH)
    assert str(PATH) in info.value.message and "UTF-8" in info.value.message


# -- loading -----------------------------------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    """A missing configuration file is a ConfigError naming it, with a hint."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in info.value.message
    assert info.value.hint


def test_load_config_resolves_relative_to_file(tmp_path: Path) -> None:
    """load_config resolves a relative root against the file's folder."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "eumirror.toml"
    path.write_text('[mirror]\nroot = "../mirror"\n' + UPSTREAM)
    config = load_config(path)
    assert config.root == tmp_path / "mirror"
    assert config.path == path


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config wins over $EUMIRROR_CONFIG, which wins over the system default."""
    monkeypatch.delenv("EUMIRROR_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_PATH == Path("/etc/eumirror/eumirror.toml")
    monkeypatch.setenv("EUMIRROR_CONFIG", "/from/env.toml")
    assert config_path(None) == Path("/from/env.toml")
    assert config_path("/explicit.toml") == Path("/explicit.toml")


# -- converters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0B", 0), ("1B", 1), ("1KiB", 1024), ("64MiB", 64 << 20), ("2GiB", 2 << 30), (5, 5),
     (" 3 KiB ", 3072), ("0.5KiB", 512)],
)  # fmt: skip
def test_parse_size(value: object, expected: int) -> None:
    """Sizes take B, KiB, MiB, GiB (or a bare byte count)."""
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("90s", 90.0), ("15m", 900.0), ("6h", 21600.0), ("1d", 86400.0), (30, 30.0), (1.5, 1.5)],
)
def test_parse_duration(value: object, expected: float) -> None:
    """Durations take s, m, h, d (or a bare number of seconds)."""
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", [True, None, [1], "1 fortnight", "-1s"])
def test_parse_duration_refuses(value: object) -> None:
    """Non-durations raise ValueError for the reader to turn into a ConfigError."""
    with pytest.raises(ValueError):
        parse_duration(value)


def test_parse_listen_port_limit() -> None:
    """Port 65535 is accepted and 65536 refused."""
    assert parse_listen("h:65535") == ("h", 65535)
    with pytest.raises(ValueError, match="65535"):
        parse_listen("h:65536")


# -- object storage ----------------------------------------------------------------------------


def test_an_s3_root_needs_a_state_dir_and_keeps_its_state_there() -> None:
    config = parse(
        '[mirror]\nroot = "s3://eustore/mirror/"\nstate_dir = "/var/lib/eumirror"\n'
        '[s3]\nendpoint_url = "http://rgw:7480/"\naddressing_style = "virtual"\n' + UPSTREAM
    )
    assert config.s3 is not None
    assert (config.s3.bucket, config.s3.prefix) == ("eustore", "mirror")
    assert config.s3.endpoint_url == "http://rgw:7480"
    assert config.s3.addressing_style == "virtual"
    assert config.s3.key("up", "catalog") == "mirror/up/catalog"
    assert config.root == Path("/var/lib/eumirror")
    assert config.where == "s3://eustore/mirror"
    bare = parse('[mirror]\nroot = "s3://eustore"\nstate_dir = "/s"\n' + UPSTREAM)
    assert bare.s3 is not None and bare.s3.key("up", "catalog") == "up/catalog"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[mirror]\nroot = "s3://eustore/m"\n', "mirror.state_dir"),
        ('[mirror]\nroot = "/srv/m"\nstate_dir = "/s"\n', "mirror.state_dir"),
        ('[mirror]\nroot = "/srv/m"\n[s3]\nregion = "x"\n', "s3"),
        ('[mirror]\nroot = "s3://Bad_Bucket/m"\nstate_dir = "/s"\n', "mirror.root"),
        ('[mirror]\nroot = "s3://b3t/a//b"\nstate_dir = "/s"\n', "mirror.root"),
        (
            '[mirror]\nroot = "s3://b3t/m"\nstate_dir = "/s"\n[s3]\nendpoint_url = "ftp://x"\n',
            "s3.endpoint_url",
        ),
        (
            '[mirror]\nroot = "s3://b3t/m"\nstate_dir = "/s"\n[s3]\naddressing_style = "dns"\n',
            "s3.addressing_style",
        ),
        (
            '[mirror]\nroot = "s3://b3t/m"\nstate_dir = "/s"\n[s3]\nendpoint = "http://x"\n',
            "s3.endpoint",
        ),
        (
            '[mirror]\nroot = "s3://b3t/m"\nstate_dir = "/s"\n[serve]\nlisten = "127.0.0.1:8080"\n',
            "serve",
        ),
    ],
)
def test_s3_configuration_errors_name_the_key(text: str, key: str) -> None:
    error = error_of(text + UPSTREAM)
    assert f": {key}:" in error.message, error.message


def test_split_downloads_configuration() -> None:
    limits = parse(MIRROR + '[limits]\nconnections_per_download = 8\nsplit_above = "1GiB"\n').limits
    assert (limits.connections_per_download, limits.split_above) == (8, 1 << 30)
    assert parse(MIRROR).limits.split_above == 256 << 20
    for bad, key in [
        ("connections_per_download = 0", "limits.connections_per_download"),
        ("connections_per_download = 17", "limits.connections_per_download"),
        ('split_above = "16MiB"', "limits.split_above"),
    ]:
        assert f": {key}:" in error_of(MIRROR + f"[limits]\n{bad}\n").message
