"""What a sync did, per upstream and for the whole run: the facts behind the log, /status, the
metrics and the exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class UpstreamReport:
    name: str
    started: float = 0.0
    ended: float = 0.0
    result: str = "failure"  # success | partial | failure
    images: int = 0
    reused: int = 0
    linked: int = 0
    downloaded: int = 0
    dropped: int = 0
    filtered: int = 0
    """Images the upstream lists that its include/exclude leave out."""
    deleted: int = 0
    downloaded_bytes: int = 0
    verify_failures: int = 0
    damaged: int = 0
    """Published or kept tarballs found damaged (and moved aside) by this sync's checks."""
    repaired: int = 0
    """Published tarballs that were missing or damaged and are verified again now."""
    unchanged: bool = False
    """Nothing to do: what is published is what the upstream and the configuration call for."""
    published: bool = False
    """A catalog with other bytes than before was published."""
    reason: str = ""
    """Why the catalog was rebuilt ("" when unchanged)."""
    error: str = ""
    hook_env: dict[str, str] = field(default_factory=dict)
    """For a new generation of an upstream with on_publish: the hook's environment."""
    failures: list[str] = field(default_factory=list)

    @property
    def catalog_ok(self) -> bool:
        return self.result in ("success", "partial")

    def to_doc(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunReport:
    upstreams: list[UpstreamReport]

    @property
    def ok(self) -> bool:
        return all(u.result == "success" for u in self.upstreams)

    @property
    def result(self) -> str:
        """success, partial (every catalog published, some image failed) or failure."""
        if self.ok:
            return "success"
        return "partial" if all(u.catalog_ok for u in self.upstreams) else "failure"


def add_totals(totals: Any, report: UpstreamReport) -> dict[str, Any]:
    """Counters that survive restarts, so metrics stay monotonic in daemon and timer mode."""
    base: dict[str, Any] = totals if isinstance(totals, dict) else {}
    runs = dict(base.get("runs") or {})
    runs[report.result] = int(runs.get(report.result, 0)) + 1
    return {
        **base,
        "runs": runs,
        "downloaded_bytes": int(base.get("downloaded_bytes", 0)) + report.downloaded_bytes,
        "verify_failures": int(base.get("verify_failures", 0))
        + report.verify_failures
        + report.damaged,
        "image_failures": int(base.get("image_failures", 0)) + len(report.failures),
    }
