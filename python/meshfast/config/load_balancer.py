"""Latency-aware balancing, a meshfast extension of the DestinationRule's ``loadBalancer``.

Istio's ``loadBalancer.simple`` enum has no latency-aware policy and validates its values, so
the choice is an annotation, which Istio ignores — the YAML stays valid Istio::

    metadata:
      annotations:
        meshfast.io/load-balancer: PEAK_EWMA

``PEAK_EWMA`` (the only value): power of two choices over peak-EWMA latency * (in-flight + 1),
as Linkerd balances. Precedence: the annotation replaces ``loadBalancer.simple`` for every
cluster of the DestinationRule (each subset and port, whatever their own ``simple``);
``consistentHash`` still replaces the balancer where it applies, ``PASSTHROUGH`` still sends to
original destinations, and locality settings and warmup still apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from meshfast.config import ir
from meshfast.config.load import child

ANNOTATION = "meshfast.io/load-balancer"
PATH = child("$.metadata.annotations", ANNOTATION)
VALUES: dict[str, ir.LbPolicy] = {"PEAK_EWMA": "PEAK_EWMA"}

Issue = tuple[str, str]


def problems(annotations: Mapping[str, str]) -> Iterator[Issue]:
    """What is wrong with the annotation, if present, at its JSON path."""
    value = annotations.get(ANNOTATION)
    if value is None or value in VALUES:
        return
    allowed = ", ".join(VALUES)
    yield PATH, f"{ANNOTATION}: unknown load balancer {value!r} (expected one of: {allowed})"


def override(annotations: Mapping[str, str] | None) -> ir.LbPolicy | None:
    """The policy a (validated) annotation chooses; None without one."""
    if annotations is None:
        return None
    value = annotations.get(ANNOTATION)
    return None if value is None else VALUES[value]
