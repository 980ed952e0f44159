"""Summaries of samples, the printed tables, and the issue's targets with PASS/FAIL."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from tools import Sample

MiB = 1024 * 1024


def summarise(samples: Sequence[Sample], nbytes: int = 0) -> dict[str, Any]:
    """Median and min-max wall time (and MB/s when `nbytes`), peak RSS, over the good runs."""
    good = [s for s in samples if s.ok]
    doc: dict[str, Any] = {
        "runs": [
            {
                "wall_s": round(s.wall, 4),
                "rss_mib": round(s.rss_kib / 1024, 1),
                "rc": s.rc,
                "load1_before": round(s.load1, 2),
            }
            | ({"note": s.note} if s.note else {})
            for s in samples
        ],
        "ok": bool(samples) and len(good) == len(samples),
    }
    if not good:
        return doc
    walls = [s.wall for s in good]
    doc |= {
        "median_s": round(statistics.median(walls), 4),
        "min_s": round(min(walls), 4),
        "max_s": round(max(walls), 4),
        "rss_mib_max": round(max(s.rss_kib for s in good) / 1024, 1),
        "rss_mib_median": round(statistics.median(s.rss_kib for s in good) / 1024, 1),
    }
    if nbytes:
        doc |= {
            "mb_s_median": round(nbytes / doc["median_s"] / 1e6, 1),
            "mb_s_min": round(nbytes / doc["max_s"] / 1e6, 1),
            "mb_s_max": round(nbytes / doc["min_s"] / 1e6, 1),
        }
    return doc


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in lines
    )


def files_table(result: dict[str, Any]) -> str:
    """The table of one big/small corpus: each contender, its throughput, RSS and ratio."""
    rows = []
    for key, t in result["tools"].items():
        if t.get("skipped"):
            rows.append([t["label"], "skipped: " + t["skipped"], "", "", "", ""])
            continue
        if "median_s" not in t:
            rows.append([t["label"], "FAILED: " + t.get("error", "?"), "", "", "", ""])
            continue
        ratio = result["ratios"].get(key)
        rows.append(
            [
                t["label"],
                f"{t['median_s']:.3f} ({t['min_s']:.3f}-{t['max_s']:.3f})",
                f"{t['mb_s_median']:.0f} ({t['mb_s_min']:.0f}-{t['mb_s_max']:.0f})",
                f"{t['rss_mib_max']:.1f}",
                "" if key == "eumirror" else f"{fmt(ratio)}x",
                "" if t["ok"] else "some runs failed: " + t.get("error", ""),
            ]
        )
    headers = ["contender", "wall s median (min-max)", "MB/s (min-max)", "peak RSS MiB"]
    return table([*headers, "eumirror vs it", "note"], rows)


def catalog_table(result: dict[str, Any]) -> str:
    rows = []
    for key, label in (
        ("first_sync", "first sync into an empty root"),
        ("noop", "no-op: unchanged catalog, synced root"),
        ("change", "1 % change: next catalog version"),
    ):
        t = result.get(key)
        if not t or "median_s" not in t:
            rows.append([label, "FAILED" if t else "not run", "", "", "", ""])
            continue
        pp = t.get("plan_publish")
        reqs = t.get("tarball_requests", [])
        rows.append(
            [
                label,
                f"{t['median_s']:.3f} ({t['min_s']:.3f}-{t['max_s']:.3f})",
                f"{pp['median_s']:.3f} ({pp['min_s']:.3f}-{pp['max_s']:.3f})" if pp else "",
                f"{t['rss_mib_max']:.1f}",
                ",".join(str(n) for n in reqs),
                "" if t["ok"] else "some runs failed: " + t.get("error", ""),
            ]
        )
    headers = ["eumirror run", "wall s median (min-max)", "plan+publish s", "peak RSS MiB"]
    return table([*headers, "tarball requests/run", "note"], rows)


# -- targets ---------------------------------------------------------------------------------------
def _target(
    tid: str, text: str, value: float | None, bound: float, op: str, unit: str
) -> dict[str, Any]:
    passed: bool | None
    if value is None:
        passed = None
    elif op == ">=":
        passed = value >= bound
    elif op == ">":
        passed = value > bound
    elif op == "<=":
        passed = value <= bound
    else:
        passed = value < bound
    return {
        "id": tid,
        "target": text,
        "value": None if value is None else round(value, 3),
        "bound": f"{op} {bound:g}{unit}",
        "unit": unit,
        "result": {True: "PASS", False: "FAIL", None: "N/A"}[passed],
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets; one whose eumirror runs did not all succeed fails whatever its value."""
    out = _targets(results)
    corpora = results["corpora"]
    for t in out:
        kind = t["id"].split("-")[0]
        cases = {"big": ["big"], "small": ["small"], "rss": ["big", "small"]}.get(kind)
        if cases is None:
            cases = []
            doc = corpora.get("catalog", {}).get(kind, {})
            failed = bool(doc) and not doc.get("ok", True)
        else:
            failed = any(
                not corpora[c]["tools"]["eumirror"].get("ok", True) for c in cases if c in corpora
            )
        if failed:
            t["result"] = "FAIL"
            t["target"] += " [some eumirror runs failed]"
    return out


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    corpora = results["corpora"]
    big = corpora.get("big", {})
    small = corpora.get("small", {})
    cat = corpora.get("catalog", {})
    out: list[dict[str, Any]] = []
    if big:
        r = big["ratios"]
        out.append(
            _target(
                "big-vs-rclone",
                "big: eumirror throughput vs rclone download+verify",
                r.get("rclone"),
                1.5,
                ">=",
                "x",
            )
        )
        out.append(
            _target(
                "big-vs-rclone-2md5",
                "big: eumirror vs rclone + 2 parallel md5sum",
                r.get("rclone-2md5"),
                1.0,
                ">",
                "x",
            )
        )
        out.append(
            _target(
                "big-vs-md5-limit",
                "big: eumirror vs the 2-process md5sum rate",
                r.get("md5sum-2p"),
                0.5,
                ">=",
                "x",
            )
        )
    if small:
        out.append(
            _target(
                "small-vs-curl",
                "small: eumirror throughput vs curl --parallel",
                small["ratios"].get("curl"),
                1.1,
                ">=",
                "x",
            )
        )
    rss = [
        c["tools"]["eumirror"].get("rss_mib_max")
        for c in (big, small)
        if c and "eumirror" in c["tools"]
    ]
    rss = [v for v in rss if v is not None]
    if big or small:
        out.append(
            _target(
                "rss-c4",
                "peak RSS at concurrency 4 (big and small)",
                max(rss) if rss else None,
                100,
                "<=",
                " MiB",
            )
        )
    flat = results.get("rss_scale")
    if flat is not None:
        base = big.get("tools", {}).get("eumirror", {}).get("rss_mib_max") if big else None
        bigger = flat.get("rss_mib_max")
        growth = bigger / base if base and bigger else None
        out.append(
            _target(
                "rss-flat-4x",
                "peak RSS with 4x bigger tarballs / with big ones",
                growth,
                1.1,
                "<=",
                "x",
            )
        )
    if cat:
        noop = cat.get("noop", {})
        change = cat.get("change", {})
        out.append(
            _target(
                "noop-time",
                "unchanged catalog: whole `sync --once` process (median)",
                noop.get("median_s"),
                0.5,
                "<",
                " s",
            )
        )
        reqs = noop.get("tarball_requests")
        out.append(
            _target(
                "noop-requests",
                "unchanged catalog: tarball requests (max over runs)",
                max(reqs) if reqs else None,
                0,
                "<=",
                "",
            )
        )
        pp = change.get("plan_publish") or {}
        out.append(
            _target(
                "change-plan-publish",
                "1 % change: plan and publish, downloads excluded",
                pp.get("median_s"),
                2.0,
                "<",
                " s",
            )
        )
        out.append(
            _target(
                "change-rss", "1 % change: peak RSS", change.get("rss_mib_max"), 350, "<", " MiB"
            )
        )
    return out


def targets_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [
            t["result"],
            t["target"],
            "-" if t["value"] is None else f"{t['value']:g}{t['unit']}",
            t["bound"],
        ]
        for t in rows
    ]
    return table(["result", "target", "measured", "needed"], body)
