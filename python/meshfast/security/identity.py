"""``meshfast run --certs DIR``: the workload's mesh identity, as the compile step uses it.

Only the file paths and the SPIFFE ID are read here (the ID by the core, from the
certificate): a sidecar never imports the certificate libraries ``meshfast ca`` uses.
"""

from __future__ import annotations

from pathlib import Path

from meshfast.config.identity import MeshIdentity

__all__ = ["load_identity"]

FILES = ("cert-chain.pem", "key.pem", "root-cert.pem")


def load_identity(folder: str | Path) -> MeshIdentity:
    """The identity in ``folder``; ValueError (or OSError) naming a missing file or a
    certificate without a SPIFFE ID."""
    from meshfast import _core

    base = Path(folder).resolve()
    missing = [name for name in FILES if not (base / name).is_file()]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (make them with `meshfast ca issue`)")
    chain, key, root = (str(base / name) for name in FILES)
    try:
        identity = _core.cert_identity(chain)
    except _core.CoreError as exc:
        raise ValueError(str(exc)) from exc
    if identity is None:
        raise ValueError(f"{chain}: the certificate has no spiffe:// URI SAN")
    trust_domain = identity.removeprefix("spiffe://").split("/", 1)[0]
    return MeshIdentity(chain, key, root, identity, trust_domain)
