"""`meshfast.security.ca`: the CA and workload certificates, checked with cryptography."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshfast import _core
from meshfast.security import ca
from meshfast.security.identity import load_identity


def test_spiffe_ids_are_validated() -> None:
    assert ca.spiffe_id("cluster.local", "default", "reviews") == (
        "spiffe://cluster.local/ns/default/sa/reviews"
    )
    for td, ns, sa in (("Bad Domain", "a", "b"), ("td", "UPPER", "b"), ("td", "a", "x/y")):
        with pytest.raises(ValueError, match="invalid"):
            ca.spiffe_id(td, ns, sa)


def test_issued_identity_is_a_spiffe_workload_certificate(tmp_path: Path) -> None:
    root_path = ca.init_ca(tmp_path / "ca", trust_domain="example.org")
    issued = ca.issue(tmp_path / "ca", tmp_path / "w", namespace="shop", service_account="cart")
    assert issued.identity == "spiffe://example.org/ns/shop/sa/cart"
    for key in (tmp_path / "ca" / "root-key.pem", tmp_path / "w" / "key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate((tmp_path / "w" / "cert-chain.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [issued.identity]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    root = x509.load_pem_x509_certificate(root_path.read_bytes())
    assert leaf.issuer == root.subject
    assert (tmp_path / "w" / "root-cert.pem").read_bytes() == root_path.read_bytes()
    # The core reads the same identity; the sidecar's loader finds the trust domain.
    assert _core.cert_identity(str(tmp_path / "w" / "cert-chain.pem")) == issued.identity
    mesh = load_identity(tmp_path / "w")
    assert (mesh.identity, mesh.trust_domain) == (issued.identity, "example.org")


def test_a_ca_is_never_overwritten(tmp_path: Path) -> None:
    ca.init_ca(tmp_path)
    before = (tmp_path / "root-cert.pem").read_bytes()
    with pytest.raises(FileExistsError):
        ca.init_ca(tmp_path)
    assert (tmp_path / "root-cert.pem").read_bytes() == before


def test_a_certificate_without_a_spiffe_id_is_not_an_identity(tmp_path: Path) -> None:
    ca.init_ca(tmp_path / "ca")
    for name in ("cert-chain.pem", "root-cert.pem"):
        (tmp_path / name).write_bytes((tmp_path / "ca" / "root-cert.pem").read_bytes())
    (tmp_path / "key.pem").write_bytes((tmp_path / "ca" / "root-key.pem").read_bytes())
    with pytest.raises(ValueError, match="no spiffe:// URI SAN"):
        load_identity(tmp_path)
