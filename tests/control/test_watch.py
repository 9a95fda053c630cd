"""``--watch``'s file watcher: changes are seen, debounced into one, folders included.

On Trio's mock clock (``autojump_clock``): the watcher's polls and debounce, and the
tests' pauses, run in virtual time, so no outcome depends on the machine's speed."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import trio
import trio.testing

from meshfast.control.watch import fingerprint, watch

POLL, DEBOUNCE = 0.01, 0.1


class Changes:
    def __init__(self) -> None:
        self.count = 0
        self.seen = trio.Event()

    async def __call__(self) -> None:
        self.count += 1
        self.seen.set()
        self.seen = trio.Event()


async def started(nursery: trio.Nursery, paths: list[str], since_ns: int = 0) -> Changes:
    changes = Changes()
    run = partial(watch, paths, changes, poll=POLL, debounce=DEBOUNCE, since_ns=since_ns)
    await nursery.start(run)
    return changes


async def test_a_burst_of_writes_is_one_change(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    changes = await started(nursery, [str(path)])
    seen = changes.seen
    # Truncate, then write in pieces, as an editor may: each step well within the debounce.
    with path.open("w") as f:
        for piece in ("b", ": ", "2", "\n"):
            f.write(piece)
            f.flush()
            await trio.sleep(POLL)
    with trio.fail_after(10):
        await seen.wait()
    await trio.sleep(5 * DEBOUNCE)
    assert changes.count == 1


async def test_a_rename_over_and_a_removal_are_changes(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("a: 1\n")
    changes = await started(nursery, [str(path)])
    seen = changes.seen
    tmp = tmp_path / "new"
    tmp.write_text("a: 1\n")  # the same bytes: the inode tells
    os.replace(tmp, path)
    with trio.fail_after(10):
        await seen.wait()
    seen = changes.seen
    path.unlink()
    with trio.fail_after(10):
        await seen.wait()
    assert fingerprint([str(path)]) == ((str(path), None),)


async def test_a_folder_s_new_yaml_file_is_a_change(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    changes = await started(nursery, [str(tmp_path)])
    seen = changes.seen
    (tmp_path / "notes.txt").write_text("not config\n")  # not a config file: ignored
    await trio.sleep(5 * DEBOUNCE)
    assert changes.count == 0
    (tmp_path / "b.yml").write_text("b: 1\n")
    with trio.fail_after(10):
        await seen.wait()
    assert changes.count == 1


async def test_a_file_changed_since_it_was_read_is_a_change_at_once(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The sidecar read its files, then (while it started) one was edited: the watcher's
    first look already has the edit, so it compares with when the files were read."""
    path = tmp_path / "mesh.yaml"
    read_at = time.time_ns()
    path.write_text("a: 2\n")
    os.utime(path, ns=(read_at + 1, read_at + 1))  # (whatever the file system's clock tick)
    changes = Changes()
    seen = changes.seen
    await nursery.start(partial(watch, [str(path)], changes, poll=POLL, since_ns=read_at))
    with trio.fail_after(10):
        await seen.wait()
    # Not modified since: nothing.
    later = await started(nursery, [str(path)], since_ns=time.time_ns() + 10**9)
    await trio.sleep(5 * DEBOUNCE)
    assert later.count == 0
