"""The publisher's side: `catalog refresh` fills in names from a folder of tarballs."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from eumirror.commands.publisher import (
    print_names,
    refresh_catalog,
    refresh_document,
    tarball_file_name,
)
from eumirror.core.errors import CatalogError, EumirrorError
from eumirror.core.names import name_of_chunks

DATA_A = b"tarball a\n"
DATA_B = b"tarball b with a space\n"
NAME_A = name_of_chunks([DATA_A])
NAME_B = name_of_chunks([DATA_B])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "a.tgz").write_bytes(DATA_A)
    (pub / "b c.tgz").write_bytes(DATA_B)
    (pub / "empty.tgz").write_bytes(b"")
    (tmp_path / "outside.tgz").write_bytes(b"secret")
    return pub


def document(*images: Any) -> dict[str, Any]:
    return {"version": "eustore-catalog-2011-12-29", "images": list(images), "extra": "kept"}


def test_names_are_filled_in(folder: Path) -> None:
    """Each image's name is set from the tarball its url's file name points to."""
    doc = document(
        {"url": "starter-emis/a.tgz", "description": "no name yet"},
        {"name": "TBD", "url": "http://emis.example/x/b%20c.tgz?sig=1"},
        {"name": "0000000000", "url": "empty.tgz", "os": "centos"},
    )
    with capture_logs():
        out, problems = refresh_document(doc, folder)
    assert problems == []
    assert [img["name"] for img in out["images"]] == [NAME_A, NAME_B, "1136548044"]
    assert out["images"][0]["description"] == "no name yet"
    assert out["images"][2]["os"] == "centos"
    assert out["extra"] == "kept"


def test_only_names_change(folder: Path) -> None:
    """Apart from names, the document is returned exactly as given, key order included."""
    doc = document({"z": [1, 2.0, None], "url": "a.tgz", "name": "x", "é": "ü"})
    expected = copy.deepcopy(doc)
    expected["images"][0]["name"] = NAME_A
    with capture_logs():
        out, _ = refresh_document(doc, folder)
    assert json.dumps(out) == json.dumps(expected)


def test_changed_names_are_logged(folder: Path) -> None:
    """A name that changes is logged with its old and new values; a correct one is not."""
    doc = document({"name": "1", "url": "a.tgz"}, {"name": NAME_B, "url": "b%20c.tgz"})
    with capture_logs() as logs:
        refresh_document(doc, folder)
    updates = [e for e in logs if e["event"] == "name_updated"]
    assert updates == [
        {"event": "name_updated", "image": 0, "old": "1", "new": NAME_A, "log_level": "info"}
    ]


def test_missing_tarball_is_reported_and_name_kept(folder: Path) -> None:
    """A missing tarball keeps its image's name and is reported with its file name."""
    doc = document({"name": "4150406313", "url": "starter/gone.tgz"}, {"url": "a.tgz"})
    with capture_logs():
        out, problems = refresh_document(doc, folder)
    assert out["images"][0]["name"] == "4150406313"
    assert out["images"][1]["name"] == NAME_A
    (problem,) = problems
    assert "#0" in problem and "starter/gone.tgz" in problem
    assert f"no tarball at {folder / 'gone.tgz'} or {folder / 'starter' / 'gone.tgz'}" in problem
    assert "put the tarball there or pass --dir" in problem


def test_missing_tarball_without_name_stays_nameless(folder: Path) -> None:
    """A missing tarball for an image without a name leaves it without one."""
    with capture_logs():
        out, problems = refresh_document(document({"url": "gone.tgz"}), folder)
    assert "name" not in out["images"][0]
    assert len(problems) == 1


@pytest.mark.parametrize(
    "url",
    [
        "a%2fb.tgz",
        "..%2foutside.tgz",
        "%2e%2e",
        "..",
        ".",
        "dir/",
        "",
        "a%5cb.tgz",
        "..%5coutside.tgz",
        "a%00.tgz",
        "http://emis.example/",
    ],
)
def test_unsafe_url_file_names_are_refused(folder: Path, url: str) -> None:
    """A url whose file name is empty, a dot name or holds a slash/backslash/NUL is refused."""
    doc = document({"name": "4150406313", "url": url})
    with capture_logs():
        out, problems = refresh_document(doc, folder)
    assert out["images"][0]["name"] == "4150406313"
    assert len(problems) == 1 and "#0" in problems[0]


@pytest.mark.parametrize("url", ["../outside.tgz", "../../outside.tgz", "/outside.tgz"])
def test_parent_segments_are_ignored(folder: Path, url: str) -> None:
    """Only the last segment is used, so '../' cannot reach a file outside the folder."""
    with capture_logs():
        out, problems = refresh_document(document({"name": "x", "url": url}), folder)
    assert out["images"][0]["name"] == "x"
    assert problems == [
        f"image #0 ({url}): no tarball at {folder / 'outside.tgz'}; its name is kept: "
        "put the tarball there or pass --dir"
    ]


def test_tarball_file_name() -> None:
    """The publisher's file name is the percent-decoded last segment of the url's path."""
    assert tarball_file_name("starter-emis/euca-ubuntu%2012.04.tgz") == "euca-ubuntu 12.04.tgz"
    assert tarball_file_name("http://h/a/b.tgz?x=../../y#z") == "b.tgz"
    with pytest.raises(EumirrorError):
        tarball_file_name("a%2f..")


@pytest.mark.parametrize(
    "entry", ["a string", None, 5, ["a.tgz"], {"name": "x"}, {"url": 5}, {"url": ""}]
)
def test_entries_without_a_url_are_reported(folder: Path, entry: Any) -> None:
    """An entry that is not an object or has no string url is reported and left as it is."""
    doc = document(entry, {"url": "a.tgz"})
    with capture_logs():
        out, problems = refresh_document(doc, folder)
    assert out["images"][0] == entry
    assert out["images"][1]["name"] == NAME_A
    assert problems == ["image #0 has no url"]


@pytest.mark.parametrize("doc", [[], "x", None, {"version": "v"}, {"images": {}}])
def test_document_must_have_an_images_list(folder: Path, doc: Any) -> None:
    """A document that is not an object with an images list is a CatalogError."""
    with pytest.raises(CatalogError):
        refresh_document(doc, folder)


def test_directory_in_place_of_tarball_is_reported(folder: Path) -> None:
    """A url naming a folder rather than a file is reported, not raised."""
    (folder / "sub.tgz").mkdir()
    with capture_logs():
        _, problems = refresh_document(document({"url": "sub.tgz"}), folder)
    assert len(problems) == 1


def test_sample_catalog_names_match_its_tarballs(tmp_path: Path) -> None:
    """Refreshing the shipped sample catalog from its tarballs leaves every name unchanged."""
    from importlib.resources import as_file, files

    sample = files("eumirror").joinpath("sample")
    flat = tmp_path / "flat"
    flat.mkdir()
    with as_file(sample) as root:
        for tarball in Path(root).rglob("*.tgz"):
            (flat / tarball.name).write_bytes(tarball.read_bytes())
        doc = json.loads((Path(root) / "catalog").read_bytes())
    before = [img["name"] for img in doc["images"]]
    with capture_logs():
        out, problems = refresh_document(doc, flat)
    assert problems == []
    assert [img["name"] for img in out["images"]] == before


# -- refresh_catalog / print_names -------------------------------------------------------------


def write_catalog(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_refresh_catalog_prints_the_document(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --in-place, the refreshed catalog is printed as UTF-8 JSON and the file untouched."""
    catalog = write_catalog(folder / "catalog", document({"url": "a.tgz", "d": "Ωmega"}))
    before = catalog.read_bytes()
    with capture_logs():
        code = refresh_catalog(catalog, None, in_place=False)
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(out)["images"][0]["name"] == NAME_A
    assert "Ωmega" in out
    assert catalog.read_bytes() == before


def test_refresh_catalog_in_place(folder: Path, tmp_path: Path) -> None:
    """With --in-place, the catalog is replaced with indent 2, its mode kept, no temp file left."""
    catalog = write_catalog(tmp_path / "catalog", document({"url": "x/a.tgz"}))
    os.chmod(catalog, 0o640)
    with capture_logs():
        code = refresh_catalog(catalog, folder, in_place=True)
    assert code == 0
    text = catalog.read_text(encoding="utf-8")
    assert json.loads(text)["images"][0]["name"] == NAME_A
    assert '\n  "images": [' in text and text.endswith("\n")
    assert stat.S_IMODE(catalog.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "outside.tgz", "pub"]


def test_refresh_catalog_missing_tarball_exits_1(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing tarball makes the exit code 1 and prints a line on stderr."""
    catalog = write_catalog(folder / "catalog", document({"name": "1", "url": "gone.tgz"}))
    with capture_logs():
        code = refresh_catalog(catalog, None, in_place=True)
    err = capsys.readouterr().err
    assert code == 1
    assert "gone.tgz" in err
    assert json.loads(catalog.read_bytes())["images"][0]["name"] == "1"


def test_refresh_catalog_refuses_invalid_json(folder: Path) -> None:
    """A catalog that is not strict JSON is a CatalogError naming it."""
    catalog = folder / "catalog"
    catalog.write_bytes(b'{"images": [], "images": []}')
    with pytest.raises(CatalogError, match="catalog"):
        refresh_catalog(catalog, None, in_place=False)


def test_print_names(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`name` prints NAME  FILE per file in order; an unreadable one exits 1 on stderr."""
    paths = [folder / "a.tgz", folder / "missing.tgz", folder / "empty.tgz"]
    code = print_names(paths)
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines() == [
        f"{NAME_A}  {paths[0]}",
        f"1136548044  {paths[2]}",
    ]
    assert "missing.tgz" in captured.err


def test_tarball_found_by_the_urls_relative_path(folder: Path) -> None:
    """A tarball absent by file name in DIR is found by the url's relative path under DIR."""
    (folder / "starter-emis").mkdir()
    (folder / "starter-emis" / "only-here.tgz").write_bytes(DATA_B)
    (folder / "a.tgz").rename(folder / "starter-emis" / "a.tgz")
    (folder / "starter-emis" / "b c.tgz").write_bytes(DATA_A)
    doc = document(
        {"name": "x", "url": "starter-emis/only-here.tgz"},
        {"name": "x", "url": "starter-emis/a.tgz"},
        {"name": "x", "url": "starter-emis/b%20c.tgz"},
    )
    with capture_logs():
        out, problems = refresh_document(doc, folder)
    assert problems == []
    # The file name in DIR comes first (`b c.tgz` beside, not the one under starter-emis/).
    assert [i["name"] for i in out["images"]] == [NAME_B, NAME_A, NAME_B]


def test_refresh_of_the_shipped_sample_restores_its_names(tmp_path: Path) -> None:
    """The sample shipped in the package (tarballs in subfolders) refreshes with no problem."""
    sample = Path(__file__).resolve().parent.parent / "eumirror" / "sample"
    copy_of = tmp_path / "sample"
    shutil.copytree(sample, copy_of)
    original = json.loads((copy_of / "catalog").read_text())
    doc = copy.deepcopy(original)
    for image in doc["images"]:
        image["name"] = "PLACEHOLDER"
    with capture_logs():
        out, problems = refresh_document(doc, copy_of)
    assert problems == []
    assert out == original
