"""Planning one sync (reuse, link, download, fail, drop) and building the published catalog."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from eumirror.core.catalog import dump_catalog, parse_catalog
from eumirror.core.plan import (
    Action,
    Inventory,
    Outcome,
    Plan,
    build_catalog,
    make_plan,
    needs_previous_entries,
    shrink_refusal,
)
from eumirror.core.policy import Source

UP = "up"
SOURCE = Source("http://up.example/eustore/catalog")
BASE = "http://up.example/eustore/"
N1, N2, N3, N4 = "1136548044", "3867013014", "2106965694", "0502633748"


def image(name: Any, url: Any, **fields: Any) -> dict[str, Any]:
    return {"name": name, "description": f"image {url}", "url": url, **fields}


def plan_of(
    images: Iterable[Any],
    *,
    previous: Mapping[str, str] | None = None,
    inventory: Inventory | None = None,
    source: Source = SOURCE,
    **top: Any,
) -> Plan:
    doc = {"version": "eustore-catalog-2011-12-29", **top, "images": list(images)}
    catalog = parse_catalog(json.dumps(doc).encode())
    return make_plan(
        upstream=UP,
        source=source,
        catalog=catalog,
        previous=previous or {},
        inventory=inventory or Inventory(),
    )


def build(
    plan: Plan,
    verified: Iterable[str],
    *,
    public_base: str = "",
    previous_entries: Mapping[str, Mapping[str, Any]] | None = None,
    url_to_dest: Mapping[str, str] | None = None,
) -> Outcome:
    return build_catalog(
        plan,
        verified=verified,
        public_base=public_base,
        previous_entries=previous_entries or {},
        url_to_dest=url_to_dest or {},
    )


def all_ready(plan: Plan) -> set[str]:
    return {s.dest for s in plan.steps if s.action is not Action.FAIL}


def publish(plan: Plan, outcome: Outcome) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """What the next sync knows: previous map, published entries by url, url -> dest."""
    body = dump_catalog(plan.top, outcome.images)
    published = parse_catalog(body)
    previous = {src: pair[0] for src, pair in outcome.published.items()}
    entries = {img.url: dict(img.fields) for img in published.images}
    url_to_dest = {url: dest for url, dest in outcome.published.values()}
    return previous, entries, url_to_dest


# -- make_plan ---------------------------------------------------------------------------------


def test_new_image_is_downloaded() -> None:
    """An image never seen before is downloaded to images/<name>/<file name>."""
    plan = plan_of([image(N1, "starter/x.tgz")])
    (step,) = plan.steps
    assert step.action is Action.DOWNLOAD
    assert step.reason == "new image"
    assert step.name == N1
    assert step.source_url == BASE + "starter/x.tgz"
    assert step.dest == f"images/{N1}/x.tgz"
    assert step.previous_url == ""
    assert plan.downloads() == {N1: step}
    assert plan.dropped == () and plan.published_count == 0
    assert plan.upstream == UP


def test_dest_uses_the_safe_decoded_file_name() -> None:
    """The dest holds the percent-decoded, sanitised last segment of the source url."""
    plan = plan_of([image(N1, "extras/euca-ubuntu%2012.04.tgz"), image(N2, "a/.hidden%2f.tgz")])
    assert [s.dest for s in plan.steps] == [
        f"images/{N1}/euca-ubuntu 12.04.tgz",
        f"images/{N2}/_hidden_.tgz",
    ]


def test_verified_at_same_dest_is_reused() -> None:
    """An image already verified at the very path it is published at is reused."""
    inventory = Inventory()
    inventory.add(N1, f"{UP}/images/{N1}/x.tgz")
    url = BASE + "x.tgz"
    plan = plan_of([image(N1, "x.tgz")], previous={url: f"images/{N1}/x.tgz"}, inventory=inventory)
    (step,) = plan.steps
    assert step.action is Action.REUSE
    assert step.previous_url == f"images/{N1}/x.tgz"
    assert plan.downloads() == {}
    # the relative url published before is the dest: the step holds that one string (memory)
    assert step.dest is step.previous_url


@pytest.mark.parametrize(
    "elsewhere",
    [f"{UP}/images/{N1}/old-name.tgz", f"other/images/{N1}/x.tgz"],
    ids=["other-file-name", "other-upstream"],
)
def test_verified_elsewhere_is_linked(elsewhere: str) -> None:
    """A name already verified at another path (or upstream) is hard-linked, not downloaded."""
    inventory = Inventory()
    inventory.add(N1, elsewhere)
    plan = plan_of([image(N1, "new/x.tgz")], inventory=inventory)
    (step,) = plan.steps
    assert step.action is Action.LINK
    assert step.link_from == elsewhere
    assert step.dest == f"images/{N1}/x.tgz"
    assert plan.downloads() == {}


def test_reuse_wins_over_link_when_both_exist() -> None:
    """When the name is verified both at its dest and elsewhere, it is reused."""
    inventory = Inventory()
    inventory.add(N1, f"other/images/{N1}/x.tgz")
    inventory.add(N1, f"{UP}/images/{N1}/x.tgz")
    (step,) = plan_of([image(N1, "x.tgz")], inventory=inventory).steps
    assert step.action is Action.REUSE


def test_inventory_add_is_idempotent() -> None:
    """Adding the same path twice records it once."""
    inventory = Inventory()
    inventory.add(N1, "a")
    inventory.add(N1, "a")
    inventory.add(N1, "b")
    assert inventory.find(N1) == ["a", "b"]
    assert inventory.find(N2) == []


def test_same_url_new_name_is_downloaded_with_reason() -> None:
    """A url published before under another name is downloaded again, saying why."""
    url = BASE + "x.tgz"
    inventory = Inventory()
    inventory.add(N1, f"{UP}/images/{N1}/x.tgz")
    plan = plan_of([image(N2, "x.tgz")], previous={url: f"images/{N1}/x.tgz"}, inventory=inventory)
    (step,) = plan.steps
    assert step.action is Action.DOWNLOAD
    assert step.reason == "new name for the same url"
    assert step.dest == f"images/{N2}/x.tgz"
    assert step.previous_url == f"images/{N1}/x.tgz"
    assert plan.dropped == ()


def test_duplicate_names_download_once_and_link() -> None:
    """Two urls with the same name in one catalog give one download and one link to it."""
    plan = plan_of([image(N1, "a/x.tgz"), image(N1, "b/y.tgz")])
    first, second = plan.steps
    assert first.action is Action.DOWNLOAD
    assert second.action is Action.LINK
    assert second.link_from == f"{UP}/{first.dest}"
    assert second.dest == f"images/{N1}/y.tgz"
    assert list(plan.downloads()) == [N1]
    assert plan.count(Action.DOWNLOAD) == 1 and plan.count(Action.LINK) == 1


def test_exact_duplicate_is_not_linked_onto_itself() -> None:
    """An exact duplicate entry never links a file onto its own destination."""
    plan = plan_of([image(N1, "x.tgz"), image(N1, "x.tgz")])
    for step in plan.steps:
        assert step.link_from != f"{UP}/{step.dest}"


def test_same_url_two_names_second_fails() -> None:
    """A url listed twice with different names fails its second entry."""
    plan = plan_of([image(N1, "x.tgz"), image(N2, "./x.tgz")])
    first, second = plan.steps
    assert first.action is Action.DOWNLOAD
    assert second.action is Action.FAIL
    assert "#0" in second.reason and N1 in second.reason
    assert second.source_url == first.source_url
    assert plan.downloads() == {N1: first}


def test_image_gone_upstream_is_dropped() -> None:
    """A source url published before and absent now is in dropped."""
    previous = {BASE + "x.tgz": f"images/{N1}/x.tgz", BASE + "gone.tgz": f"images/{N2}/gone.tgz"}
    plan = plan_of([image(N1, "x.tgz")], previous=previous)
    assert plan.dropped == (BASE + "gone.tgz",)
    assert plan.published_count == 2


def test_malformed_entry_fails_and_keeps_previous_url() -> None:
    """A malformed entry fails with a reason and remembers what was published for its url."""
    url = BASE + "x.tgz"
    plan = plan_of([image("not-a-name", "x.tgz")], previous={url: f"images/{N1}/x.tgz"})
    (step,) = plan.steps
    assert step.action is Action.FAIL
    assert "name" in step.reason
    assert step.source_url == url
    assert step.previous_url == f"images/{N1}/x.tgz"
    assert plan.dropped == ()


@pytest.mark.parametrize("entry", ["just a string", {"name": N1}, {"name": N1, "url": 5}])
def test_malformed_entry_without_usable_url_has_no_previous(entry: Any) -> None:
    """A malformed entry without a usable url fails and keeps nothing."""
    (step,) = plan_of([entry], previous={BASE + "x.tgz": "u"}).steps
    assert step.action is Action.FAIL
    assert step.source_url == "" and step.previous_url == ""


def test_malformed_entry_with_forbidden_url_has_no_previous() -> None:
    """A malformed entry whose url is forbidden has no source url."""
    (step,) = plan_of([image(None, "file:///etc/passwd")]).steps
    assert step.action is Action.FAIL and step.source_url == ""


def test_forbidden_url_fails_only_its_image() -> None:
    """A well-formed image with a forbidden url fails; the others are planned."""
    plan = plan_of([image(N1, "ftp://up.example/x.tgz"), image(N2, "y.tgz")])
    bad, good = plan.steps
    assert bad.action is Action.FAIL and "http" in bad.reason
    assert good.action is Action.DOWNLOAD


def test_steps_are_in_catalog_order() -> None:
    """Steps come in the order of the catalog's images, failures included."""
    plan = plan_of([image(N1, "a.tgz"), "bad", image(N2, "b.tgz"), {"url": "c.tgz"}])
    assert [s.index for s in plan.steps] == [0, 1, 2, 3]
    assert [s.action for s in plan.steps] == [
        Action.DOWNLOAD,
        Action.FAIL,
        Action.DOWNLOAD,
        Action.FAIL,
    ]


def test_file_catalog_plan() -> None:
    """A file catalog's images plan downloads from file urls inside its folder."""
    source = Source("file:///data/cat/catalog")
    plan = plan_of([image(N1, "sub/x.tgz"), image(N2, "../y.tgz")], source=source)
    good, bad = plan.steps
    assert good.action is Action.DOWNLOAD
    assert good.source_url == "file:///data/cat/sub/x.tgz"
    assert bad.action is Action.FAIL


def test_unparseable_url_fails_only_its_image() -> None:
    """An image whose url urllib cannot parse fails alone; the plan is still made."""
    plan = plan_of([image(N1, "http://[bad/x.tgz"), image(N2, "y.tgz")])
    assert [s.action for s in plan.steps] == [Action.FAIL, Action.DOWNLOAD]


# -- shrink guard ------------------------------------------------------------------------------


def previous_of(count: int) -> dict[str, str]:
    return {f"{BASE}{i}.tgz": f"images/{N1}/{i}.tgz" for i in range(count)}


def test_first_sync_is_never_refused() -> None:
    """With nothing published, even an empty catalog may be published."""
    assert shrink_refusal(plan_of([]), 0.0) == ""


def test_empty_catalog_is_refused() -> None:
    """An empty catalog that would replace published images is refused."""
    reason = shrink_refusal(plan_of([], previous=previous_of(3)), 0.5)
    assert "empty" in reason and "3" in reason


def test_drops_above_max_shrink_are_refused() -> None:
    """Dropping more than max_shrink of the published images is refused."""
    plan = plan_of([image(N1, "0.tgz")], previous=previous_of(4))
    assert len(plan.dropped) == 3
    reason = shrink_refusal(plan, 0.5)
    assert "3 of 4" in reason


def test_drops_at_max_shrink_are_allowed() -> None:
    """Dropping exactly max_shrink of the published images is allowed."""
    plan = plan_of([image(N1, "0.tgz"), image(N2, "1.tgz")], previous=previous_of(4))
    assert shrink_refusal(plan, 0.5) == ""


def test_max_shrink_one_disables_the_guard() -> None:
    """max_shrink = 1.0 allows any shrink, even to an empty catalog."""
    assert shrink_refusal(plan_of([], previous=previous_of(3)), 1.0) == ""
    assert shrink_refusal(plan_of([image(N1, "x.tgz")], previous=previous_of(3)), 1.0) == ""


def test_failed_entries_do_not_count_as_dropped() -> None:
    """Malformed entries whose url is still listed are not drops."""
    plan = plan_of([image("bad", f"{i}.tgz") for i in range(3)], previous=previous_of(3))
    assert plan.dropped == ()
    assert shrink_refusal(plan, 0.0) == ""


# -- build_catalog -----------------------------------------------------------------------------


def test_build_only_url_changes() -> None:
    """A verified image is published with every field as upstream wrote it, except its url."""
    entry = {
        "z": 1,
        "name": N1,
        "url": "starter/x%20y.tgz",
        "hypervisors-supported": ["xen"],
        "n": 1.0,
    }
    plan = plan_of([entry], extra="kept")
    outcome = build(plan, all_ready(plan))
    (published,) = outcome.images
    assert list(published) == list(entry)
    assert published == {**entry, "url": f"images/{N1}/x%20y.tgz"}
    assert isinstance(published["n"], float)
    assert outcome.failed == ()
    assert outcome.referenced == frozenset({f"images/{N1}/x y.tgz"})
    assert outcome.published == {
        BASE + "starter/x%20y.tgz": [f"images/{N1}/x%20y.tgz", f"images/{N1}/x y.tgz"]
    }


def test_build_public_base_makes_absolute_urls() -> None:
    """With a public base, published urls are absolute under it."""
    plan = plan_of([image(N1, "x.tgz")])
    outcome = build(plan, all_ready(plan), public_base="http://front.example/eustore/up/")
    assert outcome.images[0]["url"] == f"http://front.example/eustore/up/images/{N1}/x.tgz"


def test_build_new_failed_image_is_left_out() -> None:
    """An image that fails with no previous entry is left out and reported."""
    plan = plan_of([image(N1, "x.tgz"), image(N2, "y.tgz")])
    outcome = build(plan, {plan.steps[0].dest})
    assert [i["name"] for i in outcome.images] == [N1]
    assert [s.name for s in outcome.failed] == [N2]
    assert outcome.referenced == frozenset({plan.steps[0].dest})
    assert BASE + "y.tgz" not in outcome.published


def test_build_failed_step_keeps_previous_entry_whole() -> None:
    """An image that fails keeps its previously published entry, whole, and its file."""
    old_url = f"images/{N1}/x.tgz"
    old_entry = {"name": N1, "url": old_url, "description": "old text", "extra": [1]}
    plan = plan_of([image(N2, "x.tgz", description="new text")], previous={BASE + "x.tgz": old_url})
    assert needs_previous_entries(plan, set())
    outcome = build(
        plan,
        set(),
        previous_entries={old_url: old_entry},
        url_to_dest={old_url: f"images/{N1}/x.tgz"},
    )
    assert outcome.images == [old_entry]
    assert outcome.published == {BASE + "x.tgz": [old_url, f"images/{N1}/x.tgz"]}
    assert outcome.referenced == frozenset({f"images/{N1}/x.tgz"})
    assert len(outcome.failed) == 1


def test_build_malformed_entry_keeps_previous_entry() -> None:
    """A malformed entry whose url was published before keeps that entry in its place."""
    old_url = f"images/{N1}/x.tgz"
    old_entry = {"name": N1, "url": old_url}
    plan = plan_of(
        [image(N2, "a.tgz"), image("garbage", "x.tgz"), image(N3, "b.tgz")],
        previous={BASE + "x.tgz": old_url},
    )
    outcome = build(
        plan, all_ready(plan), previous_entries={old_url: old_entry}, url_to_dest={old_url: old_url}
    )
    assert [i["name"] for i in outcome.images] == [N2, N1, N3]
    assert outcome.images[1] is old_entry
    assert old_url in outcome.referenced


def test_build_previous_entry_missing_is_left_out() -> None:
    """A failed image whose previous entry cannot be found is left out."""
    plan = plan_of([image(N2, "x.tgz")], previous={BASE + "x.tgz": "images/gone"})
    outcome = build(plan, set())
    assert outcome.images == [] and outcome.referenced == frozenset()


def test_build_kept_entry_without_known_file_references_nothing() -> None:
    """A kept entry whose file is unknown is published but references no dest."""
    old_url = f"images/{N1}/x.tgz"
    plan = plan_of([image(N2, "x.tgz")], previous={BASE + "x.tgz": old_url})
    outcome = build(plan, set(), previous_entries={old_url: {"name": N1, "url": old_url}})
    assert outcome.images == [{"name": N1, "url": old_url}]
    assert outcome.referenced == frozenset()
    assert outcome.published == {BASE + "x.tgz": [old_url, ""]}


def test_build_links_and_reuses_are_published() -> None:
    """Reused and linked images are published once their dests are verified."""
    inventory = Inventory()
    inventory.add(N1, f"{UP}/images/{N1}/a.tgz")
    inventory.add(N2, f"other/images/{N2}/b.tgz")
    plan = plan_of([image(N1, "a.tgz"), image(N2, "b.tgz")], inventory=inventory)
    assert [s.action for s in plan.steps] == [Action.REUSE, Action.LINK]
    outcome = build(plan, all_ready(plan))
    assert [i["url"] for i in outcome.images] == [f"images/{N1}/a.tgz", f"images/{N2}/b.tgz"]
    assert outcome.referenced == frozenset({f"images/{N1}/a.tgz", f"images/{N2}/b.tgz"})


def test_build_fail_step_is_never_published_even_if_dest_ready() -> None:
    """A failed step is never published as verified, even with an empty dest in `verified`."""
    plan = plan_of([image("bad", "x.tgz")])
    outcome = build(plan, {""})
    assert outcome.images == []


def test_needs_previous_entries() -> None:
    """Previous entries are needed only when a step that had one is not ready."""
    url = BASE + "x.tgz"
    plan = plan_of([image(N1, "x.tgz")], previous={url: f"images/{N1}/x.tgz"})
    assert needs_previous_entries(plan, {f"images/{N1}/x.tgz"}) is False
    assert needs_previous_entries(plan, set()) is True
    assert needs_previous_entries(plan_of([image(N1, "x.tgz")]), set()) is False


def test_build_round_trips_through_dump_and_parse() -> None:
    """The built catalog dumps to a document that parses with every image well formed."""
    plan = plan_of([image(N1, "x.tgz"), image(N4, "é/ü%20v.tgz")], generator={"v": 1})
    outcome = build(plan, all_ready(plan))
    cat = parse_catalog(dump_catalog(plan.top, outcome.images))
    assert cat.bad == ()
    assert list(cat.top) == ["version", "generator", "images"]
    assert [i.url for i in cat.images] == [f"images/{N1}/x.tgz", f"images/{N4}/%C3%BC%20v.tgz"]


def test_second_sync_reuses_everything() -> None:
    """After a full publish, the next plan of the same catalog reuses every image."""
    images = [image(N1, "x.tgz"), image(N2, "y.tgz")]
    plan = plan_of(images)
    outcome = build(plan, all_ready(plan))
    previous, _entries, _dests = publish(plan, outcome)
    inventory = Inventory()
    for dest in outcome.referenced:
        inventory.add(dest.split("/")[1], f"{UP}/{dest}")
    again = plan_of(images, previous=previous, inventory=inventory)
    assert [s.action for s in again.steps] == [Action.REUSE, Action.REUSE]
    assert again.dropped == ()


def test_failed_same_url_entry_does_not_duplicate_its_twin() -> None:
    """A url listed twice with two names is published once, sync after sync."""
    images = [image(N1, "x.tgz"), image(N2, "x.tgz")]
    plan = plan_of(images)
    outcome = build(plan, {plan.steps[0].dest})
    assert len(outcome.images) == 1
    previous, entries, dests = publish(plan, outcome)
    inventory = Inventory()
    inventory.add(N1, f"{UP}/{plan.steps[0].dest}")
    again = plan_of(images, previous=previous, inventory=inventory)
    second = build(again, {again.steps[0].dest}, previous_entries=entries, url_to_dest=dests)
    assert len(second.images) == 1
