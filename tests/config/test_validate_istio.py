"""``validate --istio`` (Istio's validity alone), every problem of a document at once, and
the warnings across resources (``istioctl analyze``'s kind)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from meshfast.config import ConfigError, Problem, load_config, load_config_text
from tests.samples import SAMPLES

# Istio samples that are not valid Istio today, each with why.  The test below checks that
# each fails for exactly that reason, so the list cannot hide anything else.
NOT_VALID_ISTIO = {
    "tests/testdata/config/rule-websocket-route.yaml": (
        "websocketUpgrade",
        "`websocketUpgrade` was removed from Istio's API: the VirtualService CRD schema"
        " (../shared/istio-api) has no such field, so kubectl's strict field validation"
        " refuses it",
    ),
}


def _istio_samples() -> list[str]:
    """Every sample file (Go templates aside) with at least one Istio resource in it; the CRD
    test data, valid and invalid, have their own test (test_istio_testdata.py)."""
    found = []
    for path in sorted(SAMPLES.rglob("*")):
        if path.suffix not in (".yaml", ".yml") or path.parent.name == "crds":
            continue
        if "{{" in (text := path.read_text("utf-8")):
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError:  # Kubernetes YAML PyYAML refuses: meshfast reads it
            found.append(str(path.relative_to(SAMPLES)))
            continue
        if any(isinstance(d, dict) and "istio.io/" in str(d.get("apiVersion")) for d in docs):
            found.append(str(path.relative_to(SAMPLES)))
    return found


SAMPLE_FILES = _istio_samples()


def test_the_sample_corpus_is_there() -> None:
    assert len(SAMPLE_FILES) > 150
    assert set(NOT_VALID_ISTIO) <= set(SAMPLE_FILES)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_every_istio_sample_is_valid_istio(name: str) -> None:
    if name in NOT_VALID_ISTIO:
        field, _why = NOT_VALID_ISTIO[name]
        with pytest.raises(ConfigError) as info:
            load_config([SAMPLES / name], istio=True)
        assert {p.message for p in info.value.problems} == {f'unknown field "{field}"'}
        return
    config = load_config([SAMPLES / name], istio=True)
    assert all(w.severity == "warning" for w in config.warnings)


def _config(text: str, *, istio: bool = False) -> list[Problem]:
    """Every problem of ``text``, warnings included."""
    try:
        return load_config_text(textwrap.dedent(text), source="t.yaml", istio=istio).warnings
    except ConfigError as e:
        return e.problems


@pytest.mark.parametrize(
    ("name", "what"),
    [
        # HTTPS terminated beside TLS passed through on 443, told apart by SNI.
        ("tests/testdata/networking/ingress-gateway/configs.yaml", "port 443"),
        # Two TCP services on 3306 with different addresses.
        ("tests/testdata/networking/sidecar-ns-scope/configs.yaml", "TCP port 3306"),
    ],
)
def test_valid_istio_meshfast_cannot_serve_is_unsupported_not_invalid(name: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([SAMPLES / name])
    problems = info.value.problems
    assert problems
    assert all(p.severity == "unsupported" for p in problems), problems
    assert all(p.message.endswith("not implemented yet") for p in problems)
    assert any(what in p.message for p in problems)
    assert load_config([SAMPLES / name], istio=True).resources


def test_an_unknown_field_hides_no_deeper_problem() -> None:
    got = _config(
        """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:
          - retryPolicy: {attempts: 3}
            match: [{uri: {regex: "(unclosed"}}]
            timeout: 5 minutes
            route:
            - destination: {host: reviews}
        """
    )
    assert [(p.line, p.path, p.severity) for p in got] == [
        (7, "$.spec.http[0].retryPolicy", "error"),
        (8, "$.spec.http[0].match[0].uri.regex", "error"),
        (9, "$.spec.http[0].timeout", "error"),
    ]


def test_the_kubernetes_gateway_api_gateway_is_not_istios() -> None:
    text = """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: istio
          listeners: [{name: http, port: 80, protocol: HTTP}]
        """
    got = _config(text)
    assert [(p.path, p.message, p.severity) for p in got] == [
        ("$.kind", "Gateway of gateway.networking.k8s.io/v1 is not implemented yet", "unsupported")
    ]
    assert _config(text, istio=True) == []


def test_istio_mode_keeps_errors_and_drops_the_rest() -> None:
    text = """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec: {replicas: 1}
        ---
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: pa}
        spec: {mtls: {mode: STRICT}}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: r}
        spec:
          host: reviews
          trafficPolicy: {loadBalancer: {simple: FASTEST}}
        """
    plain = _config(text)
    assert {p.kind for p in plain} == {"Deployment", "PeerAuthentication", "DestinationRule"}
    istio = _config(text, istio=True)
    assert [(p.kind, p.path, p.severity) for p in istio] == [
        ("DestinationRule", "$.spec.trafficPolicy.loadBalancer.simple", "error")
    ]


ANALYZED = """\
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews}
    spec:
      hosts: [reviews]
      gateways: [mesh, edge/public]
      http:
      - route:
        - destination: {host: reviews, subset: v9}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews-too}
    spec:
      hosts: [reviews.default.svc.cluster.local]
      http:
      - route:
        - destination: {host: reviews, subset: v1}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews}
    spec:
      host: reviews
      subsets: [{name: v1, labels: {version: v1}}]
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: ghost}
    spec:
      host: ghost
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: reviews}
    spec:
      ports: [{name: http, port: 9080}]
    """


def test_cross_resource_warnings_point_at_file_and_line() -> None:
    got = _config(ANALYZED)
    assert [str(p) for p in got] == [
        "t.yaml:6: warning: VirtualService/reviews: $.spec.gateways[1]: gateway edge/public"
        " is not defined (istioctl analyze IST0101)",
        "t.yaml:9: warning: VirtualService/reviews: $.spec.http[0].route[0].destination.subset:"
        ' subset "v9" of reviews.default.svc.cluster.local: no DestinationRule defines it'
        " (istioctl analyze IST0101)",
        "t.yaml:15: warning: VirtualService/reviews-too: $.spec.hosts[0]: host"
        " reviews.default.svc.cluster.local is also routed by VirtualService default/reviews"
        " through the mesh: one of them is used (istioctl analyze IST0109)",
        "t.yaml:31: warning: DestinationRule/ghost: $.spec.host: no Service or ServiceEntry"
        " declares ghost.default.svc.cluster.local (istioctl analyze IST0101)",
    ]
    # Warnings only: the config loads and serves.
    assert len(load_config_text(textwrap.dedent(ANALYZED), source="t.yaml").resources) == 5


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshfast", "validate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_prints_warnings_and_exits_by_istio_validity(tmp_path: Path) -> None:
    analyzed = tmp_path / "analyzed.yaml"
    analyzed.write_text(textwrap.dedent(ANALYZED))
    run = _cli("-c", str(analyzed))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "ok: 5 resources, 4 warnings"
    assert all(f"{analyzed}:" in line and ": warning: " in line for line in lines[:-1])

    sample = SAMPLES / "tests/testdata/networking/ingress-gateway/configs.yaml"
    assert _cli("-c", str(sample)).returncode == 1
    run = _cli("--istio", "-c", str(sample))
    assert run.returncode == 0, run.stdout
    assert run.stdout.splitlines()[-1].startswith("ok: ")

    invalid = SAMPLES / "tests/testdata/config/rule-websocket-route.yaml"
    run = _cli("--istio", "-c", str(invalid))
    assert run.returncode == 1
    assert f"{invalid}:56: VirtualService/websocket-route: $.spec.http[0].websocketUpgrade" in (
        run.stdout
    )


def test_a_yaml_error_loses_its_own_document_only() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: b}
        spec: {host: b, bogus: 1}
        ---
        kind: [
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: c}
        spec:
          host: c
          bogus: 2
        """
    got = [str(p) for p in _config(text)]
    assert got == [
        't.yaml:4: DestinationRule/b: $.spec.bogus: unknown field "bogus"',
        "t.yaml:7: -/-: $: YAML syntax error (column 1): while parsing a flow node did not"
        " find expected node content",
        't.yaml:13: DestinationRule/c: $.spec.bogus: unknown field "bogus"',
    ]
    # An error on the `---` it resumes at is not read twice, nor forever.
    assert [p.line for p in _config("--- [\n--- [\n---\n")] == [2, 3]


UNSERVED_KINDS = """\
    apiVersion: networking.istio.io/v1
    kind: WorkloadGroup
    metadata: {name: wg}
    spec:
      template:
        address: unix://rel
        ports: {"bad name": 80}
      probe:
        httpGet: {port: 0, scheme: FTP}
        tcpSocket: {port: 80}
    ---
    apiVersion: extensions.istio.io/v1alpha1
    kind: WasmPlugin
    metadata: {name: wp}
    spec:
      url: ftp://x
      sha256: ABC
      selector: {matchLabels: {app: a}}
      targetRefs: [{kind: Gateway, name: g}]
    ---
    apiVersion: networking.istio.io/v1alpha3
    kind: EnvoyFilter
    metadata: {name: ef}
    spec:
      configPatches:
      - applyTo: HTTP_FILTER
        match: {context: SIDECAR_INBOUND, listener: {portNumber: 80}, cluster: {service: x}}
        patch: {operation: MERGE, value: {a: 1}}
      - applyTo: LATER
    ---
    apiVersion: networking.istio.io/v1beta1
    kind: ProxyConfig
    metadata: {name: pc}
    spec:
      concurrency: -1
    """


def test_every_istio_kind_is_checked_even_unserved() -> None:
    got = [(p.line, p.path, p.message) for p in _config(UNSERVED_KINDS, istio=True)]
    assert got == [
        (6, "$.spec.template.address", "UDS must be an absolute path or abstract socket"),
        (7, "$.spec.template.ports", "UDS may not include ports"),
        (7, "$.spec.template.ports", '"bad name" is not a valid port name'),
        (8, "$.spec.probe", "only one of httpGet, tcpSocket, exec or grpc can be set"),
        (9, "$.spec.probe.httpGet.port", "port must be between 1-65535"),
        (9, "$.spec.probe.httpGet.scheme", '"FTP": must be HTTP or HTTPS'),
        (15, "$.spec", "only one of selector, targetRef or targetRefs can be set"),
        (16, "$.spec.url", "url must have schema one of [http, https, file, oci]"),
        (17, "$.spec.sha256", "sha256 must be 64 lowercase hex characters"),
        (
            29,
            "$.spec.configPatches[1].applyTo",
            "must be one of BOOTSTRAP, CLUSTER, EXTENSION_CONFIG, FILTER_CHAIN, HTTP_FILTER,"
            " HTTP_ROUTE, INVALID, LISTENER, LISTENER_FILTER, NETWORK_FILTER,"
            " ROUTE_CONFIGURATION, VIRTUAL_HOST; got 'LATER'",
        ),
        (35, "$.spec.concurrency", "must be between 0 and 2147483647, got -1"),
    ]
    # Valid ones: only "not implemented yet".
    valid = """\
        apiVersion: networking.istio.io/v1
        kind: WorkloadGroup
        metadata: {name: wg}
        spec:
          metadata: {labels: {app: web}}
          template: {ports: {http: 8080}, serviceAccount: web}
          probe: {httpGet: {port: 8080, path: /ready}}
        ---
        apiVersion: extensions.istio.io/v1alpha1
        kind: WasmPlugin
        metadata: {name: wp}
        spec:
          url: oci://registry/plugin:1
          selector: {matchLabels: {app: web}}
          phase: AUTHN
        ---
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: ef}
        spec:
          workloadSelector: {labels: {app: web}}
          configPatches:
          - applyTo: HTTP_FILTER
            match: {context: SIDECAR_INBOUND, listener: {portNumber: 8080}}
            patch: {operation: INSERT_BEFORE, value: {name: x}}
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: ProxyConfig
        metadata: {name: pc}
        spec: {concurrency: 2, environmentVariables: {A: b}}
        ---
        apiVersion: extensions.istio.io/v1alpha1
        kind: TrafficExtension
        metadata: {name: te}
        spec:
          selector: {matchLabels: {app: web}}
          lua: {inlineCode: "function envoy_on_request(h) end"}
        """
    problems = _config(valid)
    kinds = ("WorkloadGroup", "WasmPlugin", "EnvoyFilter", "ProxyConfig", "TrafficExtension")
    assert [(p.kind, p.path, p.severity) for p in problems] == [
        (kind, "$.kind", "unsupported") for kind in kinds
    ]
    bad = """        apiVersion: extensions.istio.io/v1alpha1
        kind: TrafficExtension
        metadata: {name: te}
        spec:
          selector: {matchLabels: {app: web}}
          targetRefs: [{kind: Gateway, name: g}]
          wasm: {url: "ftp://x"}
          lua: {inlineCode: ""}
        """
    assert [(p.path, p.message) for p in _config(bad, istio=True)] == [
        ("$.spec", "only one of targetRefs or selector can be set"),
        ("$.spec", "exactly one of wasm or lua must be set"),
        ("$.spec.wasm.url", "url must have schema one of [http, https, file, oci]"),
        ("$.spec.lua.inlineCode", "must be 1 to 65536 characters long"),
    ]
    assert _config(valid, istio=True) == []
