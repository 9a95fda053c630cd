"""``meshfast run --watch``: notice when a config file changes, once it has settled.

The files are those ``-c`` names (a folder: its ``*.yaml``/``*.yml``, as the loader reads
them).  A Trio task polls each one's ``(mtime_ns, size, inode)``: no dependency and no
inotify (which misses a file replaced by rename unless its folder is watched, and does not
work on every volume a ConfigMap is mounted from).  A few ``stat`` calls per poll cost
nothing next to a request.

Editors write in several steps (truncate then write, or write a temporary file and rename
it over), so a change is reported only once the files have looked the same for
``debounce`` seconds: one reload per edit, never one of a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

__all__ = ["DEBOUNCE_S", "POLL_S", "fingerprint", "watch"]

# How often the files are looked at, and how long they must stay unchanged before a
# reload: an edit is served well within 2 s (poll + debounce + compile).
POLL_S = 0.1
DEBOUNCE_S = 0.2

# What a path looks like: per file, (mtime_ns, size, inode); None for a file that cannot be
# read now (gone, mid-rename). A folder contributes its YAML files and its own listing.
Fingerprint = tuple[tuple[str, tuple[int, int, int] | None], ...]


def fingerprint(paths: Sequence[str]) -> Fingerprint:
    """The state of every file ``paths`` stand for, as the loader would read them."""
    from meshfast.config.files import config_files

    seen: list[tuple[str, tuple[int, int, int] | None]] = []
    for path in paths:
        try:
            files = config_files(Path(path))
        except OSError:
            files = [Path(path)]
        for file in files:
            try:
                st = os.stat(file)
            except OSError:
                seen.append((str(file), None))
            else:
                seen.append((str(file), (st.st_mtime_ns, st.st_size, st.st_ino)))
    return tuple(seen)


async def watch(
    paths: Sequence[str],
    on_change: Callable[[], Awaitable[object]],
    *,
    poll: float = POLL_S,
    debounce: float = DEBOUNCE_S,
    since_ns: int = 0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Calls ``on_change`` each time the files of ``paths`` changed and then stayed the same
    for ``debounce`` seconds; runs until cancelled.  ``on_change`` runs in this task, so
    changes made while it runs are seen (and reported) after it returns.

    ``since_ns`` (``time.time_ns()``; 0: none): when the files were read.  A file modified
    since (between that read and this watch's first look) counts as a change at once."""
    # Inline, not in a worker thread: a few stat calls, far below a millisecond (and
    # the tests can run the watcher on a mock clock).
    known = fingerprint(paths)
    task_status.started()
    if since_ns and any(st is not None and st[0] >= since_ns for _, st in known):
        await on_change()
    while True:
        await trio.sleep(poll)
        now = fingerprint(paths)
        if now == known:
            continue
        # Changed: wait until it holds still for `debounce`.
        settled = now
        while True:
            await trio.sleep(debounce)
            now = fingerprint(paths)
            if now == settled:
                break
            settled = now
        known = settled
        await on_change()
