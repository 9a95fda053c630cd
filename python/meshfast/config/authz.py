"""AuthorizationPolicy → the IR's :class:`~meshfast.config.ir.AuthzPolicy`, as Istio's
builder (pilot/pkg/security/authz) turns it into Envoy's RBAC filter.

Which policies apply to this sidecar: those of its namespace and of the mesh's root namespace
whose ``selector.matchLabels`` are among its labels (no selector: every workload there);
policies with ``targetRef(s)`` are for gateways and waypoints, never a sidecar.

Every field becomes a condition on one request attribute, with the same matchers Istio emits
(principals as ``spiffe://`` IDs, namespaces and service accounts as regexes over them), so
the core evaluates what Envoy would.  :func:`tcp_form` is Istio's TCP reading of a policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from meshfast.config import ir
from meshfast.config import resources as r
from meshfast.config.authorization_policy import Condition, Operation, Rule, Source

ROOT_NAMESPACE = "istio-system"  # Istio's default meshConfig.rootNamespace
CLUSTER_LOCAL = "cluster.local"  # in a principal: the mesh's own trust domain, whatever it is
DRY_RUN = "istio.io/dry-run"

# Attributes only an HTTP request has: Istio's TCP form drops them.
HTTP_ONLY = frozenset({"host", "method", "path", "header", "request_auth"})

Cond = ir.AuthzCondition
Val = ir.AuthzValue


def applies(ap: r.AuthorizationPolicy, namespace: str, labels: dict[str, str], root: str) -> bool:
    """Whether ``ap`` applies to a sidecar in ``namespace`` with ``labels``."""
    spec = ap.spec
    if spec.target_ref is not None or spec.target_refs is not None:
        return False
    if ap.metadata.namespace not in (namespace, root):
        return False
    wanted = spec.selector.match_labels if spec.selector is not None else {}
    return all(labels.get(k) == v for k, v in wanted.items())


def policies_for(
    resources: Iterable[r.Resource],
    namespace: str,
    labels: dict[str, str],
    root: str,
    bundle: tuple[str, ...] = (CLUSTER_LOCAL,),
) -> list[ir.AuthzPolicy]:
    """The IR of every policy that applies, by (namespace, name). ``bundle``: the mesh's
    trust domain, then its aliases (meshConfig ``trustDomain``, ``trustDomainAliases``)."""
    aps = [
        x
        for x in resources
        if isinstance(x, r.AuthorizationPolicy) and applies(x, namespace, labels, root)
    ]
    aps.sort(key=lambda x: (x.metadata.namespace, x.metadata.name))
    return [compile_policy(ap, bundle) for ap in aps]


def compile_policy(
    ap: r.AuthorizationPolicy, bundle: tuple[str, ...] = (CLUSTER_LOCAL,)
) -> ir.AuthzPolicy:
    spec = ap.spec
    ns = ap.metadata.namespace
    action = spec.action or "ALLOW"
    if action == "CUSTOM":  # refused by validate; never reaches here from a validated config
        raise ValueError("CUSTOM AuthorizationPolicy is not served")
    return ir.AuthzPolicy(
        name=f"{ns}/{ap.metadata.name}",
        action=action,
        dry_run=ap.metadata.annotations.get(DRY_RUN, "").lower() == "true",
        rules=tuple(_rule(rule, ns, bundle) for rule in spec.rules or ()),
    )


def tcp_form(p: ir.AuthzPolicy) -> ir.AuthzPolicy:
    """Istio's TCP reading: an ALLOW rule with an HTTP-only condition matches nothing (it is
    dropped: a narrower allow); in DENY and AUDIT rules only those conditions are dropped (a
    wider deny)."""

    def keep(conds: tuple[Cond, ...]) -> tuple[Cond, ...]:
        return tuple(c for c in conds if c.attribute not in HTTP_ONLY)

    def http_only(rule: ir.AuthzRule) -> bool:
        conds = [c for entry in (*rule.from_, *rule.to) for c in entry] + list(rule.when)
        return any(c.attribute in HTTP_ONLY for c in conds)

    if p.action == "ALLOW":
        rules = tuple(x for x in p.rules if not http_only(x))
    else:
        rules = tuple(
            ir.AuthzRule(
                from_=tuple(keep(e) for e in x.from_),
                to=tuple(keep(e) for e in x.to),
                when=keep(x.when),
            )
            for x in p.rules
        )
    return ir.AuthzPolicy(name=p.name, action=p.action, dry_run=p.dry_run, rules=rules)


# --- rules --------------------------------------------------------------------------------


def _rule(rule: Rule, ns: str, bundle: tuple[str, ...]) -> ir.AuthzRule:
    return ir.AuthzRule(
        from_=tuple(_source(f.source, ns, bundle) for f in rule.from_ if f.source is not None),
        to=tuple(_operation(t.operation) for t in rule.to if t.operation is not None),
        when=tuple(_when(c, ns, bundle) for c in rule.when),
    )


def _cond(attribute: ir.AuthzAttribute, values: Iterable[Val], nots: Iterable[Val]) -> Cond:
    return Cond(attribute=attribute, values=tuple(values), not_values=tuple(nots))


def _source(s: Source, ns: str, bundle: tuple[str, ...]) -> tuple[Cond, ...]:
    """In Istio's order: principals, requestPrincipals, namespaces, ipBlocks, remoteIpBlocks
    (each with its ``not`` form), then serviceAccounts and trustDomains."""
    out: list[Cond] = []

    def add(attribute: ir.AuthzAttribute, values: Iterable[Val], nots: Iterable[Val]) -> None:
        values, nots = list(values), list(nots)
        if values or nots:
            out.append(_cond(attribute, values, nots))

    add(
        "source_principal",
        map(principal, with_aliases(s.principals or (), bundle)),
        map(principal, with_aliases(s.not_principals or (), bundle)),
    )
    add("request_auth", map(string, s.request_principals), map(string, s.not_request_principals))
    add(
        "source_principal",
        map(namespace, s.namespaces or ()),
        map(namespace, s.not_namespaces or ()),
    )
    add("source_ip", map(cidr, s.ip_blocks), map(cidr, s.not_ip_blocks))
    add("remote_ip", map(cidr, s.remote_ip_blocks), map(cidr, s.not_remote_ip_blocks))
    add(
        "source_principal",
        (service_account(a, ns) for a in s.service_accounts or ()),
        (service_account(a, ns) for a in s.not_service_accounts or ()),
    )
    add(
        "source_principal",
        map(trust_domain, expand_domains(s.trust_domains, bundle)),
        map(trust_domain, expand_domains(s.not_trust_domains, bundle)),
    )
    return tuple(out)


def _operation(op: Operation) -> tuple[Cond, ...]:
    pairs: list[tuple[ir.AuthzAttribute, list[Val], list[Val]]] = [
        ("host", [string(h) for h in op.hosts], [string(h) for h in op.not_hosts]),
        ("method", [string(m) for m in op.methods], [string(m) for m in op.not_methods]),
        ("path", [path(p) for p in op.paths], [path(p) for p in op.not_paths]),
        ("destination_port", [port(p) for p in op.ports], [port(p) for p in op.not_ports]),
    ]
    return tuple(_cond(a, v, n) for a, v, n in pairs if v or n)


# `request.headers[:method]` and its kind name the request's own facts.
_PSEUDO: dict[str, ir.AuthzAttribute] = {":method": "method", ":path": "path", ":authority": "host"}


def _when(c: Condition, ns: str, bundle: tuple[str, ...]) -> Cond:
    key = c.key
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1]
        pseudo = _PSEUDO.get(name.lower())
        if pseudo is not None:
            return _cond(pseudo, map(string, c.values), map(string, c.not_values))
        return Cond(
            attribute="header",
            key=name,
            values=tuple(map(string, c.values)),
            not_values=tuple(map(string, c.not_values)),
        )
    table: dict[str, tuple[ir.AuthzAttribute, Callable[[str], Val]]] = {
        "source.ip": ("source_ip", cidr),
        "remote.ip": ("remote_ip", cidr),
        "destination.ip": ("destination_ip", cidr),
        "destination.port": ("destination_port", port),
        "source.namespace": ("source_principal", namespace),
        "source.principal": ("source_principal", principal),
        "source.serviceAccount": ("source_principal", lambda v: service_account(v, ns)),
        "source.trustDomain": ("source_principal", trust_domain),
        "connection.sni": ("sni", string),
    }
    # request.auth.*: JWT-derived; experimental.envoy.filters.*: dynamic metadata.
    default: ir.AuthzAttribute = "request_auth" if key.startswith("request.auth.") else "metadata"
    attribute, convert = table.get(key, (default, string))
    values, nots = c.values, c.not_values
    if key == "source.principal":
        values, nots = with_aliases(values, bundle), with_aliases(nots, bundle)
    elif key == "source.trustDomain":
        values, nots = expand_domains(values, bundle), expand_domains(nots, bundle)
    return _cond(attribute, map(convert, values), map(convert, nots))


# --- trust domains (Istio's pilot/pkg/security/trustdomain) -------------------------------


def _wild_eq(a: str, b: str) -> bool:
    """Either side may be a ``*``, ``x*`` or ``*x`` pattern."""

    def fits(text: str, pattern: str) -> bool:
        if pattern == "*":
            return True
        if pattern.endswith("*"):
            return text.startswith(pattern[:-1])
        if pattern.startswith("*"):
            return text.endswith(pattern[1:])
        return False

    return a == b or fits(a, b) or fits(b, a)


def with_aliases(principals: Iterable[str], bundle: tuple[str, ...]) -> tuple[str, ...]:
    """Istio's ReplaceTrustDomainAliases: a ``td/ns/N/sa/S`` principal whose trust domain is
    ``cluster.local`` or one of the bundle's stands for the same identity under each of them."""
    out: list[str] = []
    for p in principals:
        parts = p.split("/")
        td = parts[0]
        if len(parts) != 5 or td == "*":
            out.append(p)
            continue
        if td != CLUSTER_LOCAL and not any(_wild_eq(td, b) for b in bundle):
            out.append(p)
            continue
        mine: list[str] = []
        for b in bundle:
            fits = td.startswith("*") and b.endswith(td[1:])
            new = p if fits else "/".join([b, *parts[1:]])
            if new not in mine:
                mine.append(new)
        out.extend(mine)
    return tuple(out)


def expand_domains(domains: Iterable[str], bundle: tuple[str, ...]) -> tuple[str, ...]:
    """Istio's ExpandTrustDomainAliases: a trust domain of the bundle stands for all of it."""
    out: list[str] = []
    for d in domains:
        for x in bundle if d in bundle else (d,):
            if x not in out:
                out.append(x)
    return tuple(out)


# --- values: Istio's matchers -------------------------------------------------------------

# Go's regexp.QuoteMeta, which Istio uses (Python's re.escape also escapes "-", "#", ...).
_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def quote(s: str) -> str:
    return _META.sub(r"\\\1", s)


def string(v: str) -> Val:
    """``*`` present, ``x*`` prefix, ``*x`` suffix, else exact."""
    if v == "*":
        return Val(kind="present")
    if v.startswith("*"):
        return Val(kind="suffix", value=v[1:])
    if v.endswith("*"):
        return Val(kind="prefix", value=v[:-1])
    return Val(kind="exact", value=v)


def principal(v: str) -> Val:
    """Over the peer's ``spiffe://`` ID."""
    if v == "*":
        return Val(kind="present")
    if v.startswith("*"):
        return Val(kind="regex", value="spiffe://.*" + quote(v[1:]))
    if v.endswith("*"):
        return Val(kind="prefix", value="spiffe://" + v[:-1])
    return Val(kind="exact", value="spiffe://" + v)


def namespace(v: str) -> Val:
    if v == "*":
        pattern = ".*"
    elif v.startswith("*"):
        pattern = ".*" + quote(v[1:])
    elif v.endswith("*"):
        pattern = quote(v[:-1]) + ".*"
    else:
        pattern = quote(v)
    return Val(kind="regex", value=f".*/ns/{pattern}/.*")


def service_account(v: str, ns: str) -> Val:
    """``ns/sa``, or ``sa`` of the policy's namespace."""
    account_ns, _, sa = v.rpartition("/")
    account_ns = account_ns or ns
    return Val(kind="regex", value=f"spiffe://.+/ns/{quote(account_ns)}/(.+/|)sa/{quote(sa)}(/.+)?")


def trust_domain(v: str) -> Val:
    if v == "*":
        return Val(kind="regex", value="spiffe://[^/]+/.*")
    if v.startswith("*"):
        return Val(kind="regex", value=f"spiffe://[^/]*{quote(v[1:])}/.*")
    if v.endswith("*"):
        return Val(kind="regex", value=f"spiffe://{quote(v[:-1])}[^/]*/.*")
    return Val(kind="prefix", value=f"spiffe://{v}/")


def cidr(v: str) -> Val:
    return Val(kind="cidr", value=v.strip())


def port(v: str) -> Val:
    return Val(kind="port", value=v.strip())


def path(v: str) -> Val:
    """Like :func:`string`, and ``{*}`` / ``{**}`` templates."""
    if "{*}" in v or "{**}" in v:
        return Val(kind="template", value=v)
    return string(v)
