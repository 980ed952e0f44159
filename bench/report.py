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
    """The table of one big/small/link corpus: each contender, its throughput, RSS and ratio
    (of medians, and of each eumirror run against the peer's median), and for the link corpus
    the connections open at once in each run."""
    conns = any("connections" in t for t in result["tools"].values())
    rows = []
    for key, t in result["tools"].items():
        if t.get("skipped"):
            rows.append([t["label"], "skipped: " + t["skipped"], "", "", "", "", ""][: 6 + conns])
            continue
        if "median_s" not in t:
            rows.append(
                [t["label"], "FAILED: " + t.get("error", "?"), "", "", "", "", ""][: 6 + conns]
            )
            continue
        ratio = result["ratios"].get(key)
        each = result.get("run_ratios", {}).get(key, [])
        row = [
            t["label"],
            f"{t['median_s']:.3f} ({t['min_s']:.3f}-{t['max_s']:.3f})",
            f"{t['mb_s_median']:.0f} ({t['mb_s_min']:.0f}-{t['mb_s_max']:.0f})",
            f"{t['rss_mib_max']:.1f}",
        ]
        if conns:
            row.append(" ".join(str(n) for n in t.get("connections", {}).get("peak", [])))
        row += [
            ""
            if key == "eumirror"
            else f"{fmt(ratio)}x (" + " ".join(f"{r:.2f}" for r in each) + ")",
            "" if t["ok"] else "some runs failed: " + t.get("error", ""),
        ]
        rows.append(row)
    headers = ["contender", "wall s median (min-max)", "MB/s (min-max)", "peak RSS MiB"]
    if conns:
        headers.append("connections at once/run")
    return table([*headers, "eumirror vs it (each eumirror run)", "note"], rows)


def catalog_table(result: dict[str, Any]) -> str:
    rows = []
    peer = result.get("first_sync_peer")
    for key, label in (
        ("first_sync", "first sync into an empty root"),
        ("first_sync_peer", "  peer: " + (peer or {}).get("label", "rclone --files-from-raw")),
        ("noop", "no-op: unchanged catalog, synced root"),
        ("change", "1 % change: next catalog version"),
    ):
        t = result.get(key)
        if t and t.get("skipped"):
            rows.append([label, "skipped: " + t["skipped"], "", "", "", ""])
            continue
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
                "" if t["ok"] else "some runs failed: " + str(t.get("error", "")),
            ]
        )
    headers = ["run", "wall s median (min-max)", "plan+publish s", "peak RSS MiB"]
    return table([*headers, "tarball requests/run", "note"], rows)


# -- targets ---------------------------------------------------------------------------------------
# A target holds only when EACH measured eumirror run meets it, not their median (issue 15): a
# ratio is judged per eumirror run, as the peer's median wall time over that run's wall time.
FIRST, SECOND, BOTH = "1", "2", "1+2"  # issue 9's first round, issue 15's second, or both


def _passes(value: float, bound: float, op: str) -> bool:
    if op == ">=":
        return value >= bound
    if op == ">":
        return value > bound
    if op == "<=":
        return value <= bound
    return value < bound


def _target(
    tid: str,
    rnd: str,
    text: str,
    values: Sequence[float | None] | None,
    loads: Sequence[float],
    bound: float,
    op: str,
    unit: str,
    judged: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One target: PASS only when there are values and every one meets the bound.

    `judged` are the eumirror summaries the values come from: one with a failed run fails the
    target whatever its values."""
    vals = [round(v, 3) for v in values or [] if v is not None]
    passed: bool | None
    if not values or len(vals) < len(values):
        passed = None
    else:
        passed = all(_passes(v, bound, op) for v in vals)
    failed = any(d and not d.get("ok", True) for d in judged)
    doc: dict[str, Any] = {
        "id": tid,
        "round": rnd,
        "target": text,
        "values": vals,
        "loads": [round(x, 2) for x in loads],
        "value": _worst(vals, op),
        "bound": f"{op} {bound:g}{unit}",
        "unit": unit,
        "result": {True: "PASS", False: "FAIL", None: "N/A"}[passed],
    }
    if failed:
        doc["result"] = "FAIL"
        doc["target"] = text + " [some eumirror runs failed]"
    return doc


def _worst(values: Sequence[float], op: str) -> float | None:
    """The run that decides the target: the lowest for a floor, the highest for a ceiling."""
    if not values:
        return None
    return min(values) if op.startswith(">") else max(values)


def _runs(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(doc.get("runs", [])) if doc else []


def _loads(doc: dict[str, Any] | None) -> list[float]:
    return [float(r.get("load1_before", 0.0)) for r in _runs(doc)]


def _per_run(doc: dict[str, Any] | None, field: str) -> list[float | None]:
    return [r.get(field) for r in _runs(doc)]


def _ratios(peer_median: float | None, eum: dict[str, Any] | None) -> list[float | None] | None:
    """Each eumirror run's throughput as a multiple of the peer's median run (None: unmeasured)."""
    if not peer_median or not eum:
        return None
    return [peer_median / r["wall_s"] if r.get("wall_s") else None for r in _runs(eum)]


def _best(tools: dict[str, Any], keys: Sequence[str]) -> float | None:
    """The fastest median wall time among these peers; None unless all of them were measured."""
    medians = [tools.get(k, {}).get("median_s") for k in keys]
    return None if not medians or None in medians else min(m for m in medians if m is not None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9's ten targets (round 1) and issue 15's (round 2), each judged on every run."""
    corpora = results["corpora"]
    big = corpora.get("big", {})
    small = corpora.get("small", {})
    cat = corpora.get("catalog", {})
    link = corpora.get("link", {})
    out: list[dict[str, Any]] = []

    def versus(
        tid: str, rnd: str, text: str, case: dict[str, Any], keys: Sequence[str], bound: float
    ) -> None:
        eum = case["tools"].get("eumirror")
        op = ">" if tid == "big-vs-rclone-2md5" else ">="
        values = _ratios(_best(case["tools"], keys), eum)
        out.append(_target(tid, rnd, text, values, _loads(eum), bound, op, "x", [eum or {}]))

    if big:
        versus("big-vs-rclone", FIRST, "big: vs rclone download+verify", big, ["rclone"], 1.5)
        versus(
            "big-vs-rclone-2md5",
            FIRST,
            "big: vs rclone + 2 parallel md5sum",
            big,
            ["rclone-2md5"],
            1.0,
        )
        versus(
            "big-vs-md5-limit", FIRST, "big: vs the 2-process md5sum rate", big, ["md5sum-2p"], 0.5
        )
    if small:
        versus("small-vs-curl", FIRST, "small: vs curl --parallel", small, ["curl"], 1.1)
    if big or small:
        docs = [c["tools"].get("eumirror") or {} for c in (big, small) if c]
        out.append(
            _target(
                "rss-c4",
                FIRST,
                "peak RSS at concurrency 4 (big runs, then small)",
                [v for d in docs for v in _per_run(d, "rss_mib")] or None,
                [x for d in docs for x in _loads(d)],
                100,
                "<=",
                " MiB",
                docs,
            )
        )
    flat = results.get("rss_scale")
    if flat is not None:
        base = big.get("tools", {}).get("eumirror", {}).get("rss_mib_max") if big else None
        bigger = flat.get("rss_mib_max")
        out.append(
            _target(
                "rss-flat-4x",
                FIRST,
                "peak RSS with 4x bigger tarballs / the most with big ones",
                [bigger / base] if base and bigger else None,
                _loads(flat),
                1.1,
                "<=",
                "x",
                [flat],
            )
        )
    if cat:
        noop = cat.get("noop", {})
        change = cat.get("change", {})
        pp = change.get("plan_publish") or {}
        noop_loads = _loads(noop)
        change_loads = _loads(change)
        out.append(
            _target(
                "noop-time",
                BOTH,
                "unchanged catalog: whole `sync --once` process",
                _per_run(noop, "wall_s") or None,
                noop_loads,
                0.5,
                "<",
                " s",
                [noop],
            )
        )
        out.append(
            _target(
                "noop-requests",
                FIRST,
                "unchanged catalog: tarball requests",
                noop.get("tarball_requests") or None,
                noop_loads,
                0,
                "<=",
                "",
                [noop],
            )
        )
        for tid, rnd, bound in (
            ("change-plan-publish", FIRST, 2.0),
            ("change-plan-publish-2", SECOND, 1.0),
        ):
            out.append(
                _target(
                    tid,
                    rnd,
                    "1 % change: plan and publish, downloads excluded",
                    pp.get("runs_s") or None,
                    change_loads,
                    bound,
                    "<",
                    " s",
                    [change],
                )
            )
        out.append(
            _target(
                "change-rss",
                BOTH,
                "1 % change: peak RSS",
                _per_run(change, "rss_mib") or None,
                change_loads,
                350,
                "<",
                " MiB",
                [change],
            )
        )
    if big:
        versus(
            "big-vs-md5-limit-2",
            SECOND,
            "big: vs the 2-process md5sum rate",
            big,
            ["md5sum-2p"],
            0.6,
        )
    if small:
        versus(
            "small-vs-best",
            SECOND,
            "small: vs the best of curl --parallel and rclone",
            small,
            ["curl", "rclone"],
            1.3,
        )
    if cat:
        first = cat.get("first_sync", {})
        peer = cat.get("first_sync_peer", {})
        out.append(
            _target(
                "first-sync-vs-rclone",
                SECOND,
                "100k first sync: vs rclone --files-from-raw + md5sum -c",
                _ratios(peer.get("median_s"), first),
                _loads(first),
                1.5,
                ">=",
                "x",
                [first],
            )
        )
        out.append(
            _target(
                "first-sync-rss",
                SECOND,
                "100k first sync: peak RSS",
                _per_run(first, "rss_mib") or None,
                _loads(first),
                300,
                "<=",
                " MiB",
                [first],
            )
        )
    if link:
        eum = link["tools"].get("eumirror") or {}
        versus(
            "link-vs-best",
            SECOND,
            "link: vs the best of aria2c -x8, rclone, curl --parallel-immediate",
            link,
            ["aria2c-x8", "rclone", "curl-immediate"],
            1.3,
        )
        out.append(
            _target(
                "link-connections",
                SECOND,
                "link: eumirror's connections open at once",
                (eum.get("connections") or {}).get("peak") or None,
                _loads(eum),
                32,
                "<=",
                "",
                [eum],
            )
        )
        out.append(
            _target(
                "link-rss",
                SECOND,
                "link: peak RSS",
                _per_run(eum, "rss_mib") or None,
                _loads(eum),
                150,
                "<=",
                " MiB",
                [eum],
            )
        )
    return out


def _shown(value: float, unit: str) -> str:
    spec = {"x": ".2f", " s": ".3f", " MiB": ".1f"}.get(unit, "g")
    return format(value, spec)


def targets_table(rows: list[dict[str, Any]]) -> str:
    """Each target with every run's value and the load average before that run."""
    body = [
        [
            t["result"],
            t.get("round", ""),
            t["target"],
            " ".join(_shown(v, t["unit"]) for v in t["values"])
            + (t["unit"] if t["values"] else "-"),
            " ".join(f"{x:.1f}" for x in t.get("loads", [])),
            t["bound"],
        ]
        for t in rows
    ]
    headers = ["result", "round", "target", "each run", "load1 before each", "needed (each run)"]
    return table(headers, body)
