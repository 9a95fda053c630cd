"""Istio's authz builder pairs as an oracle: for each policy YAML (``*-in.yaml``), Envoy's RBAC
config Istio generates from it (``*-out*.yaml``) decides requests in the test's Envoy
evaluator (``tests/rbac_oracle.py``); meshfast compiles the same YAML and its core
(``_core.authz_verdict``) must decide every one of them the same way.

Pairs not served: CUSTOM (an external authorizer), listed in ``NOT_SERVED``. The trust-domain
pairs are compiled with the trust domain and aliases Istio's test gives them (``BUNDLES``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshfast import _core
from meshfast.config import ir
from meshfast.config.compile import CompileOptions, compile_config
from meshfast.config.validate import load_config_text
from tests import rbac_oracle
from tests.samples import SAMPLES

TESTDATA = SAMPLES / "pilot/pkg/security/authz/builder/testdata"
HTTPBIN = {"app": "httpbin", "version": "v1"}

NOT_SERVED = {
    # CUSTOM: an external authorizer (ext_authz) is not served yet.
    "http/custom-simple-http",
    "http/custom-bad-multiple-providers",
    "tcp/custom-both-http-tcp",
    "tcp/custom-only-http",
}

# The trust domain and aliases Istio's builder_test.go gives these pairs (trustdomain.NewBundle).
BUNDLES = {
    "http/simple-policy-td-aliases": ("td1", ("cluster.local",)),
    "http/simple-policy-multiple-td-aliases": ("td1", ("cluster.local", "some-td")),
    "http/simple-policy-principal-with-wildcard": ("td1", ("foobar",)),
    "http/td-aliases-source-principal": ("new-td", ("old-td", "some-trustdomain")),
}


def _pairs() -> list[tuple[str, Path, list[Path]]]:
    out = []
    for kind in ("http", "tcp"):
        for src in sorted((TESTDATA / kind).glob("*-in.yaml")):
            name = src.name.removesuffix("-in.yaml")
            outs = sorted(
                p
                for p in (TESTDATA / kind).glob(f"{name}-out*.yaml")
                if p.name.removeprefix(f"{name}-out").removesuffix(".yaml") in ("", "1", "2")
            )
            out.append((f"{kind}/{name}", src, outs))
    return out


PAIRS = _pairs()


def test_the_testdata_is_there() -> None:
    names = {name for name, _, _ in PAIRS}
    assert len(names) == 27, names  # 20 HTTP and 7 TCP inputs
    assert names >= NOT_SERVED | BUNDLES.keys()


def _snapshot(src: Path, text: str | None = None, name: str = "") -> bytes:
    text = src.read_text() if text is None else text
    config = load_config_text(text, source=src.name, namespace="foo")
    td, aliases = BUNDLES.get(name, ("cluster.local", ()))
    options = CompileOptions(
        namespace="foo",
        labels=HTTPBIN,
        app="127.0.0.1:1",
        trust_domain=td,
        trust_domain_aliases=aliases,
    )
    return ir.encode(compile_config(config, options))


def _facts(req: rbac_oracle.Request) -> dict[str, object]:
    facts = {
        "principal": req["principal"],
        "peer": req["peer"],
        "destination": req["destination"],
        "sni": req["sni"],
        "authority": req["authority"],
        "method": req["method"],
        "path": req["path"],
        "headers": sorted(req["headers"].items()),
    }
    return {k: v for k, v in facts.items() if v is not None}


@pytest.mark.parametrize(
    ("name", "src", "outs"),
    [p for p in PAIRS if p[0] not in NOT_SERVED],
    ids=[p[0] for p in PAIRS if p[0] not in NOT_SERVED],
)
def test_meshfast_decides_as_envoy_rbac(name: str, src: Path, outs: list[Path]) -> None:
    filters = [yaml.safe_load(p.read_text()) for p in outs]
    _compare(name, _snapshot(src, name=name), filters)


# Pairs whose `not` forms (``notPaths: ["*"]``, ``notHosts: ["*"]``, ...) make every request
# denied: compared again with every `not` field removed from the policy and every notRule /
# notId removed from the ANDs of Istio's output (each field is one AND term there), and the
# presence values ("*") removed from both (else every request would be allowed).
WITHOUT_NOTS = ["http/allow-path", "http/allow-host-before-111", "http/allow-full-rule"]


@pytest.mark.parametrize("name", WITHOUT_NOTS)
def test_without_the_not_forms(name: str) -> None:
    _, src, outs = next(p for p in PAIRS if p[0] == name)
    policy = yaml.safe_load(src.read_text())
    filters = [_strip_nots(yaml.safe_load(p.read_text())) for p in outs]
    _compare(name + "-without-nots", _snapshot(src, yaml.safe_dump(_strip_nots(policy))), filters)


def _strip_nots(node: object) -> object:
    if isinstance(node, list):
        return [_strip_nots(x) for x in node if x != "*" and not _presence(x)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("rules", "ids") and isinstance(value, list):
            value = [x for x in value if not ({"notRule", "notId"} & set(x))]
        elif key.startswith("not") and key not in ("notRule", "notId"):
            continue
        out[key] = _strip_nots(value)
    return out


def _presence(m: object) -> bool:
    """Istio's leaf matcher for a "*" host, path or header."""
    if not isinstance(m, dict):
        return False
    if m.get("header", {}).get("presentMatch") is True:
        return True
    return bool(m.get("urlPath", {}).get("path") == {"safeRegex": {"regex": ".+"}})


def _compare(name: str, snapshot: bytes, filters: list[rbac_oracle.Matcher]) -> None:
    tcp = name.startswith("tcp/")
    reqs = rbac_oracle.requests(filters, seed=len(name))
    verdicts = {True: 0, False: 0}
    for req in reqs:
        if tcp:
            req = {**req, "headers": {}}
        want = rbac_oracle.allows(filters, req)
        got, _ = _core.authz_verdict(snapshot, _facts(req), tcp=tcp)
        assert got == want, f"{name}: {req}: Envoy RBAC says {want}, meshfast {got}"
        verdicts[want] += 1
    # Every case decides requests its matchers were aimed at; where the policies can go both
    # ways the generated requests saw both verdicts, else the one verdict there is.
    assert sum(verdicts.values()) >= (1 if name == "tcp/allow-only-http" else 25)
    if name in ONE_WAY:
        assert verdicts[not ONE_WAY[name]] == 0, verdicts
    else:
        assert verdicts[True] > 0, verdicts
        assert verdicts[False] > 0, verdicts


# Pairs whose policies decide every request alike: allow-all / deny-all / audit and dry-run
# only, and those whose rules cannot match (`notPaths: ["*"]` beside `paths`; principals and
# namespaces that no one SPIFFE ID has both of).
ONE_WAY = {
    "http/allow-empty-rule": True,
    "http/allow-host-before-111": False,
    "http/allow-nil-rule": False,
    "http/allow-path": False,
    "http/audit-full-rule": True,
    "http/deny-empty-rule": False,
    "http/dry-run-allow-and-deny": True,
    "http/dry-run-allow": True,
    "http/single-policy": False,
    "tcp/allow-only-http": False,
    "tcp/audit-both-http-tcp": True,
    "tcp/deny-both-http-tcp": False,
}
