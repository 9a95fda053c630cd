"""HTTP/2 specifics over one raw h2c connection: trailers both ways, 100 concurrent streams."""

from __future__ import annotations

import json
import socket

import h2.config
import h2.connection
import h2.events

from .conftest import service_entry


class H2Client:
    """A minimal blocking h2c prior-knowledge client on one connection."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(
        self,
        path: str,
        authority: str,
        body: bytes = b"",
        trailers: list[tuple[str, str]] | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST" if body or trailers else "GET"),
            (":path", path),
            (":scheme", "http"),
            (":authority", authority),
            *(extra or []),
        ]
        end_on_headers = not body and not trailers
        self.conn.send_headers(sid, headers, end_stream=end_on_headers)
        if body:
            self.conn.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.conn.send_headers(sid, trailers, end_stream=True)
        self.flush()
        return sid

    def collect(self, stream_ids: set[int]) -> dict[int, dict[str, object]]:
        results: dict[int, dict[str, object]] = {
            sid: {"headers": {}, "body": b"", "trailers": {}} for sid in stream_ids
        }
        open_ids = set(stream_ids)
        while open_ids:
            data = self.sock.recv(65536)
            assert data, "connection closed early"
            for event in self.conn.receive_data(data):
                sid = getattr(event, "stream_id", None)
                if isinstance(event, h2.events.ResponseReceived):
                    results[sid]["headers"] = dict(_decode(event.headers))
                elif isinstance(event, h2.events.TrailersReceived):
                    results[sid]["trailers"] = dict(_decode(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    results[sid]["body"] += event.data  # type: ignore[operator]
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    open_ids.discard(sid)
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream {sid} reset: {event.error_code}")
            self.flush()
        return results

    def close(self) -> None:
        self.conn.close_connection()
        self.flush()
        self.sock.close()


def _decode(headers: list[tuple[bytes | str, bytes | str]]) -> list[tuple[str, str]]:
    return [
        (k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
        for k, v in headers
    ]


def grpc_mesh(echo) -> str:  # type: ignore[no-untyped-def]
    servers = [echo("g1"), echo("g2")]
    return service_entry(
        "grpc.example.com", 50051, [(s.address, {}) for s in servers], protocol="GRPC"
    )


def test_request_trailers_come_back_as_response_trailers(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(grpc_mesh(echo))
    client = H2Client(car.outbound)
    sid = client.request(
        "/pkg.Svc/Method",
        "grpc.example.com:50051",
        body=b"\x00\x00\x00\x00\x05hello",
        trailers=[("grpc-status", "0"), ("x-checksum", "abc")],
        extra=[("content-type", "application/grpc"), ("te", "trailers")],
    )
    result = client.collect({sid})[sid]
    client.close()
    assert result["headers"][":status"] == "200"  # type: ignore[index]
    reply = json.loads(result["body"])  # type: ignore[arg-type]
    assert reply["body_bytes"] == 10
    assert reply["protocol"] == "HTTP/2.0"
    # The upstream sees the authority the client asked for, not the endpoint address.
    assert reply["authority"] == "grpc.example.com:50051"
    assert result["trailers"] == {"grpc-status": "0", "x-checksum": "abc"}


def test_100_concurrent_streams_on_one_connection(echo, sidecar) -> None:  # type: ignore[no-untyped-def]
    car = sidecar(grpc_mesh(echo))
    client = H2Client(car.outbound)
    ids = {
        client.request(f"/s/{i}", "grpc.example.com:50051", extra=[("x-echo-delay-ms", "50")])
        for i in range(100)
    }
    results = client.collect(ids)
    client.close()
    assert len(results) == 100
    for r in results.values():
        assert r["headers"][":status"] == "200"  # type: ignore[index]
    served = {json.loads(r["body"])["name"] for r in results.values()}  # type: ignore[arg-type]
    assert served == {"g1", "g2"}
