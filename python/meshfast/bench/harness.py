"""The run loop of ``meshfast bench``.

For each scenario: start the upstream; then, for each run, for each proxy (the order rotates
from run to run so no proxy always goes first): start the proxy pinned alone on its core,
wait for its first proxied 200 (start-to-ready), read its idle RSS, warm up, check that the
cores are quiet, run the load while reading the proxy's utime+stime before and after, read
its peak RSS, stop it. ``direct`` sends the same load straight to the upstream (the floor).

Placement: the proxy on CPU 1 (CPUs 1..workers), the load generator, the upstream and this
harness on CPU 0; ``same-core-latency`` puts all three on the proxy's first CPU instead.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from meshfast import __version__
from meshfast.bench import peers, procs, report, tools
from meshfast.bench.envoy_export import ExportError
from meshfast.bench.haproxy_export import Unsupported
from meshfast.bench.load import H2Load, LoadError, LoadResult, Wrk
from meshfast.bench.scenarios import (
    FILTER_MODULE,
    FILTER_MODULE_NAME,
    SCENARIOS,
    Scenario,
    config_yaml,
    route_paths,
)
from meshfast.config import ConfigError

__all__ = ["BenchOptions", "BenchOutcome", "Progress", "run_bench"]

Upstream = Literal["echo", "nginx"]


@dataclass(frozen=True)
class BenchOptions:
    out: Path
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    proxies: tuple[peers.ProxyName, ...] = peers.PROXIES
    workers: int = 1
    runs: int = 3
    duration_s: float = 10.0
    warmup_s: float = 2.0
    upstream: Upstream = "echo"
    quick: bool = False
    install: bool = True
    quiet_threshold: float = 20.0
    quiet_sample_s: float = 0.5
    quiet_retries: int = 3
    quiet_wait_s: float = 2.0

    @classmethod
    def make(
        cls,
        out: Path,
        *,
        quick: bool = False,
        scenarios: Sequence[str] | None = None,
        proxies: Sequence[peers.ProxyName] | None = None,
        workers: int = 1,
        runs: int | None = None,
        duration_s: float | None = None,
        upstream: Upstream = "echo",
        install: bool = True,
    ) -> BenchOptions:
        """Defaults: 3 runs of 10 s after a 2 s warm-up; ``quick``: 1 run of 1 s, none."""
        return cls(
            out=out,
            scenarios=tuple(scenarios or SCENARIOS),
            proxies=tuple(proxies or peers.PROXIES),
            workers=workers,
            runs=runs if runs is not None else (1 if quick else 3),
            duration_s=duration_s if duration_s is not None else (1.0 if quick else 10.0),
            warmup_s=0.0 if quick else 2.0,
            upstream=upstream,
            quick=quick,
            install=install,
            quiet_sample_s=0.25 if quick else 0.5,
            quiet_retries=0 if quick else 3,
        )


@dataclass
class BenchOutcome:
    results: dict[str, Any]
    records: list[report.Record]
    failures: list[str] = field(default_factory=list)
    results_path: Path | None = None
    markdown_path: Path | None = None
    plot_path: Path | None = None


class Progress:
    """One progress line while it runs (rewritten in place on a terminal), notes above it."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()
        self._open = False

    def update(self, text: str) -> None:
        line = f"[{self.done:>3}/{self.total}] {text}"
        if self.tty:
            self.stream.write(f"\r\x1b[K{line}")
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, text: str) -> None:
        self.done += 1
        self.update(text)

    def note(self, text: str) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(f"meshfast bench: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.flush()


# === placement, machine, versions ===


def placement(workers: int) -> tuple[list[int], list[int]]:
    """(proxy CPUs, load CPUs): CPU 0 for load and upstream, the next ``workers`` for the proxy."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return available[:1], available[:1]
    load = available[:1]
    proxy = available[1 : 1 + max(1, workers)]
    return proxy, load


@contextmanager
def pinned(cpus: Sequence[int]) -> Iterator[None]:
    """This process on ``cpus`` for the duration (its polling must not disturb the proxy)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def machine() -> dict[str, Any]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib: float | None = None
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    uname = os.uname()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "kernel": uname.release,
        "arch": uname.machine,
        "python": platform.python_version(),
    }


def commit() -> str:
    """The meshfast checkout's commit (``-dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


# === one measurement ===


@dataclass
class Context:
    options: BenchOptions
    progress: Progress
    binaries: dict[str, str]
    proxy_cpus: list[int]
    load_cpus: list[int]
    logs: Path


def _load_for(scenario: Scenario, binaries: dict[str, str]) -> Wrk | H2Load:
    headers = scenario.request_headers
    if scenario.tool == "h2load":
        return H2Load(
            binaries["h2load"],
            connections=scenario.connections,
            streams=scenario.streams,
            path=scenario.path,
            headers=headers,
        )
    return Wrk(
        binaries["wrk"],
        connections=scenario.connections,
        path=scenario.path,
        headers=headers,
        spread_paths=route_paths(scenario.routes) if scenario.routes else (),
    )


@dataclass(frozen=True)
class Entry:
    """What is measured in a scenario: ``kind`` (a proxy) serving ``yaml_text``, recorded as
    ``name`` (``kind`` itself, or a meshfast variant such as ``meshfast+noop-filter``)."""

    name: str
    kind: peers.ProxyName
    yaml_text: str


def entries(
    scenario: Scenario,
    proxies: Sequence[peers.ProxyName],
    upstream: str,
    failing: str | None = None,
) -> list[Entry]:
    """The scenario's measurements, in ``proxies`` order: those it skips left out, meshfast
    expanded into the scenario's variants (each with its own config). ``failing``: the
    endpoint that answers 503 (``breaker``)."""
    out: list[Entry] = []
    for proxy in proxies:
        if proxy in scenario.skip:
            continue
        if proxy == "meshfast" and scenario.variants:
            out += [
                Entry(v.name, "meshfast", config_yaml(scenario, upstream, v.filter, failing))
                for v in scenario.variants
            ]
        else:
            out.append(Entry(proxy, proxy, config_yaml(scenario, upstream, failing=failing)))
    return out


def _count(scenario: Scenario, proxies: Sequence[peers.ProxyName]) -> int:
    return len(entries(scenario, proxies, "127.0.0.1:0"))


def _start_proxy(
    ctx: Context,
    entry: Entry,
    cpus: list[int],
    workdir: Path,
    probe_path: str,
) -> peers.Peer:
    workers = ctx.options.workers
    proxy, yaml_text = entry.kind, entry.yaml_text
    if proxy == "meshfast":
        return peers.start_meshfast(
            yaml_text,
            workers=workers,
            cpus=cpus,
            workdir=workdir,
            probe_path=probe_path,
            name=entry.name,
        )
    if proxy in ("envoy", "haproxy"):
        start = peers.start_envoy if proxy == "envoy" else peers.start_haproxy
        return start(
            ctx.binaries[proxy],
            yaml_text,
            workers=workers,
            cpus=cpus,
            workdir=workdir,
            probe_path=probe_path,
        )
    raise ValueError(f"not a proxy: {proxy}")


def measure(
    ctx: Context,
    scenario: Scenario,
    entry: Entry,
    upstream: peers.Peer,
    workdir: Path,
) -> report.RunSample:
    """One run of one proxy: start, ready, idle RSS, warm-up, quiet check, load, stop."""
    opts = ctx.options
    proxy_cpus = ctx.proxy_cpus[:1] if scenario.same_core else ctx.proxy_cpus
    load_cpus = ctx.proxy_cpus[:1] if scenario.same_core else ctx.load_cpus
    load = _load_for(scenario, ctx.binaries)
    peer: peers.Peer | None = None
    try:
        if entry.kind == "direct":
            target = upstream
        else:
            peer = _start_proxy(ctx, entry, proxy_cpus, workdir, scenario.probe_path)
            target = peer
            time.sleep(0.2)  # let start-up work settle before reading idle RSS
        pid = peer.child.pid if peer is not None and peer.child is not None else None
        rss_idle = procs.memory(pid).rss_mib if pid is not None else None
        address = target.h2_address if scenario.tool == "h2load" else target.address
        if opts.warmup_s > 0:
            load.run(address, opts.warmup_s, load_cpus, workdir)
        quiet = procs.quiet_check(
            sorted(set(proxy_cpus) | set(load_cpus)),
            threshold=opts.quiet_threshold,
            sample_s=opts.quiet_sample_s,
            retries=opts.quiet_retries,
            wait_s=opts.quiet_wait_s,
        )
        up_pid = upstream.child.pid if upstream.child is not None else None
        up_before = procs.cpu_times(up_pid) if up_pid is not None else None
        before = procs.cpu_times(pid) if pid is not None else None
        result: LoadResult = load.run(address, opts.duration_s, load_cpus, workdir)
        after = procs.cpu_times(pid) if pid is not None else None
        up_after = procs.cpu_times(up_pid) if up_pid is not None else None
        peak = procs.memory(pid).hwm_mib if pid is not None else None
        if pid is not None and (peer is None or peer.child is None or not peer.child.alive()):
            raise procs.StartError(f"{entry.name} exited during the run")
    finally:
        if peer is not None:
            peer.stop()

    n = max(1, result.requests)

    def per_req(seconds: float) -> float:
        return seconds * 1e6 / n

    return report.RunSample(
        rps=result.rps,
        requests=result.requests,
        seconds=result.seconds,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        p999_ms=result.p999_ms,
        errors=result.errors,
        error_detail=result.error_detail,
        quiet=quiet.quiet,
        busy_percent={k: round(v, 1) for k, v in quiet.busy_percent.items()},
        cpu_us_per_req=per_req(after.total - before.total) if after and before else None,
        cpu_user_us_per_req=per_req(after.user - before.user) if after and before else None,
        cpu_sys_us_per_req=per_req(after.system - before.system) if after and before else None,
        upstream_cpu_us_per_req=(
            per_req(up_after.total - up_before.total) if up_after and up_before else None
        ),
        rss_idle_mib=rss_idle,
        rss_peak_mib=peak,
        ready_ms=peer.ready_s * 1000 if peer is not None and peer.ready_s is not None else None,
        threads=after.threads if after else None,
    )


# === tools ===


def _tools(options: BenchOptions, progress: Progress) -> tuple[dict[str, str], list[str]]:
    """Executables by name (installing what is missing), and reasons HAProxy was dropped."""
    binaries: dict[str, str] = {}
    notes: list[str] = []
    scenarios = [SCENARIOS[s] for s in options.scenarios]
    needed = {s.tool for s in scenarios}
    for tool in sorted(needed):
        binaries[tool] = tools.ensure_command(tool, install=options.install, log=progress.note)
    if options.upstream == "nginx":
        binaries["nginx"] = tools.ensure_command(
            "nginx", install=options.install, log=progress.note
        )
    wanted = {p for p in options.proxies if any(p not in s.skip for s in scenarios)}
    if "envoy" in wanted:
        binaries["envoy"] = str(tools.envoy_binary(install=options.install, log=progress.note))
    if "haproxy" in wanted:
        try:
            binaries["haproxy"] = tools.ensure_command(
                "haproxy", install=options.install, log=progress.note
            )
        except tools.ToolError as exc:  # the optional third
            notes.append(f"HAProxy skipped: {exc}")
    return binaries, notes


# === the run ===


def run_bench(options: BenchOptions, stream: TextIO | None = None) -> BenchOutcome:
    """Runs the benchmark; writes results.json, RESULTS.md and plot.png under ``options.out``."""
    stream = stream if stream is not None else sys.stderr
    unknown = [s for s in options.scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}")
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    proxy_cpus, load_cpus = placement(options.workers)

    progress = Progress(0, stream)
    binaries, notes = _tools(options, progress)
    skipped: list[dict[str, str]] = []
    failures: list[str] = []
    for note in notes:
        progress.note(note)
        skipped += [
            {"scenario": s, "proxy": "haproxy", "reason": note}
            for s in options.scenarios
            if "haproxy" not in SCENARIOS[s].skip
        ]
    proxies = [p for p in options.proxies if p != "haproxy" or "haproxy" in binaries]
    for name in options.scenarios:
        scenario = SCENARIOS[name]
        progress.total += options.runs * _count(scenario, proxies)
        for proxy in options.proxies:
            if proxy in scenario.skip:
                reason = scenario.skip[proxy]
                skipped.append({"scenario": name, "proxy": proxy, "reason": reason})
                progress.note(f"{name}: {proxy} skipped ({reason})")
    if proxy_cpus == load_cpus:
        progress.note("only one CPU: the proxy shares it with the load (figures are not fair)")
    elif len(proxy_cpus) < options.workers:
        progress.note(
            f"{options.workers} workers share {len(proxy_cpus)} CPU(s) {proxy_cpus}: the"
            " load generator and upstream keep CPU 0"
        )
    ctx = Context(options, progress, binaries, proxy_cpus, load_cpus, logs)

    samples: dict[tuple[str, str], list[report.RunSample]] = {}
    started = time.monotonic()
    try:
        with pinned(load_cpus):
            for scenario_name in options.scenarios:
                scenario = SCENARIOS[scenario_name]
                _run_scenario(ctx, scenario, proxies, samples, skipped, failures)
    finally:
        progress.close()

    records = [
        report.aggregate(scenario, proxy, options.workers, runs)
        for (scenario, proxy), runs in samples.items()
    ]
    order = {name: i for i, name in enumerate(options.scenarios)}
    records.sort(key=lambda r: (order[r.scenario], peers.record_rank(r.proxy)))
    report.fill_added_latency(records)
    ratio_rows = report.ratios(records)
    overhead_rows = report.filter_overheads(records)
    versions = {"meshfast": __version__}
    versions.update(tools.tool_versions(binaries))
    results: dict[str, Any] = {
        "format": "meshfast-bench/1",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "versions": versions,
        "settings": {
            "quick": options.quick,
            "workers": options.workers,
            "runs": options.runs,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "upstream": options.upstream,
            "proxy_cpus": proxy_cpus,
            "load_cpus": load_cpus,
            "quiet_threshold_percent": options.quiet_threshold,
            "elapsed_s": round(time.monotonic() - started, 1),
        },
        "scenarios": {name: SCENARIOS[name].summary for name in options.scenarios},
        "records": [asdict(r) for r in records],
        "ratios": ratio_rows,
        "filter_overhead": overhead_rows,
        "skipped": skipped,
        "failures": failures,
    }
    outcome = BenchOutcome(results, records, failures)
    outcome.results_path = out / "results.json"
    report.write_results(outcome.results_path, results)
    outcome.plot_path = out / "plot.png"
    try:
        _plot(outcome.results_path, outcome.plot_path, options.install, progress)
    except (tools.ToolError, OSError, subprocess.SubprocessError) as exc:
        failures.append(f"plot: {exc}")
        progress.note(f"no plot: {exc}")
        outcome.plot_path = None
    outcome.markdown_path = out / "RESULTS.md"
    outcome.markdown_path.write_text(report.render_markdown(results, records, "plot.png"))
    return outcome


def _plot(results: Path, png: Path, install: bool, progress: Progress) -> None:
    python = tools.plot_python(install=install, log=progress.note)
    script = Path(__file__).with_name("plot.py")
    done = subprocess.run(
        [python, str(script), str(results), str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0 or not png.exists():
        raise tools.ToolError(f"plot.py exited {done.returncode}: {done.stderr.strip()[-300:]}")


def _run_scenario(
    ctx: Context,
    scenario: Scenario,
    proxies: Sequence[peers.ProxyName],
    samples: dict[tuple[str, str], list[report.RunSample]],
    skipped: list[dict[str, str]],
    failures: list[str],
) -> None:
    opts, progress = ctx.options, ctx.progress
    workdir = ctx.logs / scenario.name
    workdir.mkdir(parents=True, exist_ok=True)
    upstream_cpus = ctx.proxy_cpus[:1] if scenario.same_core else ctx.load_cpus
    progress.update(f"{scenario.name}: starting the upstream ({opts.upstream})")
    try:
        upstream = peers.start_upstream(
            opts.upstream, upstream_cpus, workdir, ctx.binaries.get("nginx", "nginx")
        )
    except procs.StartError as exc:
        failures.append(f"{scenario.name}: upstream: {exc}")
        progress.note(f"{scenario.name}: the upstream did not start: {exc}")
        progress.done += opts.runs * _count(scenario, proxies)
        return
    failing: peers.Peer | None = None
    try:
        if scenario.failing_endpoint:
            failing = peers.start_failing_echo(upstream_cpus, workdir)
        todo = entries(scenario, proxies, upstream.address, failing.address if failing else None)
        if scenario.variants:  # the filters' module, imported from the config file's folder
            (workdir / f"{FILTER_MODULE_NAME}.py").write_text(FILTER_MODULE)
        unsupported: set[str] = set()
        for run in range(opts.runs):
            shift = run % len(todo) if todo else 0
            for entry in todo[shift:] + todo[:shift]:
                proxy = entry.name
                label = f"{scenario.name} · {proxy} · run {run + 1}/{opts.runs}"
                if proxy in unsupported:
                    progress.step(f"{label}: skipped")
                    continue
                progress.update(f"{label}: running ({opts.duration_s:g} s)")
                try:
                    sample = measure(ctx, scenario, entry, upstream, workdir)
                except Unsupported as exc:
                    unsupported.add(proxy)
                    reason = f"not expressible in the generated config: {exc}"
                    skipped.append({"scenario": scenario.name, "proxy": proxy, "reason": reason})
                    progress.step(f"{label}: skipped")
                    progress.note(f"{scenario.name}: {proxy} skipped ({reason})")
                    continue
                except (procs.StartError, LoadError, ConfigError, ExportError, OSError) as exc:
                    failures.append(f"{scenario.name}/{proxy} run {run + 1}: {exc}")
                    progress.step(f"{label}: FAILED")
                    progress.note(f"{scenario.name}: {proxy} run {run + 1} failed: {exc}")
                    continue
                samples.setdefault((scenario.name, proxy), []).append(sample)
                cpu = (
                    f", {sample.cpu_us_per_req:.1f} CPU-µs/req"
                    if sample.cpu_us_per_req is not None
                    else ""
                )
                noisy = "" if sample.quiet else " (not quiet)"
                errors = f", {sample.errors} errors" if sample.errors else ""
                progress.step(
                    f"{label}: {sample.rps:,.0f} req/s, p99 {sample.p99_ms:.3f} ms{cpu}"
                    f"{errors}{noisy}"
                )
    finally:
        upstream.stop()
        if failing is not None:
            failing.stop()
