"""Python's IR (config/ir.py) and Rust's (rust/ir) agree field for field."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from meshfast import _core
from meshfast.config import ir

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0-9.|:", min_size=1, max_size=20)
string_match = st.builds(
    ir.StringMatch,
    kind=st.sampled_from(["exact", "prefix", "regex"]),
    value=st.text(max_size=10),
    ignore_case=st.booleans(),
)
route_match = st.builds(
    ir.RouteMatch,
    path=st.none() | string_match,
    method=st.none() | string_match,
    authority=st.none() | string_match,
    scheme=st.none() | string_match,
    headers=st.lists(
        st.builds(ir.HeaderMatch, name=names, value=st.none() | string_match, invert=st.booleans()),
        max_size=3,
    ).map(tuple),
    query_params=st.lists(
        st.builds(ir.QueryMatch, name=names, value=st.none() | string_match), max_size=2
    ).map(tuple),
)
weighted = st.lists(
    st.builds(ir.WeightedCluster, cluster=names, weight=st.integers(0, 1000)), max_size=3
).map(tuple)
route = st.builds(
    ir.Route,
    name=names,
    match_=route_match,
    action=st.builds(ir.RouteAction, clusters=weighted, timeout_ms=st.integers(0, 10**6)),
)
snapshot = st.builds(
    ir.Snapshot,
    version=st.integers(0, 2**40),
    listeners=st.lists(
        st.builds(
            ir.Listener,
            name=names,
            address=names,
            protocol=st.sampled_from(["http", "tcp"]),
            route_table=st.none() | names,
            tcp_routes=st.lists(
                st.builds(ir.TcpRoute, name=names, clusters=weighted), max_size=2
            ).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    route_tables=st.lists(
        st.builds(
            ir.RouteTable,
            name=names,
            virtual_hosts=st.lists(
                st.builds(
                    ir.VirtualHost,
                    name=names,
                    domains=st.lists(names, max_size=3).map(tuple),
                    routes=st.lists(route, max_size=3).map(tuple),
                ),
                max_size=2,
            ).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
    clusters=st.lists(
        st.builds(
            ir.Cluster,
            name=names,
            lb=st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]),
            protocol=st.sampled_from(["http1", "http2", "tcp"]),
            connect_timeout_ms=st.integers(0, 10**6),
            endpoints=st.lists(
                st.builds(
                    ir.Endpoint,
                    address=names,
                    weight=st.integers(0, 1000),
                    labels=st.dictionaries(names, names, max_size=2),
                ),
                max_size=3,
            ).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(snapshot)
def test_rust_decodes_and_reencodes_every_field(snap: ir.Snapshot) -> None:
    back = msgspec.msgpack.decode(_core.ir_roundtrip(ir.encode(snap)), type=ir.Snapshot)
    assert back == snap


def test_garbage_is_a_snapshot_error() -> None:
    import pytest

    with pytest.raises(_core.SnapshotError):
        _core.ir_roundtrip(b"\xc1not msgpack")
