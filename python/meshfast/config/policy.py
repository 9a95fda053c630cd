"""DestinationRule traffic policies → cluster settings: the merge, hashing, locality weights,
locality failover priorities, outlier detection, warmup.

Which ``loadBalancer`` block applies to a cluster (istiod's ``MergeSubsetTrafficPolicy``)
------------------------------------------------------------------------------------------

For the cluster of service port ``P`` (and subset ``S``, if any), :func:`load_balancer_for`
picks the first that applies of:

1. ``S.trafficPolicy.portLevelSettings[]`` entry for ``P``: its ``loadBalancer``, **or the
   default if it has none** (a port-level entry replaces everything for that port: nothing is
   inherited from the subset's top level nor from the DestinationRule);
2. ``S.trafficPolicy.loadBalancer``, when set;
3. ``trafficPolicy.portLevelSettings[]`` entry for ``P`` (DestinationRule level): its
   ``loadBalancer``, or the default if it has none (nothing inherited from the top level);
4. ``trafficPolicy.loadBalancer``;
5. the default (``LEAST_REQUEST``, no hashing, no locality weights).

The subset's top-level ``loadBalancer`` is not consulted when the subset has a port-level entry
for ``P`` (step 1 ends the search).  Within one ``portLevelSettings`` list the first entry for
``P`` wins (istiod does the same; validation reports duplicates).  ``loadBalancer`` blocks are
replaced as wholes, never merged field by field.  The default cluster (no subset) starts at 3.

``outlierDetection``, ``tls`` and ``connectionPool`` are chosen the same way, each
independently of ``loadBalancer`` (:func:`traffic_policy_for` returns them all): a subset
that sets only ``outlierDetection`` keeps the DestinationRule's ``loadBalancer`` and the
other way round, while a port-level entry for ``P`` without ``outlierDetection`` means no
outlier detection for that port (nor connection-pool limits without ``connectionPool``).

Connection pool (``connectionPool`` → ``ir.ConnectionLimits``, ``connect_timeout_ms``)
---------------------------------------------------------------------------------------

Each limit is set only when its field is > 0, as istiod does (proto3 cannot tell 0 from
unset): unset and 0 both mean 2^32-1, no limit; no limit at all gives ``limits=None``.
``tcp.connectTimeout`` unset → the mesh's 10 s.  ``tcp.maxConnections`` → connections open
at once; ``http.http1MaxPendingRequests`` → requests waiting for a connection;
``http.http2MaxRequests`` → requests in flight; ``http.maxRetries`` → retries in flight.

Outlier detection (``outlierDetection`` → ``ir.OutlierDetection``)
--------------------------------------------------------------------

No block: ``outlier=None`` (no ejection at all).  A block, even ``{}``, gets istiod's values:
``consecutive5xxErrors`` unset → 5, ``0`` → off; ``consecutiveGatewayErrors`` unset or 0 → off;
``interval`` unset → 10 s; ``baseEjectionTime`` unset → 30 s; ``maxEjectionPercent`` unset or
``0`` → 10 (istiod only sets Envoy's field when > 0); ``minHealthPercent`` unset → 0 (the
panic threshold: 0 never panics).  The deprecated ``consecutiveErrors`` (when > 0) overrides
both thresholds as istiod does: gateway errors (502/503/504) after ``consecutiveErrors``, and
consecutive 5xx off.

Locality failover priorities (``Endpoint.priority``; lowest level with healthy endpoints wins)
-----------------------------------------------------------------------------------------------

Failover is on for a cluster when its applied ``outlierDetection`` is set (Istio: failover
without outlier detection has no effect) and its applied ``loadBalancer`` has no
``localityLbSetting``, or one with ``enabled`` not ``false`` and no ``distribute`` rules
(``distribute`` wins).  As with the mesh default ``localityLbSetting: {enabled: true}``, that
includes clusters whose ``loadBalancer`` says nothing about localities.  Failover off: every
endpoint has priority 0.  Failover on, each endpoint gets a raw level, then the raw levels
present in the cluster are renumbered 0, 1, 2, ... in order (no gaps, as istiod does):

* Locality level (no ``failoverPriority``), comparing the endpoint's ``region/zone/subzone``
  with the sidecar's (``CompileOptions.locality``; when that is empty, every endpoint is 0):
  0 same region, zone and subzone; 1 same region and zone; 2 same region; 3 another region;
  with a ``failover`` entry whose ``from`` is the sidecar's region (the first such entry), an
  endpoint of another region gets 3 when its region is that entry's ``to`` and 4 otherwise.
  Missing parts compare as empty strings (an endpoint without locality is "another region").
* Label level (``failoverPriority`` ``[l1 .. lN]``): ``N - k`` where ``k`` is the number of
  leading labels that match (the n-th label counts only if the first n-1 do).  A plain ``key``
  matches when the endpoint and the sidecar both have label ``key`` with the same value; a
  ``key=value`` label matches when the endpoint has label ``key`` with that value (the
  sidecar's labels play no part).  The sidecar's labels are ``CompileOptions.labels``, the
  endpoint's its workload labels; to both, the locality adds ``topology.kubernetes.io/region``,
  ``topology.kubernetes.io/zone`` and ``topology.istio.io/subzone`` (each only when that part
  is non-empty, replacing a label of that name).
* ``failoverPriority`` and ``failover`` together (validation forbids the topology labels in
  ``failoverPriority`` then): ``label level * 5 + locality level``.

Differences from istiod: with an empty sidecar locality istiod still compares localities (the
endpoints with one would fall behind those without); meshfast leaves every locality level 0.
istiod skips ``failoverPriority`` entirely for a sidecar without labels; meshfast still applies
its ``key=value`` labels (plain keys match nothing then, which gives the same all-0 result).
Validation rejects ``distribute`` with ``failover`` (as istiod) and with ``failoverPriority``
(the API says only one may be set; istiod would silently ignore ``failoverPriority``).

Warmup (``warmup`` / deprecated ``warmupDurationSecs`` → ``ir.Warmup``)
-------------------------------------------------------------------------

``warmup`` wins over ``warmupDurationSecs``; ``minimumPercent`` unset → 10, ``aggression``
unset → 1.0; ``warmupDurationSecs`` alone gives those defaults.  Only ``ROUND_ROBIN`` and
``LEAST_REQUEST`` (also unset, ``UNSPECIFIED``, ``LEAST_CONN``) clusters warm up; validation
reports a warmup with ``consistentHash``, ``RANDOM`` or ``PASSTHROUGH``.

Locality-weighted load balancing (``localityLbSetting.distribute``)
-------------------------------------------------------------------

The first ``distribute[]`` rule whose ``from`` matches the sidecar's own locality
(``CompileOptions.locality``) applies; none matching (or ``enabled: false``) leaves the
endpoints as they are.  Each endpoint joins the ``to`` locality pattern that matches its own
locality (validation forbids overlapping patterns); an endpoint no pattern matches gets 0% and
is dropped.  The endpoints of one pattern share its percentage in proportion to their own
weights: endpoint weight ``w`` in a pattern of total weight ``W`` and percentage ``p`` becomes
``w * p * (L / W)`` with ``L`` the least common multiple of every pattern's ``W``, so each
pattern's share of the cluster's total weight is exactly ``p / 100`` (of the patterns that have
endpoints); the weights are then divided by their greatest common divisor.  Should that exceed
an unsigned 32-bit weight, shares are rounded instead (``w * p * 10000 / W``, at least 1).

Locality patterns are ``region/zone/subzone``; a ``*`` segment (only allowed last) or a missing
segment matches anything, so ``us-west``, ``us-west/*`` and ``us-west/*/*`` are the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import msgspec

from meshfast.config import ir
from meshfast.config import resources as r
from meshfast.config.duration import parse_ms

if TYPE_CHECKING:
    from meshfast.config.identity import MeshIdentity

DEFAULT_RING_SIZE = 1024
DEFAULT_MAGLEV_SIZE = 65537
MAX_MAGLEV_SIZE = 5000011  # exclusive, as istiod validates
MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's maximum ring size
_MAX_WEIGHT = 2**32 - 1
_ROUNDED_SCALE = 10_000

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
TOPOLOGY_LABELS = (REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL)

DEFAULT_OUTLIER = ir.OutlierDetection()
DEFAULT_WARMUP_MIN_PERCENT = 10.0
DEFAULT_WARMUP_AGGRESSION = 1.0
WARMUP_LB: frozenset[ir.LbPolicy] = frozenset({"ROUND_ROBIN", "LEAST_REQUEST"})

LB: dict[str | None, ir.LbPolicy] = {
    None: "LEAST_REQUEST",
    "UNSPECIFIED": "LEAST_REQUEST",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "ROUND_ROBIN": "ROUND_ROBIN",
    "RANDOM": "RANDOM",
    "PASSTHROUGH": "LEAST_REQUEST",  # unused: PASSTHROUGH clusters send to original destinations
}


# --- the merge ----------------------------------------------------------------------------


_T = TypeVar("_T")


def _port_level(policy: r.TrafficPolicy, port: int) -> r.PortTrafficPolicy | None:
    return next((p for p in policy.port_level_settings if p.port.number == port), None)


def _block_for(
    dr: r.TrafficPolicy | None,
    subset: r.TrafficPolicy | None,
    port: int,
    block: Callable[[r.TrafficPolicy | r.PortTrafficPolicy], _T | None],
) -> _T | None:
    if subset is not None:
        entry = _port_level(subset, port)
        if entry is not None:
            return block(entry)
        if block(subset) is not None:
            return block(subset)
    if dr is not None:
        entry = _port_level(dr, port)
        if entry is not None:
            return block(entry)
        return block(dr)
    return None


def load_balancer_for(
    dr: r.TrafficPolicy | None, subset: r.TrafficPolicy | None, port: int
) -> r.LoadBalancerSettings | None:
    """The ``loadBalancer`` block for service port ``port`` (of a subset); see the module doc."""
    return _block_for(dr, subset, port, lambda tp: tp.load_balancer)


def outlier_detection_for(
    dr: r.TrafficPolicy | None, subset: r.TrafficPolicy | None, port: int
) -> r.OutlierDetection | None:
    """The ``outlierDetection`` block for service port ``port`` (of a subset)."""
    return _block_for(dr, subset, port, lambda tp: tp.outlier_detection)


@dataclass(frozen=True)
class Applied:
    """The traffic policy blocks that apply to one cluster."""

    load_balancer: r.LoadBalancerSettings | None = None
    outlier_detection: r.OutlierDetection | None = None
    tls: r.ClientTLSSettings | None = None
    connection_pool: r.ConnectionPoolSettings | None = None


def traffic_policy_for(
    dr: r.TrafficPolicy | None, subset: r.TrafficPolicy | None, port: int
) -> Applied:
    """Each block for service port ``port`` (of a subset), chosen independently."""
    return Applied(
        load_balancer_for(dr, subset, port),
        outlier_detection_for(dr, subset, port),
        _block_for(dr, subset, port, lambda b: b.tls),
        _block_for(dr, subset, port, lambda b: b.connection_pool),
    )


# --- connection pool ----------------------------------------------------------------------


def connection_limits(cp: r.ConnectionPoolSettings | None) -> ir.ConnectionLimits | None:
    """The limits of a (validated) ``connectionPool`` block: istiod sets each of Envoy's
    thresholds only when the field is > 0, so unset and 0 both mean 2^32-1 (no limit).  None
    when nothing is limited."""
    if cp is None:
        return None

    def limit(value: int | None) -> int:
        return value if value else ir.UNLIMITED

    tcp, http = cp.tcp, cp.http
    limits = ir.ConnectionLimits(
        max_connections=limit(tcp.max_connections if tcp else None),
        max_pending_requests=limit(http.http1_max_pending_requests if http else None),
        max_requests=limit(http.http2_max_requests if http else None),
        max_retries=limit(http.max_retries if http else None),
    )
    return None if limits == ir.ConnectionLimits() else limits


def connect_timeout_ms(cp: r.ConnectionPoolSettings | None, default: int) -> int:
    """``connectionPool.tcp.connectTimeout`` in milliseconds, else ``default`` (the mesh's)."""
    if cp is None or cp.tcp is None or cp.tcp.connect_timeout is None:
        return default
    return round(parse_ms(cp.tcp.connect_timeout))


def upstream_tls(
    tls: r.ClientTLSSettings | None,
    resolve: Callable[[str], str],
    mesh: MeshIdentity | None = None,
) -> ir.UpstreamTls | None:
    """DestinationRule ``tls`` SIMPLE / MUTUAL / ISTIO_MUTUAL → TLS origination; DISABLE (or
    no block) → none.

    ``resolve`` makes certificate paths absolute (relative to the DestinationRule's file).
    ISTIO_MUTUAL uses the sidecar's ``mesh`` identity (``--certs``) and checks the server's
    SPIFFE ID (``subjectAltNames``, else the trust domain); without one the core refuses
    the snapshot, naming ``--certs``: it never falls back to plaintext.
    """
    if tls is not None and tls.mode == "ISTIO_MUTUAL":
        return ir.UpstreamTls(
            ca_certs=mesh.root_cert if mesh else None,
            client_cert=mesh.cert_chain if mesh else None,
            private_key=mesh.private_key if mesh else None,
            sni=tls.sni or None,
            subject_alt_names=tuple(tls.subject_alt_names),
            istio_mutual=True,
            trust_domain=mesh.trust_domain if mesh else None,
        )
    if tls is None or tls.mode not in ("SIMPLE", "MUTUAL"):
        return None
    mutual = tls.mode == "MUTUAL"
    return ir.UpstreamTls(
        ca_certs=resolve(tls.ca_certificates) if tls.ca_certificates else None,
        client_cert=resolve(tls.client_certificate) if mutual and tls.client_certificate else None,
        private_key=resolve(tls.private_key) if mutual and tls.private_key else None,
        sni=tls.sni or None,
        subject_alt_names=tuple(tls.subject_alt_names),
        insecure_skip_verify=bool(tls.insecure_skip_verify),
    )


# --- outlier detection, warmup ------------------------------------------------------------


def _ms(duration: str | None, default: int) -> int:
    return default if duration is None else round(parse_ms(duration))


def outlier_detection(od: r.OutlierDetection | None) -> ir.OutlierDetection | None:
    """The IR of a (validated) ``outlierDetection`` block, istiod's defaults applied."""
    if od is None:
        return None
    c5xx = (
        DEFAULT_OUTLIER.consecutive_5xx
        if od.consecutive_5xx_errors is None
        else od.consecutive_5xx_errors
    )
    gateway = od.consecutive_gateway_errors or 0
    if od.consecutive_errors:  # deprecated; istiod: gateway errors only
        c5xx, gateway = 0, od.consecutive_errors
    return ir.OutlierDetection(
        consecutive_5xx=c5xx,
        consecutive_gateway=gateway,
        interval_ms=_ms(od.interval, DEFAULT_OUTLIER.interval_ms),
        base_ejection_ms=_ms(od.base_ejection_time, DEFAULT_OUTLIER.base_ejection_ms),
        max_ejection_percent=od.max_ejection_percent or DEFAULT_OUTLIER.max_ejection_percent,
        min_health_percent=od.min_health_percent or 0,
    )


def warmup(lb: r.LoadBalancerSettings | None) -> ir.Warmup | None:
    """The IR slow start of a (validated) ``loadBalancer`` block, if its policy has one."""
    if lb is None or lb.consistent_hash is not None or lb.simple == "PASSTHROUGH":
        return None
    if LB[lb.simple] not in WARMUP_LB:
        return None
    if lb.warmup is not None:
        w = lb.warmup
        return ir.Warmup(
            duration_ms=round(parse_ms(w.duration)),
            min_percent=(
                DEFAULT_WARMUP_MIN_PERCENT if w.minimum_percent is None else w.minimum_percent
            ),
            aggression=DEFAULT_WARMUP_AGGRESSION if w.aggression is None else w.aggression,
        )
    if lb.warmup_duration_secs is not None:
        return ir.Warmup(duration_ms=round(parse_ms(lb.warmup_duration_secs)))
    return None


# --- hashing ------------------------------------------------------------------------------


def hash_policy(ch: r.ConsistentHashLB | None) -> ir.HashPolicy | None:
    """The IR hash policy of a (validated) ``consistentHash`` block."""
    if ch is None:
        return None
    algorithm: Literal["ring", "maglev"] = "ring"
    size = DEFAULT_RING_SIZE
    if ch.maglev is not None:
        algorithm = "maglev"
        size = ch.maglev.table_size or DEFAULT_MAGLEV_SIZE
    elif ch.ring_hash is not None:
        size = ch.ring_hash.minimum_ring_size or DEFAULT_RING_SIZE
    elif ch.minimum_ring_size:
        size = ch.minimum_ring_size
    if ch.http_header_name is not None:
        return ir.HashPolicy(
            source="header",
            name=ch.http_header_name.strip().lower(),
            algorithm=algorithm,
            table_size=size,
        )
    if ch.http_cookie is not None:
        cookie = ch.http_cookie
        ttl = None if cookie.ttl is None else round(parse_ms(cookie.ttl))
        return ir.HashPolicy(
            source="cookie",
            name=cookie.name,
            cookie_ttl_ms=ttl,
            cookie_path=cookie.path,
            algorithm=algorithm,
            table_size=size,
        )
    if ch.http_query_parameter_name is not None:
        return ir.HashPolicy(
            source="query",
            name=ch.http_query_parameter_name,
            algorithm=algorithm,
            table_size=size,
        )
    return ir.HashPolicy(source="source_ip", algorithm=algorithm, table_size=size)


# --- localities ---------------------------------------------------------------------------


def locality_parts(locality: str) -> tuple[str, str, str]:
    """``region/zone/subzone`` as three strings (missing parts empty)."""
    parts = [p.strip() for p in locality.strip().split("/", 2)]
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def pattern_prefix(pattern: str) -> tuple[str, ...]:
    """The segments of a locality pattern that must match exactly (up to a ``*`` or the end)."""
    out: list[str] = []
    for part in pattern.strip().split("/", 2):
        if part.strip() == "*":
            break
        out.append(part.strip())
    return tuple(out)


def locality_matches(pattern: str, locality: str) -> bool:
    prefix = pattern_prefix(pattern)
    return locality_parts(locality)[: len(prefix)] == prefix


def patterns_overlap(a: str, b: str) -> bool:
    pa, pb = pattern_prefix(a), pattern_prefix(b)
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def distribute(
    endpoints: Sequence[ir.Endpoint],
    setting: r.LocalityLbSetting | None,
    proxy_locality: str,
) -> tuple[ir.Endpoint, ...]:
    """``endpoints`` with weights scaled by the applicable ``distribute`` rule, if any."""
    if setting is None or setting.enabled is False:
        return tuple(endpoints)
    rule = next((d for d in setting.distribute if locality_matches(d.from_, proxy_locality)), None)
    if rule is None:
        return tuple(endpoints)
    groups: dict[str, list[int]] = {}  # to pattern -> endpoint indices
    for i, ep in enumerate(endpoints):
        to = next((k for k in sorted(rule.to) if locality_matches(k, ep.locality)), None)
        if to is not None and rule.to[to] > 0:
            groups.setdefault(to, []).append(i)
    own = [max(ep.weight, 1) for ep in endpoints]
    totals = {k: sum(own[i] for i in idx) for k, idx in groups.items()}
    lcm = math.lcm(*totals.values()) if totals else 1
    weights: dict[int, int] = {}
    for k, idx in groups.items():
        for i in idx:
            weights[i] = own[i] * rule.to[k] * (lcm // totals[k])
    if weights and max(weights.values()) > _MAX_WEIGHT:
        for k, idx in groups.items():
            for i in idx:
                weights[i] = max(1, round(own[i] * rule.to[k] * _ROUNDED_SCALE / totals[k]))
    divisor = math.gcd(*weights.values()) or 1
    return tuple(
        ir.Endpoint(
            address=ep.address,
            weight=weights[i] // divisor,
            labels=ep.labels,
            locality=ep.locality,
        )
        for i, ep in enumerate(endpoints)
        if i in weights
    )


# --- locality failover --------------------------------------------------------------------


def topology_labels(labels: Mapping[str, str], locality: str) -> dict[str, str]:
    """``labels`` plus the topology labels of ``locality``'s non-empty parts."""
    parts = zip(TOPOLOGY_LABELS, locality_parts(locality), strict=True)
    return {**labels, **{key: part for key, part in parts if part}}


def locality_level(
    proxy_locality: str, endpoint_locality: str, failover: Sequence[r.LocalityFailover] = ()
) -> int:
    """The raw locality failover level of an endpoint (0 best); see the module doc."""
    proxy, ep = locality_parts(proxy_locality), locality_parts(endpoint_locality)
    if proxy[0] == ep[0]:
        if proxy[1] == ep[1]:
            return 0 if proxy[2] == ep[2] else 1
        return 2
    rule = next((f for f in failover if f.from_ == proxy[0]), None)
    return 3 if rule is None or ep[0] == rule.to else 4


def label_level(
    proxy_labels: Mapping[str, str], endpoint_labels: Mapping[str, str], labels: Sequence[str]
) -> int:
    """``len(labels)`` minus the number of leading ``failoverPriority`` labels that match."""
    matched = 0
    for label in labels:
        key, eq, value = label.partition("=")
        want = value if eq else proxy_labels.get(key)
        if want is None or endpoint_labels.get(key) != want:
            break
        matched += 1
    return len(labels) - matched


def failover_enabled(applied: Applied) -> bool:
    if applied.outlier_detection is None:
        return False
    lb = applied.load_balancer
    setting = lb.locality_lb_setting if lb is not None else None
    return setting is None or (setting.enabled is not False and not setting.distribute)


def failover_priorities(
    endpoints: Sequence[ir.Endpoint],
    applied: Applied,
    proxy_locality: str,
    proxy_labels: Mapping[str, str],
) -> tuple[ir.Endpoint, ...]:
    """``endpoints`` with their failover ``priority`` set (all 0 when failover is off)."""
    if not failover_enabled(applied):
        return tuple(endpoints)
    lb = applied.load_balancer
    setting = lb.locality_lb_setting if lb is not None else None
    failover = setting.failover if setting is not None else ()
    by_labels = setting.failover_priority if setting is not None else ()
    me = topology_labels(proxy_labels, proxy_locality)
    raw: list[int] = []
    for ep in endpoints:
        level = locality_level(proxy_locality, ep.locality, failover) if proxy_locality else 0
        if by_labels:
            labelled = label_level(me, topology_labels(ep.labels, ep.locality), by_labels)
            level = labelled * 5 + level if failover else labelled
        raw.append(level)
    rank = {level: i for i, level in enumerate(sorted(set(raw)))}
    return tuple(
        msgspec.structs.replace(ep, priority=rank[level])
        for ep, level in zip(endpoints, raw, strict=True)
    )


def locality_lb(
    endpoints: Sequence[ir.Endpoint],
    applied: Applied,
    proxy_locality: str,
    proxy_labels: Mapping[str, str],
) -> tuple[ir.Endpoint, ...]:
    """``endpoints`` weighted by ``distribute`` or prioritised by failover; see the module doc."""
    lb = applied.load_balancer
    setting = lb.locality_lb_setting if lb is not None else None
    if setting is not None and setting.distribute:
        return distribute(endpoints, setting, proxy_locality)
    return failover_priorities(endpoints, applied, proxy_locality, proxy_labels)
