from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshfast.config.hosts import domains, expand

label = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
case = st.sampled_from([str.lower, str.upper, str.title])


def test_expand_examples() -> None:
    assert expand("reviews", "ns") == "reviews.ns.svc.cluster.local"
    assert expand("reviews.ns", "other") == "reviews.ns.svc.cluster.local"
    assert expand("reviews.ns.svc", "other") == "reviews.ns.svc.cluster.local"
    assert expand("reviews.ns.svc.cluster.local", "x") == "reviews.ns.svc.cluster.local"
    assert expand("www.googleapis.com", "x") == "www.googleapis.com"
    assert expand("*.example.com", "x") == "*.example.com"
    assert expand("*", "x") == "*"
    assert expand("Reviews", "NS") == "reviews.ns.svc.cluster.local"


def test_domains_examples() -> None:
    fqdn = "reviews.default.svc.cluster.local"
    assert domains(fqdn, 9080, default_port=False) == [
        "reviews:9080",
        "reviews.default:9080",
        "reviews.default.svc:9080",
        "reviews.default.svc.cluster.local:9080",
    ]
    assert domains(fqdn, 80, default_port=True)[4:] == [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        fqdn,
    ]
    assert domains("WWW.Example.com", 443, default_port=True) == [
        "www.example.com:443",
        "www.example.com",
    ]
    assert domains("*.example.com", 80, default_port=True) == ["*.example.com:80", "*.example.com"]
    assert domains("*", 80, default_port=True) == ["*"]


@given(name=label, ns=label, other=label, f=case)
def test_every_short_form_expands_to_the_same_fqdn(
    name: str, ns: str, other: str, f: object
) -> None:
    fqdn = f"{name}.{ns}.svc.cluster.local"
    assert expand(name, ns) == fqdn
    for form in (f"{name}.{ns}", f"{name}.{ns}.svc", fqdn):
        assert expand(form, other) == fqdn
        assert expand(f(form), other) == fqdn  # type: ignore[operator]
    assert expand(fqdn, other) == fqdn  # idempotent


@given(labels=st.lists(label, min_size=3, max_size=6), ns=label)
def test_other_dotted_hosts_are_kept(labels: list[str], ns: str) -> None:
    host = ".".join(labels)
    if labels[2] == "svc" and len(labels) == 3:
        return
    assert expand(host, ns) == host
    assert expand(expand(host, ns), ns) == expand(host, ns)


@given(name=label, ns=label, port=st.integers(1, 65535), default=st.booleans())
def test_domains_of_cluster_local(name: str, ns: str, port: int, default: bool) -> None:
    fqdn = expand(name, ns)
    got = domains(fqdn, port, default_port=default)
    assert len(got) == (8 if default else 4)
    assert len(set(got)) == len(got)
    assert all(d == d.lower() for d in got)
    ported = got[:4]
    assert all(d.endswith(f":{port}") for d in ported)
    # Every domain names the same service.
    for d in ported:
        assert expand(d.rsplit(":", 1)[0], "elsewhere") == fqdn or d.startswith(f"{name}:")
    if default:
        assert got[4:] == [d.rsplit(":", 1)[0] for d in ported]


@given(labels=st.lists(label, min_size=2, max_size=5), port=st.integers(1, 65535))
def test_domains_of_external_hosts(labels: list[str], port: int) -> None:
    host = ".".join(labels) + ".com"
    assert domains(host, port, default_port=False) == [f"{host}:{port}"]
    assert domains(host.upper(), port, default_port=True) == [f"{host}:{port}", host]
