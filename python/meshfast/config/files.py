"""Which files a config path stands for: a file itself, or a folder's ``*.yaml``/``*.yml``
(sorted, not recursive).  Shared by the loader and the snapshot cache's key."""

from __future__ import annotations

from pathlib import Path

__all__ = ["config_files"]


def config_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and not p.is_dir())
    return [path]
