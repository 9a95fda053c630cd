"""The bridge from the core's worker threads to the Trio loop, for ``async def`` phases.

A worker that meets an async phase hands the rest of the chain to :meth:`TrioLoop.spawn`,
which asks Trio (``TrioToken.run_sync_soon``: thread-safe; it wakes the loop through Trio's
own wakeup file descriptor, and Trio drains every queued call in one batch) to start a task in
the sidecar's nursery.  The task answers through the core's ``Completion``; the worker never
blocks on it.

``spawn`` never raises into Trio: a callback that raises inside ``run_sync_soon`` would crash
the whole run, so failures to start are reported to ``on_refused`` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["TrioLoop"]


class TrioLoop:
    """Starts tasks in ``nursery`` from any thread.  Build it on the Trio thread."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        on_refused: Callable[[BaseException], None],
    ) -> None:
        """Runs ``fn(*args)`` as a task of the nursery, soon; ``on_refused(exc)`` if the loop or
        the nursery is gone."""

        def start() -> None:
            try:
                self._nursery.start_soon(fn, *args)
            except BaseException as exc:  # the nursery closed: never raise into Trio
                on_refused(exc)

        try:
            self._token.run_sync_soon(start)
        except trio.RunFinishedError as exc:
            on_refused(exc)
