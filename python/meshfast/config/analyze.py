"""Checks across resources in the spirit of ``istioctl analyze``: warnings, never errors.

Each resource is valid alone; together they are likely not what was meant.  They warn and
do not refuse, because the files given may be only part of what the mesh holds (a
DestinationRule applied elsewhere defines the subset a route names).  Each names the
``istioctl analyze`` message it matches.

- a route to a subset no DestinationRule for its host defines (IST0101);
- a VirtualService bound to a Gateway that is not there (IST0101);
- two VirtualServices routing the same host through the same gateway (or the mesh):
  the sidecar uses one (IST0109);
- a DestinationRule for a host no Service or ServiceEntry declares, when the files
  declare services at all (IST0101).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from meshfast.config import hosts
from meshfast.config import registry as reg
from meshfast.config import resources as r
from meshfast.config.http_route import Destination
from meshfast.config.load import Document
from meshfast.config.model import Problem

Origins = Mapping[tuple[str, str, str], tuple[Document, r.Resource]]
MESH = "mesh"


def warnings(origins: Origins) -> Iterator[Problem]:
    """Every warning about the resources of ``origins`` (key: kind, namespace, name)."""
    found = [(doc, res) for doc, res in origins.values()]
    registry = reg.build_registry(res for _, res in found)
    vss = [(doc, res) for doc, res in found if isinstance(res, r.VirtualService)]
    drs = [(doc, res) for doc, res in found if isinstance(res, r.DestinationRule)]
    gateways = {(k[1], k[2]) for k in origins if k[0] == "Gateway"}
    subsets = _subsets(drs, registry)
    for doc, vs in vss:
        yield from _undefined_subsets(doc, vs, subsets, registry)
        yield from _missing_gateways(doc, vs, gateways)
    yield from _shared_hosts(vss)
    if registry:
        yield from _undeclared_hosts(drs, registry)


def _warning(doc: Document, kind: str, name: str, path: str, message: str) -> Problem:
    return Problem(doc.file, doc.line_of(path), kind, name, path, message, "warning")


def _subsets(
    drs: Iterable[tuple[Document, r.DestinationRule]], registry: dict[str, reg.RegistryService]
) -> dict[str, set[str]]:
    """Subset names by DestinationRule host (an FQDN or a wildcard)."""
    out: dict[str, set[str]] = {}
    for _, dr in drs:
        host = reg.resolve(dr.spec.host, dr.metadata.namespace, registry)
        out.setdefault(host, set()).update(s.name for s in dr.spec.subsets)
    return out


def _destinations(vs: r.VirtualService) -> Iterator[tuple[str, Destination]]:
    for i, http in enumerate(vs.spec.http):
        for j, rd in enumerate(http.route):
            yield f"$.spec.http[{i}].route[{j}].destination", rd.destination
        if http.mirror is not None:
            yield f"$.spec.http[{i}].mirror", http.mirror
        for j, mirror in enumerate(http.mirrors):
            yield f"$.spec.http[{i}].mirrors[{j}].destination", mirror.destination
    for i, tls in enumerate(vs.spec.tls):
        for j, tls_rd in enumerate(tls.route):
            yield f"$.spec.tls[{i}].route[{j}].destination", tls_rd.destination
    for i, tcp in enumerate(vs.spec.tcp):
        for j, tcp_rd in enumerate(tcp.route):
            yield f"$.spec.tcp[{i}].route[{j}].destination", tcp_rd.destination


def _undefined_subsets(
    doc: Document,
    vs: r.VirtualService,
    subsets: dict[str, set[str]],
    registry: dict[str, reg.RegistryService],
) -> Iterator[Problem]:
    for path, dest in _destinations(vs):
        if dest.subset is None:
            continue
        host = reg.resolve(dest.host, vs.metadata.namespace, registry)
        defined = set().union(
            *(names for h, names in subsets.items() if h == host or reg.wildcard_match(h, host))
        )
        if dest.subset not in defined:
            yield _warning(
                doc,
                "VirtualService",
                vs.metadata.name,
                f"{path}.subset",
                f'subset "{dest.subset}" of {host}: no DestinationRule defines it'
                " (istioctl analyze IST0101)",
            )


def _gateway_key(ref: str, namespace: str) -> tuple[str, str]:
    ns, _, name = ref.rpartition("/")
    return (ns or namespace, name)


def _missing_gateways(
    doc: Document, vs: r.VirtualService, gateways: set[tuple[str, str]]
) -> Iterator[Problem]:
    refs = [(f"$.spec.gateways[{i}]", g) for i, g in enumerate(vs.spec.gateways)]
    for i, http in enumerate(vs.spec.http):
        for j, match in enumerate(http.match):
            refs.extend(
                (f"$.spec.http[{i}].match[{j}].gateways[{k}]", g)
                for k, g in enumerate(match.gateways)
            )
    for path, ref in refs:
        if ref == MESH:
            continue
        key = _gateway_key(ref, vs.metadata.namespace)
        if key not in gateways:
            yield _warning(
                doc,
                "VirtualService",
                vs.metadata.name,
                path,
                f"gateway {key[0]}/{key[1]} is not defined (istioctl analyze IST0101)",
            )


def _shared_hosts(vss: Iterable[tuple[Document, r.VirtualService]]) -> Iterator[Problem]:
    first: dict[tuple[tuple[str, str], str], r.VirtualService] = {}
    for doc, vs in vss:
        ns = vs.metadata.namespace
        scopes = [_gateway_key(g, ns) if g != MESH else ("", MESH) for g in vs.spec.gateways]
        for i, host in enumerate(vs.spec.hosts):
            fqdn = hosts.expand(host, ns)
            for scope in scopes or [("", MESH)]:
                other = first.setdefault((scope, fqdn), vs)
                if other is vs:
                    continue
                where = MESH if scope == ("", MESH) else f"gateway {scope[0]}/{scope[1]}"
                yield _warning(
                    doc,
                    "VirtualService",
                    vs.metadata.name,
                    f"$.spec.hosts[{i}]",
                    f"host {fqdn} is also routed by VirtualService {other.metadata.namespace}/"
                    f"{other.metadata.name} through the {where}: one of them is used"
                    " (istioctl analyze IST0109)",
                )


def _undeclared_hosts(
    drs: Iterable[tuple[Document, r.DestinationRule]], registry: dict[str, reg.RegistryService]
) -> Iterator[Problem]:
    for doc, dr in drs:
        host = reg.resolve(dr.spec.host, dr.metadata.namespace, registry)
        if host.startswith("*") or host in registry:
            continue
        yield _warning(
            doc,
            "DestinationRule",
            dr.metadata.name,
            "$.spec.host",
            f"no Service or ServiceEntry declares {host} (istioctl analyze IST0101)",
        )
