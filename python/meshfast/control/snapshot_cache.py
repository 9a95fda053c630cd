"""Compiled snapshots kept on disk, so a sidecar restarted with the same config serves at
once: it hands the core the IR bytes it compiled last time, before the config pipeline (YAML,
the resource types, validation, the compiler) is even imported.

The key is a SHA-256 over everything the compiled bytes depend on: meshfast's and the core's
versions, the options the config is compiled with, and the path and contents of every file
the config is read from (folders: their ``*.yaml``/``*.yml``, as the loader reads them) and
of the mesh identity's files.  Any change is a miss and a normal load, whose result is stored
again.  Only configs that need nothing but the snapshot at start are stored: none with
Python filters (their modules must be imported) or DNS endpoints (their names resolved).

Entries live in ``$MESHFAST_CACHE_DIR`` (default ``$XDG_CACHE_HOME/meshfast`` or
``~/.cache/meshfast``) under ``snapshots/``; at most :data:`MAX_ENTRIES` are kept (the least
recently used go).  Every failure to read or write the cache is a miss, never an error.
Trio-free and config-free on purpose: it runs before either is imported.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

# CPython's own SHA-256: hashlib's would map OpenSSL's libcrypto (~3.4 MiB) for one key.
try:
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python 3.12+ calls it _sha2
    from hashlib import sha256

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "directory", "key", "load", "store"]

MAX_ENTRIES = 32
MAX_BYTES = 64 << 20  # a bigger snapshot is not cached
FORMAT = b"meshfast-snapshot-cache-1"


def directory() -> Path:
    base = os.environ.get("MESHFAST_CACHE_DIR")
    if base:
        return Path(base) / "snapshots"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "meshfast" / "snapshots"


def _config_files(paths: Iterable[str]) -> list[Path] | None:
    """The files the loader reads for ``paths``; None if one cannot be listed."""
    from meshfast.config.files import config_files

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            if not path.exists():
                return None
            files.extend(config_files(path))
        except OSError:
            return None
    return files


def key(paths: Sequence[str], options: str, extra_files: Sequence[str] = ()) -> str | None:
    """The cache key of a config read from ``paths`` and compiled with ``options`` (a stable
    text of every option); None when a file cannot be read (the normal load reports it)."""
    from meshfast import __version__, _core

    files = _config_files(paths)
    if files is None:
        return None
    h = sha256(FORMAT)
    for part in (__version__, _core.__version__, options):
        h.update(part.encode() + b"\0")
    for file in [*files, *(Path(p) for p in extra_files)]:
        try:
            data = file.read_bytes()
        except OSError:
            return None
        h.update(str(file.resolve()).encode() + b"\0")
        h.update(sha256(data).digest())
    digest: str = h.hexdigest()
    return digest


def load(entry: str) -> bytes | None:
    path = directory() / f"{entry}.ir"
    try:
        data = path.read_bytes()
        os.utime(path)  # recently used: kept longest
    except OSError:
        return None
    return data


def store(entry: str, snapshot: bytes) -> None:
    if len(snapshot) > MAX_BYTES:
        return
    folder = directory()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: a reader never sees half a snapshot.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".ir")
        with os.fdopen(fd, "wb") as f:
            f.write(snapshot)
        os.replace(tmp, folder / f"{entry}.ir")
        _prune(folder)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.ir"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        with contextlib.suppress(OSError):
            old.unlink()
