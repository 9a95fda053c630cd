"""A token bucket per client IP: ``rate`` requests a second, bursts of ``burst``; 429 beyond.

.. code-block:: yaml

    apiVersion: meshfast.io/v1alpha1
    kind: HttpFilter
    metadata:
      name: ratelimit
    spec:
      python: ratelimit:RateLimit
      config: {rate: 10, burst: 20}
"""

from __future__ import annotations

import threading
import time
from typing import Annotated

import msgspec

from meshfast.filters import HttpFilter, Request, Response


class RateLimit(HttpFilter):
    class Config(msgspec.Struct, forbid_unknown_fields=True):
        rate: Annotated[float, msgspec.Meta(gt=0)]
        burst: Annotated[int, msgspec.Meta(ge=1)] = 1
        max_clients: Annotated[int, msgspec.Meta(ge=1)] = 100_000

    config: Config

    def __init__(self, config: Config, clock: object = None) -> None:
        super().__init__(config)
        self.clock = clock if callable(clock) else time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, last refill)
        self._lock = threading.Lock()  # the core's workers call filters from several threads

    def allow(self, ip: str) -> bool:
        now: float = self.clock()
        c = self.config
        with self._lock:
            tokens, last = self._buckets.get(ip, (float(c.burst), now))
            tokens = min(float(c.burst), tokens + (now - last) * c.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            if ip not in self._buckets and len(self._buckets) >= c.max_clients:
                self._buckets.clear()  # crude bound on memory
            self._buckets[ip] = (tokens, now)
        return allowed

    def on_request(self, request: Request) -> Response | None:
        if self.allow(request.peer_ip):
            return None
        return Response(
            429, headers={"retry-after": "1", "content-type": "text/plain"}, body="rate limited\n"
        )
