"""Filters (`include` / `exclude` per upstream): the matching rules, the plan and the shrink guard,
and end to end through `sync --once`, `--dry-run` and the daemon's /status and /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Mirror, Upstream, events, human_lines, name_of, run_cli, tarball, write_config
from faultserver import ThreadedFaultServer

from eumirror.core.catalog import parse_catalog
from eumirror.core.config import parse_config
from eumirror.core.errors import ConfigError
from eumirror.core.filters import Filters, parse_filters
from eumirror.core.plan import Inventory, make_plan, shrink_refusal
from eumirror.core.policy import Source

KVM_X86 = 'include = { architecture = ["x86_64"], "hypervisors-supported" = ["kvm*"] }\n'
NO_FEDORA = 'exclude = { os = ["fedora*"] }\n'


def drop(filters: Filters, **fields: Any) -> str:
    return filters.dropped_by(fields)


# -- matching (pure) ---------------------------------------------------------------------------
def test_include_needs_every_key_and_is_case_insensitive() -> None:
    """Every include key must match one of its globs; case is ignored on both sides."""
    f = parse_filters({"architecture": ["X86_64"], "hypervisors-supported": ["KVM*"]}, None)
    assert drop(f, architecture="x86_64", **{"hypervisors-supported": ["xen", "Kvm-ept"]}) == ""
    assert drop(f, architecture="i386", **{"hypervisors-supported": ["kvm"]}) == (
        'include architecture = ["x86_64"]'
    )
    assert drop(f, architecture="x86_64", **{"hypervisors-supported": ["xen"]}).startswith(
        "include hypervisors-supported"
    )


def test_exclude_drops_on_any_match() -> None:
    """An exclude key that matches drops the image and is named as the rule."""
    f = parse_filters(None, {"os": ["fedora*", "centos"]})
    assert drop(f, os="Fedora-20") == 'exclude os = ["fedora*", "centos"]'
    assert drop(f, os="debian") == ""


def test_numbers_booleans_null_objects_and_missing_fields() -> None:
    """Numbers and booleans match as their JSON text; null, objects and missing fields never."""
    f = parse_filters({"size": ["1?"], "public": ["true"]}, None)
    assert drop(f, size=12, public=True) == ""
    assert drop(f, size=2, public=True).startswith("include size")
    assert drop(f, size=12, public="yes").startswith("include public")
    assert drop(f, size=None, public=True).startswith("include size")
    assert drop(f, size={"v": 12}, public=True).startswith("include size")
    assert drop(f, public=True).startswith("include size")
    excluding = parse_filters(None, {"os": ["*"]})
    assert drop(excluding) == "" and drop(excluding, os=None) == ""
    assert drop(excluding, os=[None, {}]) == "" and drop(excluding, os=[None, "x"]) != ""


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('include = { os = "debian" }', "upstream[0].include.os"),
        ('exclude = { os = ["debian", 3] }', "upstream[0].exclude.os"),
        ('include = ["os"]', "upstream[0].include"),
    ],
)
def test_globs_must_be_lists_of_strings(table: str, key: str) -> None:
    """A glob that is not a list of strings is a configuration error naming the key."""
    text = f'[mirror]\nroot = "/r"\n[[upstream]]\nname = "u"\ncatalog = "http://h/c"\n{table}\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text.encode(), path=Path("/etc/e.toml"))
    assert f"/etc/e.toml: {key}:" in info.value.line()


# -- the plan and the shrink guard (pure) ------------------------------------------------------
def catalog(*images: dict[str, Any]) -> Any:
    doc = {"version": "eustore-catalog-2011-12-29", "images": list(images)}
    return parse_catalog(json.dumps(doc).encode())


def image(seed: int, **fields: Any) -> dict[str, Any]:
    return {"name": name_of(tarball(seed)), "url": f"t{seed}.tgz", "os": "debian", **fields}


SOURCE = Source("http://up.test/catalog")


def fedora_plan(*, published: int) -> Any:
    """Four images upstream, three of them Fedora (excluded); `published` were published."""
    previous = {f"http://up.test/t{i}.tgz": f"images/x/t{i}.tgz" for i in range(published)}
    cat = catalog(image(0), image(1, os="fedora"), image(2, os="fedora"), image(3, os="fedora"))
    return make_plan(
        upstream="u",
        source=SOURCE,
        catalog=cat,
        previous=previous,
        inventory=Inventory(),
        filters=parse_filters(None, {"os": ["fedora"]}),
    )


def test_filtered_images_are_not_planned_and_not_counted_as_dropped() -> None:
    """Filtered images get no step; published ones leaving by the filter do not trip the guard."""
    plan = fedora_plan(published=4)
    assert [s.index for s in plan.steps] == [0]
    assert [(f.index, f.rule) for f in plan.filtered] == [
        (i, 'exclude os = ["fedora"]') for i in (1, 2, 3)
    ]
    assert plan.dropped == () and plan.filtered_published == 3
    assert shrink_refusal(plan, 0.5) == ""


def test_upstream_drops_are_judged_against_what_the_filter_keeps() -> None:
    """Of the images the filter keeps, the upstream dropping too many is still refused."""
    plan = fedora_plan(published=6)
    assert len(plan.dropped) == 2
    assert "drops 2 of 3" in shrink_refusal(plan, 0.5)


def test_a_filter_that_leaves_nothing_is_refused_even_on_a_first_sync() -> None:
    """A filter leaving the upstream with no image is refused (unless --allow-shrink)."""
    plan = make_plan(
        upstream="u",
        source=SOURCE,
        catalog=catalog(image(0), image(1)),
        previous={},
        inventory=Inventory(),
        filters=parse_filters({"os": ["windows"]}, None),
    )
    assert plan.steps == ()
    assert "the filters leave none of the upstream's 2 images" in shrink_refusal(plan, 1.0)


# -- end to end ---------------------------------------------------------------------------------
def three_images(upstream: Upstream) -> tuple[str, str, str]:
    upstream.add("kvm.tgz", tarball(1))
    upstream.add("arm.tgz", tarball(2), architecture="aarch64")
    upstream.add("fed.tgz", tarball(3), os="Fedora-20")
    upstream.write()
    return name_of(tarball(1)), name_of(tarball(2)), name_of(tarball(3))


def configure(mirror: Mirror, server: ThreadedFaultServer, extra: str) -> None:
    write_config(
        mirror.config, root=mirror.root, upstreams={"up": f"{server.url}/catalog"}, extra=extra
    )


def test_sync_mirrors_only_what_the_filters_keep(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Filtered images are never requested and not published; the run counts them."""
    kvm, _, _ = three_images(upstream)
    configure(mirror, server, KVM_X86 + NO_FEDORA)

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert [i["name"] for i in mirror.catalog()["images"]] == [kvm]
    assert server.requests("/arm.tgz") == 0 and server.requests("/fed.tgz") == 0
    up_done = next(e for e in events(done.stderr) if e.get("event") == "upstream_done")
    assert up_done["filtered"] == 2
    status = run_cli("status", "--json", "--config", str(mirror.config))
    assert json.loads(status.stdout)["upstreams"]["up"]["filtered"] == 2


def test_a_filter_change_applies_on_an_unchanged_upstream(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Narrowing then widening the filter takes effect at the next sync though the upstream
    answers 304; a filtered tarball leaves after keep_removed like any dropped one (with one
    kept generation: older generations would keep it)."""
    kvm, arm, fed = three_images(upstream)
    assert mirror.sync().returncode == 0
    assert len(mirror.catalog()["images"]) == 3

    write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog"},
        mirror={"keep_removed": "0s", "keep_generations": 1},
        extra=NO_FEDORA,
    )
    narrowed = mirror.sync()
    assert narrowed.returncode == 0, narrowed.stderr
    assert [i["name"] for i in mirror.catalog()["images"]] == [kvm, arm]
    assert not any(fed in path for path in mirror.files())

    configure(mirror, server, "")
    widened = mirror.sync()
    assert widened.returncode == 0, widened.stderr
    assert [i["name"] for i in mirror.catalog()["images"]] == [kvm, arm, fed]
    for run in (narrowed, widened):
        why = [e["reason"] for e in events(run.stderr) if e.get("event") == "rebuilding"]
        assert why == ["the configuration that shapes the catalog changed"], run.stderr
    assert all(r.headers.get("If-None-Match") for r in server.seen("/catalog")[1:])


def test_dry_run_shows_each_filtered_image_and_its_rule(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """--dry-run lists every filtered image with the rule that dropped it."""
    _, arm, fed = three_images(upstream)
    configure(mirror, server, KVM_X86 + NO_FEDORA)

    done = mirror.sync("--dry-run")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(arm in x and 'include architecture = ["x86_64"]' in x for x in lines), done.stdout
    assert any(fed in x and 'exclude os = ["fedora*"]' in x for x in lines), done.stdout
    assert "2 filtered" in done.stdout


def test_a_filter_leaving_nothing_is_refused(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A filter leaving the upstream empty exits 1 naming the filters; --allow-shrink publishes."""
    three_images(upstream)
    configure(mirror, server, 'include = { os = ["windows*"] }\n')

    done = mirror.sync()

    assert done.returncode == 1
    line = " ".join(human_lines(done.stderr))
    assert "filters leave none" in line and "include/exclude" in line, done.stderr
    assert server.requests("/kvm.tgz") == 0
    allowed = mirror.sync("--allow-shrink")
    assert allowed.returncode == 0, allowed.stderr
    assert mirror.catalog()["images"] == []


def test_bad_filter_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    """`include = { os = "debian" }` (not a list) is exit 2 naming the key and the file."""
    config = write_config(
        tmp_path / "c.toml",
        root=tmp_path / "r",
        upstreams={"up": "http://127.0.0.1:9/catalog"},
        extra='include = { os = "debian" }\n',
    )
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 2
    assert "upstream[0].include.os" in done.stderr and str(config) in done.stderr
