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
header_values = st.lists(st.builds(ir.HeaderValue, name=names, value=names), max_size=2).map(tuple)
header_ops = st.builds(
    ir.HeaderOps,
    set=header_values,
    add=header_values,
    remove=st.lists(names, max_size=2).map(tuple),
)
weighted = st.lists(
    st.builds(
        ir.WeightedCluster,
        cluster=names,
        weight=st.integers(0, 1000),
        request_headers=header_ops,
        response_headers=header_ops,
    ),
    max_size=3,
).map(tuple)
opt_names = st.none() | names
authz_value = st.builds(
    ir.AuthzValue,
    kind=st.sampled_from(
        ["exact", "prefix", "suffix", "present", "regex", "cidr", "port", "template"]
    ),
    value=st.text(max_size=10),
)
authz_condition = st.builds(
    ir.AuthzCondition,
    attribute=st.sampled_from(
        [
            "source_principal",
            "source_ip",
            "remote_ip",
            "destination_ip",
            "destination_port",
            "sni",
            "host",
            "method",
            "path",
            "header",
            "request_auth",
            "metadata",
        ]
    ),
    key=names,
    values=st.lists(authz_value, max_size=2).map(tuple),
    not_values=st.lists(authz_value, max_size=2).map(tuple),
)
conditions = st.lists(authz_condition, max_size=2).map(tuple)
authz_policies = st.lists(
    st.builds(
        ir.AuthzPolicy,
        name=names,
        action=st.sampled_from(["ALLOW", "DENY", "AUDIT"]),
        dry_run=st.booleans(),
        rules=st.lists(
            st.builds(
                ir.AuthzRule,
                from_=st.lists(conditions, max_size=2).map(tuple),
                to=st.lists(conditions, max_size=2).map(tuple),
                when=conditions,
            ),
            max_size=2,
        ).map(tuple),
    ),
    max_size=2,
).map(tuple)
route_action = st.builds(
    ir.RouteAction,
    clusters=weighted,
    timeout_ms=st.integers(0, 10**6),
    redirect=st.none()
    | st.builds(
        ir.Redirect,
        scheme=opt_names,
        authority=opt_names,
        port=st.none() | st.integers(0, 65535),
        derive_port=st.none() | st.sampled_from(["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"]),
        path=opt_names,
        prefix_rewrite=opt_names,
        code=st.sampled_from([301, 302, 308]),
    ),
    direct_response=st.none()
    | st.builds(ir.DirectResponse, status=st.integers(200, 599), body=st.none() | st.binary()),
    rewrite=st.none()
    | st.builds(
        ir.Rewrite,
        uri=opt_names,
        authority=opt_names,
        regex=st.none() | st.builds(ir.RegexRewrite, pattern=names, substitution=names),
    ),
    request_headers=header_ops,
    response_headers=header_ops,
    retry=st.none()
    | st.builds(
        ir.RetryPolicy,
        attempts=st.integers(0, 10),
        per_try_timeout_ms=st.integers(0, 10**6),
        retry_on=st.lists(names, max_size=3).map(tuple),
        retriable_status_codes=st.lists(st.integers(100, 599), max_size=3).map(tuple),
        backoff_base_ms=st.integers(0, 1000),
        previous_hosts=st.booleans(),
        remote_localities=st.booleans(),
    ),
    fault=st.none()
    | st.builds(
        ir.Fault,
        delay_ms=st.integers(0, 10**6),
        delay_millionths=st.integers(0, 10**6),
        abort_http_status=st.none() | st.integers(200, 599),
        abort_grpc_status=st.none() | st.integers(0, 16),
        abort_millionths=st.integers(0, 10**6),
    ),
    mirrors=st.lists(
        st.builds(ir.Mirror, cluster=names, millionths=st.integers(0, 10**6)), max_size=2
    ).map(tuple),
    filters=st.lists(
        st.builds(
            ir.FilterRef,
            id=st.integers(0, 2**31),
            name=names,
            failure_status=st.integers(200, 599),
            timeout_ms=st.integers(0, 2**40),
            request_body_limit=st.integers(0, 2**32 - 1),
            response_body_limit=st.integers(0, 2**32 - 1),
        ),
        max_size=2,
    ).map(tuple),
    cors=st.none()
    | st.builds(
        ir.Cors,
        allow_origins=st.lists(string_match, max_size=2).map(tuple),
        allow_methods=st.lists(names, max_size=2).map(tuple),
        allow_headers=st.lists(names, max_size=2).map(tuple),
        expose_headers=st.lists(names, max_size=2).map(tuple),
        max_age_s=st.none() | st.integers(0, 10**6),
        allow_credentials=st.none() | st.booleans(),
        forward_unmatched_preflights=st.booleans(),
    ),
)
route = st.builds(
    ir.Route,
    stat_prefix=st.none() | names,
    name=names,
    match_=route_match,
    action=route_action,
)
snapshot = st.builds(
    ir.Snapshot,
    version=st.integers(0, 2**40),
    listeners=st.lists(
        st.builds(
            ir.Listener,
            name=names,
            address=names,
            protocol=st.sampled_from(["http", "tcp", "tls"]),
            route_table=st.none() | names,
            tcp_routes=st.lists(
                st.builds(ir.TcpRoute, name=names, clusters=weighted), max_size=2
            ).map(tuple),
            tls=st.none()
            | st.builds(
                ir.TlsServer,
                cert_chain=names,
                private_key=names,
                client_ca=st.none() | names,
                min_version=st.none() | st.sampled_from(["TLSV1_2", "TLSV1_3"]),
                permissive=st.booleans(),
                forward_client_cert=st.booleans(),
            ),
            sni_routes=st.lists(
                st.builds(
                    ir.SniRoute,
                    name=names,
                    sni_hosts=st.lists(names, max_size=2).map(tuple),
                    clusters=weighted,
                ),
                max_size=2,
            ).map(tuple),
            authz=st.booleans(),
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
            lb=st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PEAK_EWMA"]),
            protocol=st.sampled_from(["http1", "http2", "tcp"]),
            connect_timeout_ms=st.integers(0, 10**6),
            original_dst=st.booleans(),
            tls=st.none()
            | st.builds(
                ir.UpstreamTls,
                ca_certs=st.none() | names,
                client_cert=st.none() | names,
                private_key=st.none() | names,
                sni=st.none() | names,
                subject_alt_names=st.lists(names, max_size=2).map(tuple),
                insecure_skip_verify=st.booleans(),
                istio_mutual=st.booleans(),
                trust_domain=st.none() | names,
            ),
            outlier=st.none()
            | st.builds(
                ir.OutlierDetection,
                consecutive_5xx=st.integers(0, 100),
                consecutive_gateway=st.integers(0, 100),
                interval_ms=st.integers(1, 10**6),
                base_ejection_ms=st.integers(1, 10**6),
                max_ejection_percent=st.integers(0, 100),
                min_health_percent=st.integers(0, 100),
            ),
            failure_rate=st.none()
            | st.builds(
                ir.FailureRateBreaker,
                threshold=st.floats(0, 1),
                tau_ms=st.integers(1, 10**6),
                min_requests=st.integers(0, 2**32 - 1),
                cool_down_ms=st.integers(1, 10**6),
                max_cool_down_ms=st.integers(1, 10**6),
                probes=st.integers(0, 2**32 - 1),
            ),
            limits=st.none()
            | st.builds(
                ir.ConnectionLimits,
                max_connections=st.integers(0, 2**32 - 1),
                max_pending_requests=st.integers(0, 2**32 - 1),
                max_requests=st.integers(0, 2**32 - 1),
                max_retries=st.integers(0, 2**32 - 1),
            ),
            warmup=st.none()
            | st.builds(
                ir.Warmup,
                duration_ms=st.integers(1, 10**6),
                min_percent=st.floats(0, 100),
                aggression=st.floats(0.1, 10),
            ),
            hash=st.none()
            | st.builds(
                ir.HashPolicy,
                source=st.sampled_from(["header", "cookie", "source_ip", "query"]),
                name=names,
                cookie_ttl_ms=st.none() | st.integers(0, 10**9),
                cookie_path=st.none() | names,
                algorithm=st.sampled_from(["ring", "maglev"]),
                table_size=st.integers(1, 10**6),
            ),
            endpoints=st.lists(
                st.builds(
                    ir.Endpoint,
                    address=names,
                    weight=st.integers(0, 1000),
                    labels=st.dictionaries(names, names, max_size=2),
                    locality=names,
                    priority=st.integers(0, 5),
                ),
                max_size=3,
            ).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    path_normalization=st.sampled_from(
        ["none", "base", "merge_slashes", "decode_and_merge_slashes"]
    ),
    original_dst_header=st.booleans(),
    downstream=st.builds(
        ir.Downstream,
        request_headers_timeout_ms=st.integers(0, 2**40),
        idle_timeout_ms=st.integers(0, 2**40),
        max_connections=st.integers(0, 2**32 - 1),
    ),
    authz=authz_policies,
    authz_tcp=authz_policies,
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
