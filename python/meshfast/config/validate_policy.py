"""Semantic checks of DestinationRule traffic policies (``trafficPolicy``, subset and port level).

Follows istiod's validation (``validateTrafficPolicy`` / ``validateLoadBalancer`` /
``ValidateLocalityLbSetting`` / ``validateOutlierDetection``) where meshfast implements the
field, plus the protobuf oneofs istiod gets from decoding: ``simple`` vs ``consistentHash``, the
hash key, the hash algorithm.  Beyond istiod: a warmup needs ``ROUND_ROBIN`` or
``LEAST_REQUEST`` (others would ignore it), and ``distribute`` excludes ``failoverPriority``.
"""

from __future__ import annotations

from collections.abc import Iterator

from meshfast.config import policy
from meshfast.config import resources as r
from meshfast.config.duration import parse_ms
from meshfast.config.duration import problems as duration_problems
from meshfast.config.load import child

Issue = tuple[str, str]  # (JSON path, message)

_HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")


def is_prime(x: int) -> bool:
    """Envoy's (and istiod's) primality test: 1, 2 and 3 count as prime."""
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    i = 3
    while i * i <= x:
        if x % i == 0:
            return False
        i += 2
    return True


def duration(text: str, path: str) -> Iterator[Issue]:
    """istiod's ``ValidateDuration``: at least 1ms, whole milliseconds."""
    yield from duration_problems(text, path, whole_ms=True)


def traffic_policy(tp: r.TrafficPolicy | None, path: str) -> Iterator[Issue]:
    if tp is None:
        return
    yield from load_balancer(tp.load_balancer, f"{path}.loadBalancer")
    yield from outlier_detection(tp.outlier_detection, f"{path}.outlierDetection")
    yield from client_tls(tp.tls, f"{path}.tls")
    yield from connection_pool(tp.connection_pool, f"{path}.connectionPool")
    seen: dict[int, int] = {}
    for i, pls in enumerate(tp.port_level_settings):
        p = f"{path}.portLevelSettings[{i}]"
        number = pls.port.number
        if number in seen:
            yield (
                f"{p}.port.number",
                f"duplicate port {number} (portLevelSettings[{seen[number]}] already sets it)",
            )
        seen.setdefault(number, i)
        if (
            pls.load_balancer is None
            and pls.outlier_detection is None
            and pls.tls is None
            and pls.connection_pool is None
        ):
            yield p, "port traffic policy must have at least one field besides port"
        yield from connection_pool(pls.connection_pool, f"{p}.connectionPool")
        yield from load_balancer(pls.load_balancer, f"{p}.loadBalancer")
        yield from outlier_detection(pls.outlier_detection, f"{p}.outlierDetection")
        yield from client_tls(pls.tls, f"{p}.tls")


def connection_pool(cp: r.ConnectionPoolSettings | None, path: str) -> Iterator[Issue]:
    """istiod's ``validateConnectionPool``: at least one of tcp and http; limits are
    non-negative (the structural check); ``connectTimeout`` a duration of at least 1ms."""
    if cp is None:
        return
    if cp.tcp is None and cp.http is None:
        yield path, "connection pool must have at least one field"
    if cp.tcp is not None and cp.tcp.connect_timeout is not None:
        yield from duration(cp.tcp.connect_timeout, f"{path}.tcp.connectTimeout")


def client_tls(tls: r.ClientTLSSettings | None, path: str) -> Iterator[Issue]:
    """DestinationRule ``tls``: SIMPLE and MUTUAL originate TLS from PEM files; ISTIO_MUTUAL
    with the sidecar's own mesh identity."""
    if tls is None:
        return
    if tls.mode == "ISTIO_MUTUAL":
        if tls.client_certificate or tls.private_key or tls.ca_certificates:
            # istiod: the mesh identity replaces them.
            yield path, "ISTIO_MUTUAL uses the mesh identity: no certificates may be given"
        for i, san in enumerate(tls.subject_alt_names):
            if not san.startswith("spiffe://"):
                yield (
                    f"{path}.subjectAltNames[{i}]",
                    f'with ISTIO_MUTUAL a subject alt name is a SPIFFE ID, got "{san}"',
                )
    if tls.mode == "MUTUAL" and not (tls.client_certificate and tls.private_key):
        yield path, "MUTUAL needs clientCertificate and privateKey"
    if tls.mode in ("DISABLE", "SIMPLE") and (tls.client_certificate or tls.private_key):
        yield path, f"clientCertificate and privateKey are only used with MUTUAL, not {tls.mode}"


def outlier_detection(od: r.OutlierDetection | None, path: str) -> Iterator[Issue]:
    # Thresholds and percentages are range-checked by the structural check; the deprecated
    # consecutiveErrors is only a warning in istiod.
    if od is None:
        return
    if od.interval is not None:
        yield from duration(od.interval, f"{path}.interval")
    if od.base_ejection_time is not None:
        yield from duration(od.base_ejection_time, f"{path}.baseEjectionTime")


def load_balancer(lb: r.LoadBalancerSettings | None, path: str) -> Iterator[Issue]:
    if lb is None:
        return
    if lb.simple is not None and lb.consistent_hash is not None:
        yield path, "only one of simple or consistentHash may be set"
    yield from consistent_hash(lb.consistent_hash, f"{path}.consistentHash")
    yield from locality_lb(lb.locality_lb_setting, f"{path}.localityLbSetting")
    yield from warmup(lb, path)


def warmup(lb: r.LoadBalancerSettings, path: str) -> Iterator[Issue]:
    if lb.warmup is not None:
        yield from duration(lb.warmup.duration, f"{path}.warmup.duration")
    if lb.warmup_duration_secs is not None:
        yield from duration(lb.warmup_duration_secs, f"{path}.warmupDurationSecs")
    if lb.warmup is None and lb.warmup_duration_secs is None:
        return
    field = f"{path}.warmup" if lb.warmup is not None else f"{path}.warmupDurationSecs"
    if lb.consistent_hash is not None:
        policy_name = "consistentHash"
    elif lb.simple in ("RANDOM", "PASSTHROUGH"):
        policy_name = lb.simple
    else:
        return
    yield field, f"warmup applies only to ROUND_ROBIN and LEAST_REQUEST, not {policy_name}"


def consistent_hash(ch: r.ConsistentHashLB | None, path: str) -> Iterator[Issue]:
    if ch is None:
        return
    keys = [
        name
        for name, value in zip(
            _HASH_KEYS,
            (ch.http_header_name, ch.http_cookie, ch.use_source_ip, ch.http_query_parameter_name),
            strict=True,
        )
        if value is not None
    ]
    if not keys:
        yield path, f"one hash key is required: {', '.join(_HASH_KEYS)}"
    elif len(keys) > 1:
        yield path, f"only one hash key may be set (got {', '.join(keys)})"
    if ch.use_source_ip is False and keys == ["useSourceIp"]:
        yield f"{path}.useSourceIp", "useSourceIp: false selects no hash key"
    if ch.http_header_name is not None and not ch.http_header_name.strip():
        yield f"{path}.httpHeaderName", "header name must not be empty"
    if ch.http_query_parameter_name is not None and not ch.http_query_parameter_name:
        yield f"{path}.httpQueryParameterName", "query parameter name must not be empty"
    if ch.http_cookie is not None:
        cookie = ch.http_cookie
        if not cookie.name:
            yield f"{path}.httpCookie.name", "cookie name must not be empty"
        if cookie.ttl is not None:
            try:
                parse_ms(cookie.ttl)
            except ValueError as e:
                yield f"{path}.httpCookie.ttl", str(e)
    if ch.ring_hash is not None and ch.maglev is not None:
        yield path, "only one of ringHash or maglev may be set"
    if ch.minimum_ring_size and (ch.ring_hash is not None or ch.maglev is not None):
        yield (
            f"{path}.minimumRingSize",
            "only one of minimumRingSize (deprecated) or ringHash/maglev may be set",
        )
    ring = ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else None
    for size, p in ((ch.minimum_ring_size, path), (ring, f"{path}.ringHash")):
        if size is not None and size > policy.MAX_RING_SIZE:
            yield (
                f"{p}.minimumRingSize",
                f"must be at most {policy.MAX_RING_SIZE} (the maximum ring size), got {size}",
            )
    if ch.maglev is not None and ch.maglev.table_size is not None:
        size = ch.maglev.table_size
        p = f"{path}.maglev.tableSize"
        if size >= policy.MAX_MAGLEV_SIZE:
            yield p, f"tableSize must be less than {policy.MAX_MAGLEV_SIZE} for maglev, got {size}"
        elif not is_prime(size):
            yield p, f"tableSize must be a prime number for maglev, got {size}"


def _locality_pattern(pattern: str, path: str) -> Iterator[Issue]:
    parts = pattern.split("/")
    if len(parts) > 3:
        yield path, f'locality "{pattern}" must be region/zone/subzone'
    elif any(not p.strip() for p in parts):
        yield path, f'locality "{pattern}" must not have an empty region, zone or subzone'
    elif any("*" in p for p in parts[:-1]) or (parts[-1] != "*" and "*" in parts[-1]):
        yield path, f'locality "{pattern}": a wildcard "*" may only be the whole last part'


def _overlaps(patterns: list[tuple[str, str]]) -> Iterator[Issue]:
    """Problems for patterns (``(pattern, path)``) matching a locality an earlier one matches."""
    for i, (pattern, path) in enumerate(patterns):
        for other, _ in patterns[:i]:
            if policy.patterns_overlap(pattern, other):
                yield path, f'locality "{pattern}" overlaps with "{other}"'
                break


def locality_lb(setting: r.LocalityLbSetting | None, path: str) -> Iterator[Issue]:
    if setting is None:
        return
    froms: list[tuple[str, str]] = []
    for i, rule in enumerate(setting.distribute):
        p = f"{path}.distribute[{i}]"
        if not rule.from_:
            yield p, 'missing required field "from"'
        else:
            bad = list(_locality_pattern(rule.from_, f"{p}.from"))
            yield from bad
            if not bad:
                froms.append((rule.from_, f"{p}.from"))
        if not rule.to:
            yield p, 'missing required field "to"'
            continue
        tos: list[tuple[str, str]] = []
        for locality, weight in rule.to.items():
            kp = child(f"{p}.to", locality)
            bad = list(_locality_pattern(locality, kp))
            yield from bad
            if not bad:
                tos.append((locality, kp))
            if not 1 <= weight <= 100:
                yield kp, f"locality weight must be between 1 and 100, got {weight}"
        total = sum(rule.to.values())
        if total != 100:
            yield f"{p}.to", f"locality weights must sum to 100, got {total}"
        yield from _overlaps(tos)
    yield from _overlaps(froms)
    if setting.distribute and setting.failover:
        yield path, "only one of distribute or failover may be set"
    if setting.distribute and setting.failover_priority:
        yield path, "only one of distribute or failoverPriority may be set"
    for i, fo in enumerate(setting.failover):
        p = f"{path}.failover[{i}]"
        for name, region in (("from", fo.from_), ("to", fo.to)):
            if not region:
                yield p, f'missing required field "{name}"'
            elif "/" in region:
                yield f"{p}.{name}", f'failover "{region}" must be a region (no "/")'
            elif "*" in region:
                yield f"{p}.{name}", f'failover region "{region}" must not contain "*"'
        if fo.from_ and fo.from_ == fo.to:
            yield p, f'failover from and to must be different regions (both "{fo.to}")'
    for i, label in enumerate(setting.failover_priority):
        p = f"{path}.failoverPriority[{i}]"
        key = label.partition("=")[0]
        if not key.strip():
            yield p, f'label "{label}" must have a key'
        elif setting.failover and key in policy.TOPOLOGY_LABELS:
            yield p, f'topology label "{key}" can not be used together with failover'
