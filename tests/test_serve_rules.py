"""The content server's pure rules: which paths exist, conditional answers and ranges, and the
trigger's rate limit, checked case by case."""

from __future__ import annotations

import pytest

from eumirror.service.conditional import Answer, decide, http_date
from eumirror.service.paths import Route, route
from eumirror.service.trigger import RateLimit

ETAG = '"abc"'
MTIME = 1_700_000_000.0


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", Route("index")),
        ("/up", Route("redirect", "up")),
        ("/up/", Route("listing", "up")),
        ("/up/catalog", Route("file", "up", ("up", "catalog"))),
        ("/up/catalog?x=1", Route("file", "up", ("up", "catalog"))),
        (
            "/up/images/0123456789/a%20b.tgz",
            Route("file", "up", ("up", "images", "0123456789", "a b.tgz")),
        ),
        (
            "/up/images/0123456789/100%25.tgz",
            Route("file", "up", ("up", "images", "0123456789", "100%.tgz")),
        ),
        (
            "/up/images/0123456789/%252e%252e",
            Route("file", "up", ("up", "images", "0123456789", "%2e%2e")),
        ),
        ("/up/images/0123456789/..", None),
        ("/up/images/0123456789/%2E.", None),
        ("/up/images/0123456789/a%0a", None),
        ("/up/images/0123456789/%ff", None),
        ("/Up/catalog", None),
        ("up/catalog", None),
    ],
)
def test_routes(path: str, expected: Route | None) -> None:
    """Only the published layout routes; a literal `%2e%2e` after one decoding is a plain name."""
    assert route(path) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, Answer(200, 0, 100)),
        ({"If-None-Match": ETAG}, Answer(304)),
        ({"If-None-Match": f'"x", W/{ETAG}'}, Answer(304)),
        ({"If-None-Match": "*"}, Answer(304)),
        ({"If-None-Match": '"x"', "If-Modified-Since": http_date(MTIME)}, Answer(200, 0, 100)),
        ({"If-Modified-Since": http_date(MTIME)}, Answer(304)),
        ({"If-Modified-Since": http_date(MTIME - 1)}, Answer(200, 0, 100)),
        ({"If-Modified-Since": "yesterday"}, Answer(200, 0, 100)),
        ({"Range": "bytes=0-9"}, Answer(206, 0, 10)),
        ({"Range": "bytes=90-200"}, Answer(206, 90, 100)),
        ({"Range": "bytes=-500"}, Answer(206, 0, 100)),
        ({"Range": "bytes=-0"}, Answer(416)),
        ({"Range": "bytes=100-"}, Answer(416)),
        ({"Range": "bytes=5-2"}, Answer(200, 0, 100)),
        ({"Range": "bytes=0-1,5-6"}, Answer(200, 0, 100)),
        ({"Range": "lines=0-1"}, Answer(200, 0, 100)),
        ({"Range": "bytes=0-9", "If-Range": ETAG}, Answer(206, 0, 10)),
        ({"Range": "bytes=0-9", "If-Range": http_date(MTIME)}, Answer(206, 0, 10)),
        ({"Range": "bytes=0-9", "If-Range": http_date(MTIME - 5)}, Answer(200, 0, 100)),
        ({"Range": "bytes=0-9", "If-Range": f"W/{ETAG}"}, Answer(200, 0, 100)),
    ],
)
def test_conditional_and_ranges(headers: dict[str, str], expected: Answer) -> None:
    """RFC 9110: 304 on a weak ETag match or an unmodified date; one satisfiable range is a 206,
    an unsatisfiable one a 416, anything else (several, malformed, stale If-Range) the whole."""
    assert decide(headers, etag=ETAG, mtime=MTIME, size=100) == expected


def test_rate_limit_refills_and_says_when() -> None:
    """A client gets its burst, then waits the refill period per request; others are unaffected."""
    now = [0.0]
    limit = RateLimit(burst=3, refill_seconds=6.0, clock=lambda: now[0])
    assert [limit.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("a") == pytest.approx(6.0)
    assert limit.take("b") == 0.0
    now[0] = 6.0
    assert limit.take("a") == 0.0
    assert limit.take("a") > 0
