"""Load generators: wrk (HTTP/1.1) and h2load (HTTP/2, h2c), their runs and their output.

- **wrk** runs a small generated Lua script: it sets the path and headers, optionally
  spreads requests over many paths (``request()``), and in its ``done()`` hook prints one
  ``MESHFAST-WRK {json}`` line with the request count, duration, error counts and the
  latency percentiles p50/p90/p99/p99.9 (wrk's own histogram, microseconds).
- **h2load** runs for a fixed duration (``-D``) with ``--log-file`` (one line per request:
  start, status, microseconds); the percentiles come from that file. h2load appends to an
  existing log file, so it is removed first.

Every run is bounded: the tool's own duration, plus a hard subprocess timeout.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "H2Load",
    "LoadError",
    "LoadResult",
    "Wrk",
    "parse_h2load",
    "parse_wrk",
    "percentile",
    "wrk_script",
]

WRK_MARK = "MESHFAST-WRK "
# A run may take its duration plus this much (connection set-up, printing) before it is killed.
GRACE_S = 30.0


class LoadError(RuntimeError):
    """The load generator failed or printed nothing that could be read."""


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int  # completed (any status)
    seconds: float
    errors: int  # transport errors, timeouts and responses >= 400
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    error_detail: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values) / 100 - 1e-9))  # no float round-up
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII


def wrk_script(
    *,
    path: str,
    headers: Mapping[str, str],
    spread_paths: Sequence[str] = (),
) -> str:
    """The Lua script: path, headers, an optional round-robin over paths, the done() report."""
    lines = [f"wrk.method = {_lua_string('GET')}", f"wrk.path = {_lua_string(path)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    if spread_paths:
        lines.append("local paths = {")
        lines += [f"  {_lua_string(p)}," for p in spread_paths]
        lines += [
            "}",
            "local requests = {}",
            "for i, p in ipairs(paths) do requests[i] = wrk.format(nil, p) end",
            "local n = 0",
            "request = function()",
            "  n = n % #requests + 1",
            "  return requests[n]",
            "end",
        ]
    lines += [
        "done = function(summary, latency, requests)",
        "  local e = summary.errors",
        f'  io.write(string.format("{WRK_MARK}'
        '{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,'
        '\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%.1f,'
        '\\"p90_us\\":%.1f,\\"p99_us\\":%.1f,\\"p999_us\\":%.1f}\\n",',
        "    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,",
        "    e.timeout, latency:percentile(50), latency:percentile(90),",
        "    latency:percentile(99), latency:percentile(99.9)))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def parse_wrk(output: str) -> LoadResult:
    for line in output.splitlines():
        if line.startswith(WRK_MARK):
            data = json.loads(line[len(WRK_MARK) :])
            break
    else:
        raise LoadError(f"wrk printed no report: {output.strip()[-300:]}")
    detail = {k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")}
    return LoadResult(
        tool="wrk",
        requests=int(data["requests"]),
        seconds=float(data["duration_us"]) / 1e6,
        errors=sum(detail.values()),
        p50_ms=float(data["p50_us"]) / 1000,
        p90_ms=float(data["p90_us"]) / 1000,
        p99_ms=float(data["p99_us"]) / 1000,
        p999_ms=float(data["p999_us"]) / 1000,
        error_detail={k: v for k, v in detail.items() if v},
    )


_H2_FINISHED = re.compile(r"finished in ([\d.]+)(ms|us|s),")
_H2_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed,"
    r" (\d+) errored, (\d+) timeout"
)
_H2_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_UNIT_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_h2load(output: str, latencies_us: Sequence[float]) -> LoadResult:
    finished = _H2_FINISHED.search(output)
    counts = _H2_REQUESTS.search(output)
    if finished is None or counts is None:
        raise LoadError(f"h2load printed no summary: {output.strip()[-300:]}")
    seconds = float(finished.group(1)) * _UNIT_S[finished.group(2)]
    total, _, done, succeeded, failed, errored, timeout = (int(g) for g in counts.groups())
    status = _H2_STATUS.search(output)
    detail = {"failed": failed, "errored": errored, "timeout": timeout}
    if status is not None:
        detail["4xx"], detail["5xx"] = int(status.group(3)), int(status.group(4))
    ordered = sorted(latencies_us)
    return LoadResult(
        tool="h2load",
        requests=done,
        seconds=seconds,
        errors=max(0, total - succeeded) + timeout,
        p50_ms=percentile(ordered, 50) / 1000,
        p90_ms=percentile(ordered, 90) / 1000,
        p99_ms=percentile(ordered, 99) / 1000,
        p999_ms=percentile(ordered, 99.9) / 1000,
        error_detail={k: v for k, v in detail.items() if v},
    )


def _read_h2load_log(path: Path) -> list[float]:
    out: list[float] = []
    try:
        with path.open() as handle:
            for line in handle:
                parts = line.split("\t")
                if len(parts) >= 3:
                    out.append(float(parts[2]))
    except FileNotFoundError:
        pass
    return out


def _run(cmd: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{cmd[0]} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise LoadError(f"cannot run {cmd[0]}: {exc}") from exc
    if done.returncode != 0:
        raise LoadError(
            f"{' '.join(cmd[:8])} exited {done.returncode}: {(done.stderr or done.stdout)[-300:]}"
        )
    return done.stdout


@dataclass(frozen=True)
class Wrk:
    """``wrk -t THREADS -c CONNECTIONS -d DURATION`` with a generated script."""

    binary: str
    connections: int
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    spread_paths: Sequence[str] = ()
    threads: int = 1

    def run(self, address: str, seconds: float, cpus: Sequence[int], workdir: Path) -> LoadResult:
        script = workdir / "wrk.lua"
        script.write_text(
            wrk_script(path=self.path, headers=self.headers, spread_paths=self.spread_paths)
        )
        duration = max(1, round(seconds))  # wrk takes whole seconds
        cmd = [
            "taskset",
            "-c",
            ",".join(map(str, cpus)),
            self.binary,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://{address}{self.path}",
        ]
        return parse_wrk(_run(cmd, duration + GRACE_S))


@dataclass(frozen=True)
class H2Load:
    """``h2load -t THREADS -c CONNECTIONS -m STREAMS -D DURATION`` (h2c, prior knowledge)."""

    binary: str
    connections: int
    streams: int
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1

    def run(self, address: str, seconds: float, cpus: Sequence[int], workdir: Path) -> LoadResult:
        log = workdir / "h2load.log"
        log.unlink(missing_ok=True)  # h2load appends
        cmd = [
            "taskset",
            "-c",
            ",".join(map(str, cpus)),
            self.binary,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-m{self.streams}",
            "-D",
            f"{max(1, round(seconds * 1000))}ms",
            "--log-file",
            str(log),
        ]
        for name, value in self.headers.items():
            # h2load takes the authority as a header override.
            cmd += ["-H", f":authority: {value}" if name.lower() == "host" else f"{name}: {value}"]
        cmd.append(f"http://{address}{self.path}")
        output = _run(cmd, seconds + GRACE_S)
        latencies = _read_h2load_log(log)
        log.unlink(missing_ok=True)
        return parse_h2load(output, latencies)
