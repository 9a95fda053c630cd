"""The sidecar's mesh identity as the compile step uses it (``meshfast run --certs DIR``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MeshIdentity"]


@dataclass(frozen=True, slots=True)
class MeshIdentity:
    """PEM file paths and the SPIFFE ID of the workload certificate."""

    cert_chain: str
    private_key: str
    root_cert: str
    identity: str  # spiffe://TRUST_DOMAIN/ns/NS/sa/SA
    trust_domain: str
