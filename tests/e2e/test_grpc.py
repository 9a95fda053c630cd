"""gRPC through the sidecar with real grpcio clients and servers: unary,
streaming both ways, grpc-status aware retries and fault aborts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from .conftest import service_entry

AUTHORITY = "grpc.example.com:50051"


class Service(grpc.GenericRpcHandler):
    """Raw-bytes methods, so no generated code is needed."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method == "/test.Echo/Unary":
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"unary:" + req)
        if method == "/test.Echo/ServerStream":
            return grpc.unary_stream_rpc_method_handler(
                lambda req, ctx: (b"%d" % i for i in range(int(req)))
            )
        if method == "/test.Echo/Bidi":
            return grpc.stream_stream_rpc_method_handler(
                lambda reqs, ctx: (b"bidi:" + r for r in reqs)
            )
        if method == "/test.Echo/FlakyOnce":
            return grpc.unary_unary_rpc_method_handler(self.flaky_once)
        return None

    def flaky_once(self, req: bytes, ctx: grpc.ServicerContext) -> bytes:
        with self.lock:
            first = req not in self.seen
            self.seen.add(req)
        if first:
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok:" + req


@pytest.fixture
def grpc_upstream() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((Service(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def mesh(upstream: str, http: str = "") -> str:
    config = service_entry("grpc.example.com", 50051, [(upstream, {})], protocol="GRPC")
    if http:
        config += f"""---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc}}
spec:
  hosts: [grpc.example.com]
  http:
{http}"""
    return config


def channel(car) -> grpc.Channel:  # type: ignore[no-untyped-def]
    return grpc.insecure_channel(car.outbound, options=[("grpc.default_authority", AUTHORITY)])


def test_unary_and_streaming(grpc_upstream: str, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(mesh(grpc_upstream))
    with channel(car) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        assert unary(b"hi", timeout=10) == b"unary:hi"
        stream = ch.unary_stream("/test.Echo/ServerStream")
        assert list(stream(b"50", timeout=10)) == [b"%d" % i for i in range(50)]
        bidi = ch.stream_stream("/test.Echo/Bidi")
        out = list(bidi(iter([b"a", b"b", b"c"]), timeout=10))
        assert out == [b"bidi:a", b"bidi:b", b"bidi:c"]


def test_retry_on_grpc_unavailable(grpc_upstream: str, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(
        mesh(
            grpc_upstream,
            """  - retries: {attempts: 2, retryOn: unavailable}
    route: [{destination: {host: grpc.example.com}}]
""",
        )
    )
    with channel(car) as ch:
        flaky = ch.unary_unary("/test.Echo/FlakyOnce")
        for i in range(5):
            assert flaky(b"call-%d" % i, timeout=10) == b"ok:call-%d" % i


def test_without_grpc_retry_the_status_reaches_the_client(grpc_upstream: str, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(
        mesh(
            grpc_upstream,
            """  - retries: {attempts: 0}
    route: [{destination: {host: grpc.example.com}}]
""",
        )
    )
    with channel(car) as ch:
        flaky = ch.unary_unary("/test.Echo/FlakyOnce")
        with pytest.raises(grpc.RpcError) as err:
            flaky(b"once", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_fault_abort_with_grpc_status(grpc_upstream: str, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(
        mesh(
            grpc_upstream,
            """  - fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}
    route: [{destination: {host: grpc.example.com}}]
""",
        )
    )
    with channel(car) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        with pytest.raises(grpc.RpcError) as err:
            unary(b"x", timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
