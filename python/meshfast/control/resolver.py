"""The control plane's DNS resolver for ``resolution: DNS``/``DNS_ROUND_ROBIN`` endpoints.

The data plane never waits on DNS for these endpoints: this resolver looks the names up with
``trio.socket.getaddrinfo`` (in a worker thread, several names at once, each bounded by a
timeout), keeps the last good answer per name, and :mod:`meshfast.config.dns` substitutes the
addresses into the snapshot the core is given.

When it resolves (driven by :class:`~meshfast.control.sidecar.Sidecar`):

* at start, before the first snapshot is applied;
* on each ``POST /config``, for names the resolver has never seen (known names reuse the
  last answer; the periodic refresh keeps them current);
* every ``--dns-refresh`` seconds (default 30; 0 turns the refresh off), all names the current
  config needs; the snapshot is re-pushed (version + 1) only when a name's address *set*
  changed.  Istio/Envoy refresh at the record's TTL instead; ``getaddrinfo`` does not expose
  TTLs, so the interval is fixed.

Failures: a name that does not resolve (error, timeout, no address) keeps its last good
addresses; a name that never resolved stays a ``host:port`` endpoint, which the core resolves
when it connects.  Each failing name is logged to stderr once, until it resolves again.
Link-local IPv6 answers with a zone (``fe80::1%eth0``) are skipped: an endpoint address cannot
carry the zone.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TextIO

import trio

from meshfast.control.settings import DEFAULT_REFRESH_S as DEFAULT_REFRESH_S

__all__ = ["DEFAULT_REFRESH_S", "ResolveFn", "Resolver", "getaddrinfo"]

TIMEOUT_S = 5.0

ResolveFn = Callable[[str], Awaitable[tuple[str, ...]]]
"""Resolves a hostname to its IP addresses, in preference order; raises OSError on failure."""


async def getaddrinfo(host: str) -> tuple[str, ...]:
    """IPv4 and IPv6 addresses of ``host``, in ``getaddrinfo`` order, without duplicates."""
    infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
    out: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (trio.socket.AF_INET, trio.socket.AF_INET6):
            address = str(sockaddr[0])
            if "%" not in address:
                out.append(address)
    return tuple(dict.fromkeys(out))


class Resolver:
    """The last good addresses of each hostname, and how to refresh them."""

    def __init__(
        self,
        resolve: ResolveFn = getaddrinfo,
        *,
        timeout: float = TIMEOUT_S,
        log: TextIO | None = None,
    ) -> None:
        self._resolve = resolve
        self.timeout = timeout
        self._log = log
        self.addresses: dict[str, tuple[str, ...]] = {}
        self._seen: set[str] = set()
        self._failing: set[str] = set()

    def known(self, name: str) -> bool:
        """Whether ``name`` was looked up before (successfully or not)."""
        return name in self._seen

    async def refresh(self, names: Iterable[str], *, only_new: bool = False) -> bool:
        """Resolves ``names`` (with ``only_new``: those never looked up) concurrently.

        Returns whether any name's address set changed (a first success counts).
        """
        todo = sorted({n for n in names if not (only_new and n in self._seen)})
        if not todo:
            return False
        results: dict[str, tuple[str, ...] | str] = {}

        async def one(name: str) -> None:
            try:
                with trio.fail_after(self.timeout):
                    found = await self._resolve(name)
            except trio.TooSlowError:
                results[name] = f"no answer within {self.timeout:g}s"
            except (OSError, UnicodeError) as exc:
                results[name] = str(exc) or type(exc).__name__
            else:
                results[name] = tuple(found) if found else "no address"

        async with trio.open_nursery() as nursery:
            for name in todo:
                nursery.start_soon(one, name)

        # Imported here: a sidecar without DNS names never loads the IR types.
        from meshfast.config.dns import merge_addresses

        changed = False
        for name in todo:
            self._seen.add(name)
            result = results[name]
            if isinstance(result, str):
                if name not in self._failing:
                    self._failing.add(name)
                    kept = "its last addresses" if name in self.addresses else "the hostname"
                    self._warn(f"cannot resolve {name}: {result} (keeping {kept})")
                continue
            self._failing.discard(name)
            old = self.addresses.get(name)
            new = merge_addresses(old, result)
            if new != old:
                self.addresses[name] = new
                changed = True
        return changed

    def _warn(self, message: str) -> None:
        print(f"meshfast: {message}", file=self._log or sys.stderr, flush=True)

    async def watch(
        self,
        interval: float,
        names: Callable[[], Iterable[str]],
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        """Every ``interval`` seconds, refreshes ``names()`` and awaits ``on_change()`` if
        an address set changed.  Runs until cancelled."""
        while True:
            await trio.sleep(interval)
            if await self.refresh(names()):
                await on_change()
