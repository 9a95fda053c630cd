"""Keeping the sidecar's own certificate fresh: ``meshfast run --certs DIR --ca CA``.

The certificate in ``DIR`` is issued again by the CA in ``CA`` — the same SPIFFE identity,
the same lifetime — once half of its lifetime has passed (Istio's default
``SECRET_GRACE_PERIOD_RATIO``), long before it expires.  The new files are written in place
(each renamed over the old one); the sidecar's certificate watch then serves them to new
handshakes, and connections already open keep theirs.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from meshfast.security import ca

RENEW_AT = 0.5  # of the lifetime (Istio's SECRET_GRACE_PERIOD_RATIO)


@dataclass(frozen=True, slots=True)
class Lease:
    """What a certificate in ``--certs`` is: who, from when to when."""

    identity: str
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def renew_at(self) -> datetime.datetime:
        return self.not_before + (self.not_after - self.not_before) * RENEW_AT

    @property
    def namespace_and_account(self) -> tuple[str, str]:
        """``spiffe://td/ns/NS/sa/SA`` → (NS, SA); ValueError for another form."""
        parts = self.identity.removeprefix("spiffe://").split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise ValueError(f"{self.identity}: not an ns/sa SPIFFE ID this CA issues")
        return parts[2], parts[4]


def lease(certs: Path) -> Lease:
    """The lease of ``certs/cert-chain.pem``; ValueError when it has no SPIFFE ID."""
    cert = x509.load_pem_x509_certificate((certs / ca.CERT_CHAIN).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if not spiffe:
        raise ValueError(f"{certs / ca.CERT_CHAIN}: no spiffe:// URI SAN")
    return Lease(spiffe[0], cert.not_valid_before_utc, cert.not_valid_after_utc)


def renew(ca_folder: Path, certs: Path) -> ca.Issued:
    """Issues ``certs``' identity again, for the lifetime it had, into ``certs``."""
    current = lease(certs)
    namespace, account = current.namespace_and_account
    # The lifetime counts from its backdated start: the same lifetime again, not 5 min more.
    lifetime = current.not_after - current.not_before - ca.BACKDATE
    return ca.issue(
        ca_folder,
        certs,
        namespace=namespace,
        service_account=account,
        lifetime=max(lifetime, datetime.timedelta(minutes=1)),
    )


def due_in(certs: Path, now: datetime.datetime | None = None) -> float:
    """Seconds until ``certs`` should be renewed (0 when it is due)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (lease(certs).renew_at - now).total_seconds())
