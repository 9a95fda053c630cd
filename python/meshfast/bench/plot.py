"""The benchmark's PNG: per scenario, CPU-µs per request and p99, every proxy side by side.

A standalone script (standard library + matplotlib, Agg backend) so that any Python with
matplotlib can draw it — the harness runs it with the bench venv's Python when meshfast's
own environment has no matplotlib::

    python plot.py results.json plot.png
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

ORDER = (
    "meshfast",
    "meshfast+noop-filter",
    "meshfast+header-filter",
    "envoy",
    "haproxy",
    "direct",
)
COLORS = {
    "meshfast": "#e8590c",
    "meshfast+noop-filter": "#f59f00",
    "meshfast+header-filter": "#fab005",
    "envoy": "#7048e8",
    "haproxy": "#1c7ed6",
    "direct": "#868e96",
}


def _bars(ax: Any, rows: list[dict[str, Any]], field: str, unit: str) -> None:
    names = [r["proxy"] for r in rows]
    values = [r.get(field) for r in rows]
    heights = [v if v is not None else 0.0 for v in values]
    low, high = [], []
    for r, h in zip(rows, heights, strict=True):
        spread = r.get("spread", {}).get(field)
        low.append(max(0.0, h - spread[0]) if spread and r.get("runs", 1) > 1 else 0.0)
        high.append(max(0.0, spread[1] - h) if spread and r.get("runs", 1) > 1 else 0.0)
    whiskers = [low, high] if any(low) or any(high) else None
    ax.bar(
        names,
        heights,
        color=[COLORS.get(n, "#adb5bd") for n in names],
        yerr=whiskers,
        capsize=3,
        error_kw={"elinewidth": 0.8},
    )
    top = max(heights) if heights and max(heights) > 0 else 1.0
    for i, v in enumerate(values):
        label = "no proxy" if v is None else f"{v:,.3g}"
        ax.text(i, (v or 0.0) + top * 0.02, label, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.25)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=8)
    if any(len(n) > 10 for n in names):  # meshfast+noop-filter, ...: keep labels apart
        ax.tick_params(axis="x", labelsize=7, labelrotation=12)
    ax.spines[["top", "right"]].set_visible(False)


def _ratio(results: dict[str, Any], scenario: str, field: str) -> str:
    parts = [
        f"{row[field]:.2f}x {row['vs']}"
        for row in results.get("ratios", [])
        if row["scenario"] == scenario and row.get(field) is not None
    ]
    return f"meshfast = {', '.join(parts)}" if parts else ""


def draw(results: dict[str, Any], out: Path) -> None:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    records = results["records"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in records))
    fig, axes = plt.subplots(
        len(scenarios), 2, figsize=(11, 2.6 * len(scenarios) + 1.2), squeeze=False
    )
    for row, scenario in enumerate(scenarios):
        rows = sorted(
            (r for r in records if r["scenario"] == scenario),
            key=lambda r: ORDER.index(r["proxy"]) if r["proxy"] in ORDER else len(ORDER),
        )
        cpu_ax, p99_ax = axes[row]
        _bars(cpu_ax, rows, "cpu_us_per_req", "CPU-µs / request")
        cpu_ax.set_title(
            f"{scenario}: proxy CPU per request\n{_ratio(results, scenario, 'cpu_us_per_req')}",
            fontsize=9,
            loc="left",
        )
        _bars(p99_ax, rows, "p99_ms", "p99 ms")
        p99_ax.set_title(
            f"{scenario}: p99 latency\n{_ratio(results, scenario, 'p99_ms')}",
            fontsize=9,
            loc="left",
        )
    machine = results.get("machine", {})
    quiet = all(r.get("quiet", True) for r in records)
    settings = results.get("settings", {})
    title = (
        f"meshfast bench — {results.get('date', '')} — commit {results.get('commit', '?')}\n"
        f"{machine.get('cpu_model', '?')}, {settings.get('workers', '?')} worker(s), "
        f"{settings.get('runs', '?')} run(s) x {settings.get('duration_s', '?')} s; "
        "lower is better; bars: median, whiskers: min-max"
    )
    if settings.get("quick"):
        title += "  [--quick: indicative only]"
    if not quiet:
        title += "  [machine not quiet: noisy]"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: plot.py results.json plot.png", file=sys.stderr)
        return 2
    draw(json.loads(Path(argv[1]).read_text()), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
