"""DestinationRule traffic policies → cluster settings: the merge, hashing, locality weights.

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
from collections.abc import Sequence
from typing import Literal

from meshfast.config import ir
from meshfast.config import resources as r
from meshfast.config.duration import parse_ms

DEFAULT_RING_SIZE = 1024
DEFAULT_MAGLEV_SIZE = 65537
MAX_MAGLEV_SIZE = 5000011  # exclusive, as istiod validates
MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's maximum ring size
_MAX_WEIGHT = 2**32 - 1
_ROUNDED_SCALE = 10_000

LB: dict[str | None, ir.LbPolicy] = {
    None: "LEAST_REQUEST",
    "UNSPECIFIED": "LEAST_REQUEST",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "ROUND_ROBIN": "ROUND_ROBIN",
    "RANDOM": "RANDOM",
    "PASSTHROUGH": "LEAST_REQUEST",  # rejected by validation
}


# --- the merge ----------------------------------------------------------------------------


def _port_level(policy: r.TrafficPolicy, port: int) -> tuple[bool, r.LoadBalancerSettings | None]:
    for pls in policy.port_level_settings:
        if pls.port.number == port:
            return True, pls.load_balancer
    return False, None


def load_balancer_for(
    dr: r.TrafficPolicy | None, subset: r.TrafficPolicy | None, port: int
) -> r.LoadBalancerSettings | None:
    """The ``loadBalancer`` block for service port ``port`` (of a subset); see the module doc."""
    if subset is not None:
        found, lb = _port_level(subset, port)
        if found:
            return lb
        if subset.load_balancer is not None:
            return subset.load_balancer
    if dr is not None:
        found, lb = _port_level(dr, port)
        if found:
            return lb
        return dr.load_balancer
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
