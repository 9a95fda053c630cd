"""The latency-aware balancer annotation (``meshfast.io/load-balancer: PEAK_EWMA``, a meshfast
extension of the DestinationRule): it replaces ``loadBalancer.simple`` on every cluster of the
rule, and ``meshfast validate`` reports a bad value with FILE:LINE."""

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


def dr(annotation: str | None, simple: str = "ROUND_ROBIN") -> str:
    meta = "metadata:\n  name: web\n"
    if annotation is not None:
        meta += f"  annotations:\n    meshfast.io/load-balancer: {annotation}\n"
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        + meta
        + f"spec:\n  host: web\n  trafficPolicy: {{loadBalancer: {{simple: {simple}}}}}\n"
        + "  subsets:\n  - name: v1\n    labels: {version: v1}\n"
        + "    trafficPolicy: {loadBalancer: {simple: RANDOM}}\n"
    )


def clusters(text: str) -> dict[str, ir.Cluster]:
    config = load_config_text(textwrap.dedent(text), source="t.yaml")
    snap = compile_config(config, CompileOptions())
    return {c.name: c for c in snap.clusters}


def test_the_annotation_wins_on_every_cluster_of_the_rule() -> None:
    c = clusters(SERVICE + dr("PEAK_EWMA"))
    assert c[f"outbound|80||{FQDN}"].lb == "PEAK_EWMA"
    assert c[f"outbound|80|v1|{FQDN}"].lb == "PEAK_EWMA"


def test_without_the_annotation_istio_decides() -> None:
    c = clusters(SERVICE + dr(None))
    assert c[f"outbound|80||{FQDN}"].lb == "ROUND_ROBIN"
    assert c[f"outbound|80|v1|{FQDN}"].lb == "RANDOM"


def test_the_ir_round_trips_peak_ewma() -> None:
    c = ir.Cluster(name="c", lb="PEAK_EWMA")
    snap = ir.Snapshot(version=1, clusters=(c,))
    assert ir.decode(ir.encode(snap)).clusters[0].lb == "PEAK_EWMA"


PATH = '$.metadata.annotations["meshfast.io/load-balancer"]'
ANNOTATION_LINE = SERVICE.count("\n") + 6  # the annotation's line in SERVICE + dr(...)


@pytest.mark.parametrize("value", ["peak_ewma", "LEAST_REQUEST", "EWMA", "''"])
def test_a_bad_value_is_reported_at_its_line(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(SERVICE + dr(value), source="t.yaml")
    got = [(p.line, p.path, p.message) for p in info.value.problems]
    assert len(got) == 1, got
    line, path, text = got[0]
    assert (line, path) == (ANNOTATION_LINE, PATH)
    assert text.startswith("meshfast.io/load-balancer: unknown load balancer")
    assert "PEAK_EWMA" in text


def test_validate_prints_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "dr.yaml"
    f.write_text(SERVICE + dr("PEAK-EWMA"))
    assert main(["validate", "-c", str(f)]) != 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{f}:{ANNOTATION_LINE}" in text
    assert "unknown load balancer 'PEAK-EWMA'" in text
    f.write_text(SERVICE + dr("PEAK_EWMA"))
    assert main(["validate", "-c", str(f)]) == 0
