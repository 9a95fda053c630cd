"""Child processes pinned to cores, readiness, and what /proc says about them.

- CPU of a process (all its threads, dead ones included): ``utime + stime`` from
  ``/proc/PID/stat``. Not ``/proc/stat``: the kernel samples per-core time by tick.
- Memory: ``VmRSS`` (now) and ``VmHWM`` (peak) from ``/proc/PID/status``.
- Quiet check: per-core busy share from ``/proc/stat`` over a short window (tick-sampled,
  which is fine for "is someone else using this core").
- Every child is started with ``taskset -c CPUS`` and stopped by its own pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLOCK_TICKS",
    "Child",
    "CpuTimes",
    "Memory",
    "QuietCheck",
    "StartError",
    "core_busy",
    "cpu_times",
    "http_get_status",
    "memory",
    "quiet_check",
    "wait_http_ok",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A child did not start or did not become ready; the message carries its log's tail."""


# === /proc readings ===


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds a process has used so far (all threads, live and exited)."""

    user: float
    system: float
    threads: int

    @property
    def total(self) -> float:
        return self.user + self.system


def cpu_times(pid: int) -> CpuTimes:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, num_threads 20.
    return CpuTimes(
        user=int(fields[11]) / CLOCK_TICKS,
        system=int(fields[12]) / CLOCK_TICKS,
        threads=int(fields[17]),
    )


@dataclass(frozen=True)
class Memory:
    rss_kib: int
    hwm_kib: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def hwm_mib(self) -> float:
        return self.hwm_kib / 1024


def memory(pid: int) -> Memory:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return Memory(rss_kib=values.get("VmRSS", 0), hwm_kib=values.get("VmHWM", 0))


def _core_ticks() -> dict[int, tuple[int, int]]:
    """cpu index → (busy ticks, total ticks) from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + ticks[4]
        out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def core_busy(cpus: Iterable[int], seconds: float) -> dict[int, float]:
    """Busy percentage of each core in ``cpus`` over the next ``seconds``."""
    before = _core_ticks()
    time.sleep(seconds)
    after = _core_ticks()
    out: dict[int, float] = {}
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            continue
        busy = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        out[cpu] = 100.0 * busy / total if total > 0 else 0.0
    return out


@dataclass(frozen=True)
class QuietCheck:
    quiet: bool
    busy_percent: dict[int, float]
    attempts: int


def quiet_check(
    cpus: Iterable[int],
    *,
    threshold: float = 20.0,
    sample_s: float = 0.5,
    retries: int = 3,
    wait_s: float = 2.0,
) -> QuietCheck:
    """Waits (a few times) for every core in ``cpus`` to be under ``threshold`` % busy.

    Never fails: after the retries it answers ``quiet=False`` with what it saw, and the
    harness records that beside the figures.
    """
    cpus = sorted(set(cpus))
    busy: dict[int, float] = {}
    for attempt in range(1, retries + 2):
        busy = core_busy(cpus, sample_s)
        if all(v <= threshold for v in busy.values()):
            return QuietCheck(True, busy, attempt)
        if attempt <= retries:
            time.sleep(wait_s)
    return QuietCheck(False, busy, retries + 1)


# === children ===


@dataclass
class Child:
    """A process started pinned with ``taskset``; its output goes to ``log_path``."""

    name: str
    cmd: list[str]
    cpus: Sequence[int]
    log_path: Path
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cpu_list = ",".join(str(c) for c in self.cpus)
        with self.log_path.open("wb") as log:
            self.started_at = time.perf_counter()
            try:
                self.proc = subprocess.Popen(
                    ["taskset", "-c", cpu_list, *self.cmd],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(self.env) if self.env is not None else None,
                    start_new_session=True,  # a Ctrl-C on the harness does not hit it first
                )
            except OSError as exc:
                raise StartError(f"{self.name}: cannot start {self.cmd[0]}: {exc}") from exc
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; only this child's own pid."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        return proc.returncode


# === HTTP readiness ===


def http_get_status(address: str, host: str, path: str = "/", timeout: float = 1.0) -> int:
    """One ``GET`` over a fresh connection; the status code, or 0 when it failed."""
    ip, _, port = address.rpartition(":")
    try:
        with socket.create_connection((ip.strip("[]"), int(port)), timeout=timeout) as sock:
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return 0
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return 0


def wait_http_ok(
    child: Child | None,
    address: str,
    host: str,
    *,
    path: str = "/",
    timeout: float = 30.0,
    poll_s: float = 0.002,
    want: int = 200,
) -> float:
    """Seconds from the child's start until a ``GET`` through ``address`` answers ``want``."""
    started = child.started_at if child is not None else time.perf_counter()
    deadline = time.perf_counter() + timeout
    status = 0
    while time.perf_counter() < deadline:
        status = http_get_status(address, host, path)
        if status == want:
            return time.perf_counter() - started
        if child is not None and not child.alive():
            raise StartError(f"{child.name} exited before it was ready: {child.log_tail()}")
        time.sleep(poll_s)
    name = child.name if child is not None else address
    tail = f": {child.log_tail()}" if child is not None else ""
    raise StartError(f"{name} not ready after {timeout:.0f} s (last status {status}){tail}")
