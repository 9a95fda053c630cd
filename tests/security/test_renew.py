"""Renewal of the sidecar's own certificate (``meshfast run --ca``): same identity, same
lifetime, due at half of it, written whole."""

from __future__ import annotations

import datetime
from pathlib import Path

from meshfast.security import ca, renew


def _issued(tmp_path: Path, lifetime: datetime.timedelta) -> tuple[Path, Path]:
    ca_dir, certs = tmp_path / "ca", tmp_path / "certs"
    ca.init_ca(ca_dir, trust_domain="example.org")
    ca.issue(ca_dir, certs, namespace="shop", service_account="web", lifetime=lifetime)
    return ca_dir, certs


def test_renewal_keeps_the_identity_and_the_lifetime(tmp_path: Path) -> None:
    ca_dir, certs = _issued(tmp_path, datetime.timedelta(hours=2))
    before = renew.lease(certs)
    chain = (certs / ca.CERT_CHAIN).read_bytes()
    key = (certs / ca.KEY).read_bytes()
    renew.renew(ca_dir, certs)
    after = renew.lease(certs)
    assert after.identity == before.identity == "spiffe://example.org/ns/shop/sa/web"
    # A new key and certificate, valid as long as the old one was (give or take the time
    # the test takes).
    assert (certs / ca.CERT_CHAIN).read_bytes() != chain
    assert (certs / ca.KEY).read_bytes() != key
    span = after.not_after - after.not_before
    assert abs(span - (before.not_after - before.not_before)) < datetime.timedelta(seconds=30)
    assert after.not_after >= before.not_after
    # Every file written whole: renamed into place, no temporary left behind.
    assert sorted(p.name for p in certs.iterdir()) == [ca.CERT_CHAIN, ca.KEY, ca.ROOT_CERT]
    assert (certs / ca.KEY).stat().st_mode & 0o077 == 0


def test_a_certificate_is_due_at_half_its_lifetime(tmp_path: Path) -> None:
    _, certs = _issued(tmp_path, datetime.timedelta(hours=2))
    lease = renew.lease(certs)
    half = lease.not_before + (lease.not_after - lease.not_before) / 2
    assert lease.renew_at == half
    assert renew.due_in(certs, now=half - datetime.timedelta(seconds=10)) == 10.0
    assert renew.due_in(certs, now=half + datetime.timedelta(hours=1)) == 0.0
    assert lease.namespace_and_account == ("shop", "web")
