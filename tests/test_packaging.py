"""The lock file the documented install and the Dockerfile use matches pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)")


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) for every requirement in requirements.lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), [])
        elif line.strip().startswith("--hash=sha256:") and current:
            pins[current][1].append(line.strip())
    return pins


def test_lock_pins_every_dependency_within_pyproject_bounds() -> None:
    """Each runtime dependency of pyproject.toml is pinned in the lock to a version it allows."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: refresh it (README)"
        assert req.specifier.contains(pins[name][0]), f"{name}=={pins[name][0]} is not {req}"


def test_every_pin_is_exact_and_hashed() -> None:
    """Every line of the lock is an exact pin with at least one sha256 (pip --require-hashes)."""
    pins = locked()
    assert len(pins) >= 6
    for name, (version, hashes) in pins.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), name
        assert hashes, f"{name} has no hash"


def test_units_run_the_documented_install() -> None:
    """The units' ExecStart= is the README's venv install, which the README creates."""
    readme = (REPO / "README.md").read_text()
    assert "python3 -m venv /opt/eumirror\n" in readme
    assert "pip install --require-hashes -r requirements.lock" in readme
    for unit in ("eumirror.service", "eumirror-sync.service"):
        text = (REPO / "systemd" / unit).read_text()
        assert "\nExecStart=/opt/eumirror/bin/eumirror sync" in text, unit


def test_dockerfile_installs_from_the_lock() -> None:
    """The image takes its dependencies from the lock, hash-checked, in a layer of their own."""
    text = (REPO / "Dockerfile").read_text()
    deps_stage = text.split("\nFROM ")[1]
    assert "COPY requirements.lock" in deps_stage
    assert "pip install --require-hashes -r /tmp/requirements.lock" in deps_stage
    assert "COPY eumirror" not in deps_stage, "a source change would rebuild the dependencies"


def test_container_final_stage_has_the_wheel_and_an_init() -> None:
    """The final stage installs the wheel (no source tree in a layer) and runs under tini."""
    final = (REPO / "Dockerfile").read_text().split("\nFROM ")[-1]
    assert "COPY --from=deps /opt/eumirror /opt/eumirror" in final
    assert "--mount=type=bind,from=wheel" in final
    assert "COPY eumirror" not in final
    assert "COPY . " not in final
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in final
    assert "tini" in final.split("ENTRYPOINT")[0]
