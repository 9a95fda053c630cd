"""A mesh CA and workload certificates, in the files Istio's sidecars use.

``init_ca`` writes ``root-cert.pem`` and ``root-key.pem`` (mode 0600) into a folder;
``issue`` writes a workload's ``key.pem``, ``cert-chain.pem`` and ``root-cert.pem`` with the
SPIFFE ID ``spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`` as its one URI SAN, usable
for both ends of mTLS (serverAuth and clientAuth), as istiod issues them.

Certificates are built with ``cryptography`` (which pyOpenSSL itself recommends for building
them) and every issued chain is verified with pyOpenSSL's ``X509StoreContext`` before it is
written, so a broken chain never reaches a sidecar.  Keys are ECDSA P-256.  Imported only by
``meshfast ca``: a running sidecar never pays for these libraries.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

__all__ = ["Issued", "init_ca", "issue", "spiffe_id"]

ROOT_CERT, ROOT_KEY = "root-cert.pem", "root-key.pem"
CERT_CHAIN, KEY = "cert-chain.pem", "key.pem"
# Certificates are valid from a little before they are made: clocks differ between machines.
BACKDATE = datetime.timedelta(minutes=5)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """``spiffe://td/ns/NS/sa/SA``; ValueError for names a SPIFFE ID cannot hold."""
    if not _TRUST_DOMAIN.match(trust_domain):
        raise ValueError(f"invalid trust domain {trust_domain!r}")
    for what, value in (("namespace", namespace), ("service account", service_account)):
        if not _LABEL.match(value):
            raise ValueError(f"invalid {what} {value!r} (lowercase letters, digits, '-', '.')")
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Writes ``path`` whole or not at all: a new file renamed over the old one, so a sidecar
    watching the folder (certificate rotation) never reads half a file."""
    # Keys are created 0600 from the start, never readable by others even briefly.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init_ca(folder: Path, *, trust_domain: str = "cluster.local", days: int = 3650) -> Path:
    """A self-signed root for ``trust_domain`` in ``folder`` (created); returns the cert path.
    Refuses to overwrite an existing root (FileExistsError)."""
    spiffe_id(trust_domain, "x", "x")  # validates the trust domain
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / ROOT_KEY).exists():
        raise FileExistsError(f"{folder / ROOT_KEY} exists: this folder already holds a CA")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"meshfast root CA ({trust_domain})"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(folder / ROOT_KEY, key_pem, private=True)
    _write(folder / ROOT_CERT, _pem(cert))
    return folder / ROOT_CERT


@dataclass(frozen=True, slots=True)
class Issued:
    identity: str
    folder: Path
    not_after: datetime.datetime


def _load_ca(ca_folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((ca_folder / ROOT_CERT).read_bytes())
    key = serialization.load_pem_private_key((ca_folder / ROOT_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_folder / ROOT_KEY}: not a key this CA made")
    return cert, key


def _trust_domain_of(root: x509.Certificate) -> str:
    orgs = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if not orgs:
        raise ValueError("the root certificate names no trust domain (O=)")
    return str(orgs[0].value)


def _verify(root: x509.Certificate, leaf: x509.Certificate) -> None:
    """pyOpenSSL checks the chain the way a TLS peer will."""
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(root))
    crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf)).verify_certificate()


def issue(
    ca_folder: Path,
    out: Path,
    *,
    namespace: str,
    service_account: str,
    days: int = 1,
    lifetime: datetime.timedelta | None = None,
) -> Issued:
    """A workload identity signed by the CA in ``ca_folder``, written into ``out`` (created):
    ``key.pem`` (0600), ``cert-chain.pem`` and ``root-cert.pem`` — ``meshfast run --certs``.
    Valid ``days``, or ``lifetime`` when given (renewals keep the one they renew)."""
    root, root_key = _load_ca(ca_folder)
    identity = spiffe_id(_trust_domain_of(root), namespace, service_account)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    valid = lifetime if lifetime is not None else datetime.timedelta(days=days)
    not_after = min(now + valid, root.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        # Istio's workload certificates: an empty subject, the SPIFFE ID as a critical SAN.
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    _verify(root, cert)
    out.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The root first, then the key and its certificate back to back: a watcher that reads
    # between the last two sees a key that does not match, which the core refuses.
    _write(out / ROOT_CERT, _pem(root))
    _write(out / KEY, key_pem, private=True)
    _write(out / CERT_CHAIN, _pem(cert))
    return Issued(identity, out, not_after)
