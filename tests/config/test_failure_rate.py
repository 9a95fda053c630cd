"""The failure-rate breaker annotation (a meshfast extension of the DestinationRule): what
each cluster gets, and what ``meshfast validate`` says of a bad value, with FILE:LINE."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshfast.cli import main
from meshfast.config import CompileOptions, ConfigError, compile_config, ir, load_config_text

FQDN = "web.default.svc.cluster.local"

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v1
  labels: {kubernetes.io/service-name: web, version: v1}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
---
"""


def dr(annotation: str | None) -> str:
    meta = "metadata:\n  name: web\n"
    if annotation is not None:
        meta += f"  annotations:\n    meshfast.io/failure-rate-breaker: '{annotation}'\n"
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        + meta
        + "spec:\n  host: web\n  subsets:\n  - name: v1\n    labels: {version: v1}\n"
    )


def clusters(text: str) -> dict[str, ir.Cluster]:
    config = load_config_text(textwrap.dedent(text), source="t.yaml")
    snap = compile_config(config, CompileOptions())
    return {c.name: c for c in snap.clusters}


def problems(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="t.yaml")
    return [(p.line, p.path, p.message) for p in info.value.problems]


def test_the_annotation_compiles_onto_every_cluster_of_the_rule() -> None:
    c = clusters(
        SERVICE
        + dr(
            '{"threshold": 0.25, "tau": "2s", "minRequests": 5, "coolDown": "500ms",'
            ' "maxCoolDown": "1m", "probes": 2}'
        )
    )
    want = ir.FailureRateBreaker(
        threshold=0.25,
        tau_ms=2000,
        min_requests=5,
        cool_down_ms=500,
        max_cool_down_ms=60_000,
        probes=2,
    )
    assert c[f"outbound|80||{FQDN}"].failure_rate == want
    assert c[f"outbound|80|v1|{FQDN}"].failure_rate == want


def test_defaults_and_absence() -> None:
    c = clusters(SERVICE + dr("{}"))
    assert c[f"outbound|80||{FQDN}"].failure_rate == ir.FailureRateBreaker()
    assert ir.FailureRateBreaker() == ir.FailureRateBreaker(
        threshold=0.2,
        tau_ms=10_000,
        min_requests=20,
        cool_down_ms=5_000,
        max_cool_down_ms=300_000,
        probes=3,
    )
    # Without the annotation: plain Istio, no breaker.
    c = clusters(SERVICE + dr(None))
    assert c[f"outbound|80||{FQDN}"].failure_rate is None


PATH = '$.metadata.annotations["meshfast.io/failure-rate-breaker"]'
ANNOTATION_LINE = SERVICE.count("\n") + 6  # the annotation's line in SERVICE + dr(...)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"threshold": 1.5}', "threshold must be between 0 and 1, got 1.5"),
        ('{"tau": "0s"}', 'tau: duration "0s" must be >= 1ms'),
        ('{"probes": 0}', "probes must be >= 1, got 0"),
        ('{"coolDown": "10s", "maxCoolDown": "1s"}', 'maxCoolDown "1s" is shorter than coolDown'),
        ('{"threshhold": 0.5}', "Object contains unknown field `threshhold`"),
        ('{"probes": "3"}', "Expected `int`, got `str` - at `$.probes`"),
        ("[0.5]", "must be a JSON object, got list"),
        ("{threshold: 0.5}", "not JSON: Expecting property name enclosed in double quotes"),
    ],
)
def test_a_bad_value_is_reported_at_its_line(value: str, message: str) -> None:
    got = problems(SERVICE + dr(value))
    assert len(got) == 1, got
    line, path, text = got[0]
    assert (line, path) == (ANNOTATION_LINE, PATH)
    assert text.startswith("meshfast.io/failure-rate-breaker: ")
    assert message in text


def test_validate_prints_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "dr.yaml"
    f.write_text(SERVICE + dr('{"threshold": 2}'))
    assert main(["validate", "-c", str(f)]) != 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{f}:{ANNOTATION_LINE}" in text
    assert "threshold must be between 0 and 1" in text
    f.write_text(SERVICE + dr('{"threshold": 0.5}'))
    assert main(["validate", "-c", str(f)]) == 0
