"""Type stubs for the Rust core (rust/py). Keep in step with rust/py/src/lib.rs."""

from types import ModuleType
from typing import Any, Protocol, final

# (name, value) pairs in order; names lowercase.
HeaderList = list[tuple[str, str]]
# What the core tells a filter about a request: (method, path, query, authority, scheme,
# peer "ip:port", route name, cluster name, peer SPIFFE identity or "").
RequestInfo = tuple[str, str, str, str, str, str, str, str, str]

# What a filter phase answers (see meshfast.filters.dispatch for the whole protocol):
# None, ("continue", headers | None, body | None[, state]), ("respond", status, headers, body,
# state), ("error", status | None, message, timeout) or ("async", runner).
PhaseResult = tuple[object, ...] | None

class FilterDispatcher(Protocol):
    """Implemented by meshfast.filters; called by the core's workers with the GIL held.

    ``on_request`` continues, answers locally, reports a failure (flag ``FF``) or says
    ``("async", runner)``: the core then calls ``runner(completion)`` and waits, without
    blocking its worker, for ``completion.set(answer)``. ``on_response`` gets the ``state``
    of ``"continue"`` back; ``on_log`` tells how a request ended that got no response phase.
    An exception raised by the dispatcher itself answers the route's failure status.
    """

    def on_request(
        self,
        filters: tuple[int, ...],
        info: RequestInfo,
        headers: HeaderList,
        body: bytes | None = None,
    ) -> PhaseResult: ...
    def on_response(
        self,
        filters: tuple[int, ...],
        info: RequestInfo,
        status: int,
        headers: HeaderList,
        body: bytes | None = None,
        state: object = None,
    ) -> PhaseResult: ...
    def on_log(
        self, filters: tuple[int, ...], info: RequestInfo, status: int, flags: str, state: object
    ) -> None: ...

@final
class Completion:
    """Where an async filter phase's answer goes (made by the core, set from Trio)."""

    def set(self, result: PhaseResult, /) -> bool:
        """Delivers the answer; False when nobody waits any more."""

class SnapshotError(Exception):
    """The IR bytes could not be decoded or built (bad regex, unknown cluster kind, ...)."""

class CoreError(Exception):
    """The core could not do what was asked of it (a listener failed to bind, ...)."""

@final
class Core:
    """The data plane: worker threads that own sockets, HTTP, routing and balancing."""

    def __init__(self, *, workers: int = 0) -> None:
        """Starts `workers` threads (0: one per CPU).

        Nothing is bound until a snapshot is applied."""

    @property
    def workers(self) -> int: ...
    def apply_snapshot(self, snapshot: bytes) -> int:
        """Decodes and builds the msgpack IR, binds new listeners, closes removed ones and swaps
        the snapshot in atomically. Returns the snapshot version. On error nothing changes."""

    def install(self, snapshot: bytes, dispatcher: FilterDispatcher | None) -> int:
        """Like ``apply_snapshot``, with ``dispatcher`` (None: no filters) installed in the same
        atomic swap as the snapshot whose filter ids it serves. If the snapshot is refused,
        nothing changes: the current snapshot and dispatcher stay."""

    def protect(self, address: str) -> None:
        """Marks ``address`` (``ip:port``, e.g. the admin API's) as the sidecar's own: no
        original destination (iptables' or ``x-envoy-original-dst-host``) may name it.
        Raises ValueError when it is not ``ip:port``."""

    def set_workload(
        self, *, namespace: str, name: str, app: str, version: str, principal: str | None = None
    ) -> None:
        """This workload, for the labels of Istio's metrics at ``stats_prometheus()``
        (``source_*`` on the outbound side, ``destination_*`` on the inbound side; empty
        strings render as ``unknown``). Snapshots installed from now on use it."""

    def start_access_log(self, path: str, fields: list[str] | None = None) -> None:
        """Starts the access log: one JSON line per request to ``path`` (``-``: stdout), with
        ``fields`` (Envoy's names, in that order; None: all), written by a thread of its own
        through a bounded queue (drops counted in ``stats_json()["access_log"]``). Requests
        served by snapshots installed from now on are logged. Raises ValueError for an
        unknown field, OSError when ``path`` cannot be opened."""

    def start_tracing(self, percent: float) -> None:
        """Starts tracing: requests served by snapshots installed from now on read and
        propagate trace context; ``percent`` of those whose caller did not decide are
        sampled. Raises ValueError outside 0..100."""

    def take_spans(self) -> bytes:
        """The spans finished since the last call, as one span batch (decoded by
        ``meshfast.tracing.batch.decode``; its header counts spans dropped meanwhile)."""

    def report_span_export(self, exported: int, failed: int, dropped: int, /) -> None:
        """The exporter's totals so far, shown in ``stats_json()["tracing"]``."""

    def listeners(self) -> list[tuple[str, str]]:
        """(name, bound address) of every listener currently serving."""

    def stats_json(self) -> str:
        """Counters per listener, route and cluster as a JSON object."""

    def stats_prometheus(self) -> str:
        """The same counters in Prometheus text format."""

    def clusters_json(self) -> str:
        """Clusters with their endpoints, weights, live request counts, health, (with the
        failure-rate breaker) each endpoint's breaker state and (with PEAK_EWMA) its latency
        estimate ``ewma_ms``, as JSON."""

    def shutdown(self, drain_timeout: float = 5.0) -> None:
        """Stops accepting, lets in-flight requests finish for up to `drain_timeout` seconds,
        then stops the workers. Releases the GIL while waiting."""

@final
class EchoServer:
    """The built-in upstream (`meshfast echo`), served on its own threads."""

    def __init__(
        self,
        listen: str,
        *,
        name: str = "echo",
        status: int = 200,
        delay_ms: int = 0,
        workers: int = 1,
    ) -> None: ...
    @property
    def address(self) -> str: ...
    def stop(self) -> None: ...

def cert_identity(path: str) -> str | None:
    """The SPIFFE ID (``spiffe://...`` URI SAN) of the first certificate in a PEM file, or None.
    Raises CoreError when the file cannot be read."""

def encode_span_batch(
    spans: list[tuple[object, ...]], max_spans: int = 65535, max_bytes: int = 1 << 24
) -> bytes:
    """A span batch as the core writes it, from tuples of ``meshfast.tracing.spans.Span``'s
    fields in order; spans past ``max_spans`` or ``max_bytes`` are counted as dropped."""

def trim_memory() -> bool:
    """Returns the C heap's free pages to the system (glibc ``malloc_trim``); True when
    something was released, False when nothing was or off glibc."""

def explain_route(
    snapshot: bytes,
    listener: str,
    *,
    method: str,
    scheme: str,
    authority: str,
    target: str,
    headers: list[tuple[str, str]],
) -> dict[str, Any]:
    """The route ``listener`` of the IR ``snapshot`` gives a request, as the workers route it
    (path normalized, host looked up): ``{"path", "virtual_host", "matched", "routes"}``,
    ``routes`` the virtual host's routes up to the one taken, each ``{"name", "miss"}`` with
    the first condition it fails (``uri``, ``method``, ``headers[x-user]``, …; None for the
    one taken).  ValueError for a listener that is not there or not HTTP, or a bad header;
    SnapshotError for IR that does not decode."""

def ir_roundtrip(snapshot: bytes) -> bytes:
    """Decodes IR bytes in Rust and encodes them again (for tests of the IR contract)."""

def authz_verdict(
    snapshot: bytes, facts: dict[str, object], tcp: bool = False
) -> tuple[bool, str | None]:
    """The core's AuthorizationPolicy verdict on one request (``tcp``: one connection) under
    ``snapshot``'s policies: (allowed, the deciding policy's ``namespace/name``). ``facts``:
    principal, peer, destination (``ip:port``), sni, authority, method, path, headers."""

def response_flags() -> list[tuple[str, int]]:
    """Every response flag the core sets, ``(name, status)``, in rendering order."""

__version__: str

# The Cython modules linked into this one (rust/py/src/speedups.rs), also in sys.modules
# as meshfast._headers, meshfast._steps and meshfast._spanbatch: import them by those names.
_headers: ModuleType
_steps: ModuleType
_spanbatch: ModuleType
