"""The failure-rate circuit breaker, a meshfast extension of the DestinationRule.

Istio has no such field, so it is an annotation, which Istio ignores — the YAML stays valid
Istio and ``istioctl validate`` accepts it::

    metadata:
      annotations:
        meshfast.io/failure-rate-breaker: '{"threshold": 0.25, "tau": "10s"}'

The value is a JSON object (``{}`` for all defaults) with these fields:

``threshold`` (0.2)
    Open when the endpoint's failure rate F exceeds this (0 < threshold < 1).
``tau`` ("10s")
    The time constant τ of the exponentially weighted rate: under a sustained failure
    fraction p, F(t) = p·(1 - e^(-t/τ)).
``minRequests`` (20)
    Never open with fewer requests than this in the decayed window (≈ the last τ).
``coolDown`` ("5s") / ``maxCoolDown`` ("300s")
    How long an opening lasts: coolDown · 2^(openings - 1), at most maxCoolDown; the
    count is forgotten once the breaker stays closed for maxCoolDown.
``probes`` (3)
    Requests let through half-open; all must succeed to close (one failure reopens).

It applies per endpoint to every cluster of the DestinationRule (each subset and port).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import msgspec

from meshfast.config import ir
from meshfast.config.duration import parse_ms
from meshfast.config.duration import problems as duration_problems
from meshfast.config.load import child

ANNOTATION = "meshfast.io/failure-rate-breaker"
PATH = child("$.metadata.annotations", ANNOTATION)

Issue = tuple[str, str]


class Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    threshold: float = 0.2
    tau: str = "10s"
    min_requests: int = 20
    cool_down: str = "5s"
    max_cool_down: str = "300s"
    probes: int = 3


def _decode(text: str) -> Spec:
    """The annotation's settings; raises ValueError with a readable reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} (line {e.lineno} column {e.colno})") from e
    if not isinstance(data, dict):
        raise ValueError(f"must be a JSON object, got {type(data).__name__}")
    try:
        return msgspec.convert(data, Spec, strict=True)
    except msgspec.ValidationError as e:
        raise ValueError(str(e)) from e


def problems(annotations: Mapping[str, str]) -> Iterator[Issue]:
    """What is wrong with the annotation, if present, at its JSON path."""
    text = annotations.get(ANNOTATION)
    if text is None:
        return
    try:
        spec = _decode(text)
    except ValueError as e:
        yield PATH, f"{ANNOTATION}: {e}"
        return
    if not 0 < spec.threshold < 1:
        yield PATH, f"{ANNOTATION}: threshold must be between 0 and 1, got {spec.threshold}"
    if spec.min_requests < 0:
        yield PATH, f"{ANNOTATION}: minRequests must be >= 0, got {spec.min_requests}"
    if spec.probes < 1:
        yield PATH, f"{ANNOTATION}: probes must be >= 1, got {spec.probes}"
    bad = False
    for name, value in (
        ("tau", spec.tau),
        ("coolDown", spec.cool_down),
        ("maxCoolDown", spec.max_cool_down),
    ):
        for _, message in duration_problems(value, PATH, whole_ms=True):
            bad = True
            yield PATH, f"{ANNOTATION}: {name}: {message}"
    if not bad and parse_ms(spec.max_cool_down) < parse_ms(spec.cool_down):
        yield (
            PATH,
            f'{ANNOTATION}: maxCoolDown "{spec.max_cool_down}" is shorter than coolDown'
            f' "{spec.cool_down}"',
        )


def breaker(annotations: Mapping[str, str]) -> ir.FailureRateBreaker | None:
    """The IR of a (validated) annotation; None without one."""
    text = annotations.get(ANNOTATION)
    if text is None:
        return None
    spec = _decode(text)
    return ir.FailureRateBreaker(
        threshold=spec.threshold,
        tau_ms=round(parse_ms(spec.tau)),
        min_requests=spec.min_requests,
        cool_down_ms=round(parse_ms(spec.cool_down)),
        max_cool_down_ms=round(parse_ms(spec.max_cool_down)),
        probes=spec.probes,
    )
