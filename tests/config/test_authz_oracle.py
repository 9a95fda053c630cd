"""Istio's authz builder pairs as an oracle: for each policy YAML (``*-in.yaml``), Envoy's RBAC
config Istio generates from it (``*-out*.yaml``) decides requests in the test's Envoy
evaluator (``tests/rbac_oracle.py``); meshfast compiles the same YAML and its core
(``_core.authz_verdict``) must decide every one of them the same way.

Pairs not served: CUSTOM (an external authorizer) and trust-domain aliases (meshConfig
``trustDomainAliases``, which meshfast does not have); listed in ``NOT_SERVED``.
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
    # Trust-domain aliases (the outputs add the aliases' principals).
    "http/simple-policy-td-aliases",
    "http/simple-policy-multiple-td-aliases",
    "http/simple-policy-principal-with-wildcard",
    "http/td-aliases-source-principal",
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
    assert len(names) >= 30, names
    assert names >= NOT_SERVED


def _snapshot(src: Path) -> bytes:
    config = load_config_text(src.read_text(), source=src.name, namespace="foo")
    options = CompileOptions(namespace="foo", labels=HTTPBIN, app="127.0.0.1:1")
    return ir.encode(compile_config(config, options))


def _facts(req: rbac_oracle.Request) -> dict[str, object]:
    return {
        "principal": req["principal"],
        "peer": req["peer"],
        "destination": req["destination"],
        "sni": req["sni"],
        "authority": req["authority"],
        "method": req["method"],
        "path": req["path"],
        "headers": sorted(req["headers"].items()),
    }


@pytest.mark.parametrize(
    ("name", "src", "outs"),
    [p for p in PAIRS if p[0] not in NOT_SERVED],
    ids=[p[0] for p in PAIRS if p[0] not in NOT_SERVED],
)
def test_meshfast_decides_as_envoy_rbac(name: str, src: Path, outs: list[Path]) -> None:
    tcp = name.startswith("tcp/")
    filters = [yaml.safe_load(p.read_text()) for p in outs]
    snapshot = _snapshot(src)
    reqs = rbac_oracle.requests(filters, seed=len(name))
    verdicts = {True: 0, False: 0}
    for req in reqs:
        if tcp:
            req = {**req, "headers": {}}
        want = rbac_oracle.allows(filters, req)
        got, _ = _core.authz_verdict(snapshot, _facts(req), tcp=tcp)
        assert got == want, f"{name}: {req}: Envoy RBAC says {want}, meshfast {got}"
        verdicts[want] += 1
    # Each case decides at least 50 requests; where Envoy's filters can go both ways, the
    # generated requests saw both verdicts.
    assert sum(verdicts.values()) >= 50
    if _can_go_both_ways(filters):
        assert verdicts[True] and verdicts[False], (name, verdicts)


def _can_go_both_ways(filters: list[rbac_oracle.Matcher]) -> bool:
    """False for chains that allow or deny everything (no rules, allow-all/deny-all, only
    never-matching metadata)."""
    enforced = [f["typedConfig"].get("rules") for f in filters]
    enforced = [r for r in enforced if r is not None and r.get("action", "ALLOW") != "LOG"]
    if not enforced:
        return False
    text = yaml.safe_dump(enforced)
    return "any: true" not in text or any(
        k in text for k in ("principalName", "header", "urlPath", "destinationPort")
    )
