"""The keep-alive race (RELIABILITY.md §3 case 28, the "503 UC" of Istio): an upstream
closes idle pooled connections at its own keep-alive timeout while requests arrive
steadily. No client may see an error."""

from __future__ import annotations

import os
import random
import threading
import time

import httpx

from .conftest import service_entry
from .keepalive_upstream import KeepAliveUpstream

# The upstream's keep-alive timeout; requests arrive at random gaps around it, so many
# find their pooled connection being closed just then.
IDLE_MS = 10.0
REQUESTS = int(os.environ.get("MESHFAST_RACE_REQUESTS", "3000"))
CLIENTS = 2  # ~200 requests/s together (gaps uniform in [0, 2 x IDLE_MS])


def test_keepalive_race_gives_no_client_visible_error(sidecar) -> None:  # type: ignore[no-untyped-def]
    """Case 28: 0 client-visible errors for idempotent requests while the upstream closes
    idle connections at its own timeout (the race counted: ``idle_closes``)."""
    up = KeepAliveUpstream(idle_ms=IDLE_MS)
    try:
        car = sidecar(service_entry("ka.example.com", 80, [(up.address, {})]))
        failures: list[str] = []
        done = [0]
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            deadline = time.monotonic() + 300
            with httpx.Client(base_url=car.url, headers={"host": "ka.example.com"}) as c:
                for _ in range(REQUESTS // CLIENTS):  # bounded in count and time
                    if time.monotonic() > deadline:
                        return
                    time.sleep(rng.uniform(0, 2 * IDLE_MS) / 1000)
                    try:
                        r = c.get("/", timeout=30)
                        ok = r.status_code == 200 and r.text == "ka"
                        outcome = "" if ok else f"{r.status_code} {r.headers} {r.text!r}"
                    except httpx.HTTPError as exc:
                        outcome = repr(exc)
                    with lock:
                        done[0] += 1
                        if outcome:
                            failures.append(outcome)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(
            f"{done[0]} requests, {up.accepted} upstream connections, "
            f"{up.idle_closes} closed idle by the upstream, {len(failures)} failed"
        )
        assert done[0] == REQUESTS // CLIENTS * CLIENTS
        assert up.idle_closes > 0  # the race was run
        assert failures == []
    finally:
        up.stop()


def test_a_pooled_connection_closed_under_a_request_resends_only_idempotent_ones(sidecar) -> None:  # type: ignore[no-untyped-def]
    """Case 28, made certain: the upstream answers one request per connection, then reads
    the next and closes without answering. A GET written to such a reused connection is
    sent again on another (the client sees 200); a POST is not (it may have been
    processed): 503 UC, as the default retry policy does not retry a reset."""
    up = KeepAliveUpstream(idle_ms=None, answers=1)
    try:
        car = sidecar(service_entry("ka.example.com", 80, [(up.address, {})]), workers=1)
        with httpx.Client(base_url=car.url, headers={"host": "ka.example.com"}) as c:
            for _ in range(20):
                r = c.get("/", timeout=30)
                assert (r.status_code, r.text) == (200, "ka")
            assert up.dropped >= 19  # each GET after the first met a closing connection
            assert c.get("/", timeout=30).status_code == 200  # leaves one pooled to drop
            r = c.post("/", timeout=30)
            assert r.status_code == 503, r.text
            assert r.headers["x-meshfast-flags"] == "UC", r.headers
    finally:
        up.stop()
