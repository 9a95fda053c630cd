"""Records and what is made of them: medians and spreads, ratios, the table, results.json,
and the markdown for ``bench/RESULTS.md``.

One record per (scenario, proxy): the median over its runs of each figure, the min-max
spread of the main ones, and every run's raw sample. Ratios compare meshfast with Envoy and
with HAProxy within one scenario of one run of the harness, never across runs.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RATIO_FIELDS",
    "Record",
    "RunSample",
    "aggregate",
    "fill_added_latency",
    "filter_overheads",
    "overhead_summary",
    "ratios",
    "render_markdown",
    "render_table",
    "write_results",
]

RATIO_FIELDS = ("cpu_us_per_req", "p50_ms", "p99_ms", "rps", "rss_peak_mib", "ready_ms")
SPREAD_FIELDS = ("rps", "cpu_us_per_req", "p50_ms", "p99_ms")


@dataclass(frozen=True)
class RunSample:
    """One measured run of one proxy in one scenario."""

    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    quiet: bool
    busy_percent: dict[int, float]
    cpu_us_per_req: float | None = None
    cpu_user_us_per_req: float | None = None
    cpu_sys_us_per_req: float | None = None
    upstream_cpu_us_per_req: float | None = None
    rss_idle_mib: float | None = None
    rss_peak_mib: float | None = None
    ready_ms: float | None = None
    threads: int | None = None
    error_detail: dict[str, int] = field(default_factory=dict)


@dataclass
class Record:
    scenario: str
    proxy: str
    workers: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    cpu_us_per_req: float | None
    rss_idle_mib: float | None
    rss_peak_mib: float | None
    ready_ms: float | None
    errors: int
    runs: int
    # beyond the required fields
    cpu_user_us_per_req: float | None = None
    cpu_sys_us_per_req: float | None = None
    upstream_cpu_us_per_req: float | None = None
    threads: int | None = None
    requests: int = 0
    quiet: bool = True
    spread: dict[str, list[float]] = field(default_factory=dict)
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    # The first run's start-to-ready: a cold start (meshfast's snapshot cache is empty
    # then; later runs of the same config start from it).
    ready_first_ms: float | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def aggregate(scenario: str, proxy: str, workers: int, samples: Sequence[RunSample]) -> Record:
    """Medians over the runs (errors and requests are totals), with min-max spreads."""
    if not samples:
        raise ValueError("no samples")

    def med(name: str, digits: int = 3) -> float | None:
        return _round(_median([getattr(s, name) for s in samples]), digits)

    spread: dict[str, list[float]] = {}
    for name in SPREAD_FIELDS:
        values = [v for s in samples if (v := getattr(s, name)) is not None]
        if values:
            spread[name] = [round(min(values), 3), round(max(values), 3)]
    threads = [s.threads for s in samples if s.threads is not None]
    return Record(
        scenario=scenario,
        proxy=proxy,
        workers=workers,
        rps=med("rps", 1) or 0.0,
        p50_ms=med("p50_ms") or 0.0,
        p90_ms=med("p90_ms") or 0.0,
        p99_ms=med("p99_ms") or 0.0,
        p999_ms=med("p999_ms") or 0.0,
        cpu_us_per_req=med("cpu_us_per_req", 2),
        rss_idle_mib=med("rss_idle_mib", 1),
        rss_peak_mib=med("rss_peak_mib", 1),
        ready_ms=med("ready_ms", 1),
        ready_first_ms=_round(samples[0].ready_ms, 1),
        errors=sum(s.errors for s in samples),
        runs=len(samples),
        cpu_user_us_per_req=med("cpu_user_us_per_req", 2),
        cpu_sys_us_per_req=med("cpu_sys_us_per_req", 2),
        upstream_cpu_us_per_req=med("upstream_cpu_us_per_req", 2),
        threads=max(threads) if threads else None,
        requests=sum(s.requests for s in samples),
        quiet=all(s.quiet for s in samples),
        spread=spread,
        samples=[asdict(s) for s in samples],
    )


def fill_added_latency(records: Sequence[Record]) -> None:
    """``added_p50_ms``/``added_p99_ms``: a proxy's latency over direct in the same scenario."""
    direct = {r.scenario: r for r in records if r.proxy == "direct"}
    for r in records:
        base = direct.get(r.scenario)
        if base is not None and r.proxy != "direct":
            r.added_p50_ms = round(r.p50_ms - base.p50_ms, 3)
            r.added_p99_ms = round(r.p99_ms - base.p99_ms, 3)


def ratios(records: Sequence[Record]) -> list[dict[str, Any]]:
    """meshfast/Envoy and meshfast/HAProxy per scenario, for each of :data:`RATIO_FIELDS`."""
    by_key = {(r.scenario, r.proxy): r for r in records}
    out: list[dict[str, Any]] = []
    for r in records:
        if r.proxy != "meshfast":
            continue
        for peer in ("envoy", "haproxy"):
            other = by_key.get((r.scenario, peer))
            if other is None:
                continue
            row: dict[str, Any] = {"scenario": r.scenario, "vs": peer}
            for name in RATIO_FIELDS:
                mine, theirs = getattr(r, name), getattr(other, name)
                ok = mine is not None and theirs is not None and theirs > 0
                row[name] = round(mine / theirs, 3) if ok else None
            if r.added_p99_ms is not None and other.added_p99_ms:
                row["added_p99_ms"] = round(r.added_p99_ms / other.added_p99_ms, 3)
            out.append(row)
    return out


def _delta(record: Record, base: Record, name: str, digits: int) -> float | None:
    mine, theirs = getattr(record, name), getattr(base, name)
    return None if mine is None or theirs is None else round(mine - theirs, digits)


def filter_overheads(records: Sequence[Record]) -> list[dict[str, Any]]:
    """What each meshfast variant (``meshfast+noop-filter``, ...) costs over plain meshfast in
    the same scenario: CPU-µs/req (total and user) and p50/p99 differences, req/s ratio."""
    base = {r.scenario: r for r in records if r.proxy == "meshfast"}
    out: list[dict[str, Any]] = []
    for r in records:
        plain = base.get(r.scenario)
        if plain is None or not r.proxy.startswith("meshfast+"):
            continue

        out.append(
            {
                "scenario": r.scenario,
                "proxy": r.proxy,
                "over": "meshfast",
                "cpu_us_per_req": _delta(r, plain, "cpu_us_per_req", 2),
                "cpu_user_us_per_req": _delta(r, plain, "cpu_user_us_per_req", 2),
                "p50_ms": _delta(r, plain, "p50_ms", 3),
                "p99_ms": _delta(r, plain, "p99_ms", 3),
                "rps_ratio": round(r.rps / plain.rps, 3) if plain.rps > 0 else None,
            }
        )
    return out


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


# === text ===


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _spread(record: Record, name: str, digits: int) -> str:
    low_high = record.spread.get(name)
    if not low_high or record.runs < 2:
        return ""
    return f" ({low_high[0]:,.{digits}f}-{low_high[1]:,.{digits}f})"


TABLE_HEADER = (
    "scenario",
    "proxy",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "CPU-µs/req",
    "RSS idle/peak MiB",
    "ready ms (1st)",
    "errors",
    "quiet",
)


def _rows(records: Sequence[Record], *, spreads: bool) -> list[list[str]]:
    rows = []
    for r in records:
        rps = _fmt(r.rps, 0) + (_spread(r, "rps", 0) if spreads else "")
        cpu = _fmt(r.cpu_us_per_req, 1) + (_spread(r, "cpu_us_per_req", 1) if spreads else "")
        p99 = _fmt(r.p99_ms, 3)
        if r.added_p99_ms is not None and r.scenario == "same-core-latency":
            p99 += f" ({r.added_p99_ms:+.3f})"
        p50 = _fmt(r.p50_ms, 3)
        if r.added_p50_ms is not None and r.scenario == "same-core-latency":
            p50 += f" ({r.added_p50_ms:+.3f})"
        rss = (
            "-"
            if r.rss_idle_mib is None
            else f"{_fmt(r.rss_idle_mib, 1)} / {_fmt(r.rss_peak_mib, 1)}"
        )
        rows.append(
            [
                r.scenario,
                r.proxy,
                rps,
                p50,
                _fmt(r.p90_ms, 3),
                p99,
                _fmt(r.p999_ms, 3),
                cpu,
                rss,
                _ready(r),
                str(r.errors),
                "yes" if r.quiet else "NO",
            ]
        )
    return rows


def _ready(r: Record) -> str:
    """Median start-to-ready, and the first run's (a cold start) when there were more."""
    if r.ready_first_ms is None or r.runs < 2:
        return _fmt(r.ready_ms, 0)
    return f"{_fmt(r.ready_ms, 0)} ({_fmt(r.ready_first_ms, 0)})"


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ratio_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            row["scenario"],
            f"meshfast/{row['vs']}",
            _ratio_text(row.get("cpu_us_per_req")),
            _ratio_text(row.get("p99_ms")),
            _ratio_text(row.get("rps")),
            _ratio_text(row.get("rss_peak_mib")),
            _ratio_text(row.get("ready_ms")),
        ]
        for row in rows
    ]


RATIO_HEADER = ("scenario", "ratio", "CPU-µs/req", "p99", "req/s", "RSS peak", "ready")

OVERHEAD_HEADER = (
    "scenario",
    "variant",
    "+CPU-µs/req",
    "+user µs/req",
    "+p50 ms",
    "+p99 ms",
    "req/s",
)


def _signed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:+,.{digits}f}"


def _overhead_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            row["scenario"],
            f"{row['proxy']} - {row['over']}",
            _signed(row.get("cpu_us_per_req"), 1),
            _signed(row.get("cpu_user_us_per_req"), 1),
            _signed(row.get("p50_ms"), 3),
            _signed(row.get("p99_ms"), 3),
            _ratio_text(row.get("rps_ratio")),
        ]
        for row in rows
    ]


VARIANT_LABELS = {
    "meshfast+noop-filter": "no-op filter",
    "meshfast+header-filter": "header filter",
    "meshfast+async-filter": "async no-op filter",
}


def overhead_summary(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per scenario: ``python-filter: no-op filter: +X µs/req; header filter: ...``."""
    by_scenario: dict[str, list[str]] = {}
    for row in rows:
        what = VARIANT_LABELS.get(row["proxy"], row["proxy"].removeprefix("meshfast+"))
        by_scenario.setdefault(row["scenario"], []).append(
            f"{what}: {_signed(row.get('cpu_us_per_req'), 1)} µs/req"
        )
    return [f"{scenario}: {'; '.join(parts)}" for scenario, parts in by_scenario.items()]


def _plain(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_table(records: Sequence[Record], ratio_rows: Sequence[Mapping[str, Any]]) -> str:
    """The plain-text table printed at the end of a run."""
    text = _plain(TABLE_HEADER, _rows(records, spreads=True))
    if ratio_rows:
        text += "\n\n" + _plain(RATIO_HEADER, _ratio_rows(ratio_rows))
    overhead = filter_overheads(records)
    if overhead:
        text += "\n\n" + _plain(OVERHEAD_HEADER, _overhead_rows(overhead))
        summary = overhead_summary(overhead)
        text += "\n" + "\n".join(f"CPU over plain meshfast, {line}" for line in summary)
    return text


def render_markdown(results: Mapping[str, Any], records: Sequence[Record], plot: str) -> str:
    """``bench/RESULTS.md``-ready markdown: date, machine, versions, commit, table, plot."""
    machine = results.get("machine", {})
    versions = results.get("versions", {})
    settings = results.get("settings", {})
    skipped = results.get("skipped", [])
    ratio_rows = results.get("ratios", [])
    quiet = all(r.quiet for r in records)
    lines = [
        "# meshfast beside Envoy: latest full run",
        "",
        f"- **Date**: {results.get('date', '?')}",
        f"- **Commit**: `{results.get('commit', '?')}`",
        f"- **Machine**: {machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('memory_gib', '?')} GiB, Linux {machine.get('kernel', '?')}",
        "- **Versions**: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        f"- **Method**: {settings.get('workers', '?')} worker(s) per proxy, proxy pinned alone on"
        f" CPU {settings.get('proxy_cpus', '?')}, load generator and upstream"
        f" ({settings.get('upstream', '?')}) on CPU {settings.get('load_cpus', '?')};"
        f" {settings.get('runs', '?')} run(s) of {settings.get('duration_s', '?')} s each"
        f" after a {settings.get('warmup_s', '?')} s warm-up; median (min-max)."
        " CPU-µs/req = utime+stime of the proxy process over the run / requests.",
    ]
    if settings.get("quick"):
        lines.append("- **--quick run**: brief runs, figures are indicative only.")
    if not quiet:
        lines.append(
            "- **Warning**: the machine was not quiet before some runs (see `quiet`);"
            " treat those figures as noisy."
        )
    lines += ["", "## Figures", "", _markdown_table(TABLE_HEADER, _rows(records, spreads=True))]
    split = [
        [
            r.scenario,
            r.proxy,
            _fmt(r.cpu_user_us_per_req, 1),
            _fmt(r.cpu_sys_us_per_req, 1),
            _fmt(r.upstream_cpu_us_per_req, 1),
            str(r.threads) if r.threads is not None else "-",
        ]
        for r in records
        if r.cpu_us_per_req is not None
    ]
    if split:
        lines += [
            "",
            "## Where the proxy's CPU goes (µs per request, medians)",
            "",
            _markdown_table(("scenario", "proxy", "user", "kernel", "upstream", "threads"), split),
        ]
    if ratio_rows:
        lines += [
            "",
            "## Ratios (below 1 is better for meshfast, except req/s)",
            "",
            _markdown_table(RATIO_HEADER, _ratio_rows(ratio_rows)),
        ]
    overhead = results.get("filter_overhead") or filter_overheads(records)
    if overhead:
        lines += [
            "",
            "## Python filters: cost over plain meshfast (same scenario, medians)",
            "",
            *(f"- **{line}**" for line in overhead_summary(overhead)),
            "",
            _markdown_table(OVERHEAD_HEADER, _overhead_rows(overhead)),
        ]
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- {s['scenario']} / {s['proxy']}: {s['reason']}" for s in skipped]
    lines += [
        "",
        f"![CPU-µs per request and p99 per scenario]({plot})",
        "",
        "## What limits meshfast now",
        "",
        "_(To be written from these figures: where meshfast's CPU per request goes — user"
        " against kernel time above, see `cpu_user_us_per_req`/`cpu_sys_us_per_req` in"
        " results.json — and which scenario is furthest from HAProxy.)_",
        "",
    ]
    return "\n".join(lines)
