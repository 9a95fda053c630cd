"""`meshfast run` defers ssl and hmac: an idle sidecar maps no OpenSSL, and anything that does
use them gets the real modules."""

from __future__ import annotations

import hmac
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from .conftest import Sidecar, service_entry


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_trio_imports_without_loading_openssl_and_the_modules_still_work() -> None:
    out = run(
        """
        import sys
        from meshfast.control.lazy_stdlib import defer
        defer("ssl", "hmac")
        import trio, trio._ssl
        print("_ssl" in sys.modules, "_hashlib" in sys.modules)
        from ssl import SSLContext, PROTOCOL_TLS_CLIENT
        import ssl
        ctx = ssl.create_default_context()
        print(isinstance(ctx, SSLContext), isinstance(ctx, ssl.SSLContext))
        print(trio._ssl._stdlib_ssl.SSLEOFError is ssl.SSLEOFError, sys.modules["ssl"] is ssl)
        import hmac
        print(hmac.new(b"k", b"m", "sha256").hexdigest()[:8])
        """
    )
    want = hmac.new(b"k", b"m", "sha256").hexdigest()[:8]  # this process: no deferral
    assert out.splitlines() == ["False False", "True True", "True True", want]


def test_packages_are_not_deferred_so_their_submodules_load_once() -> None:
    out = run(
        """
        import sys
        from meshfast.control.lazy_stdlib import defer
        defer("idna")
        import idna.core  # a submodule first
        import idna
        print(type(sys.modules["idna"]).__name__, idna.IDNAError is idna.core.IDNAError)
        try:
            idna.encode("a..b")
        except idna.core.IDNAError:
            print("caught")
        """
    )
    assert out.splitlines() == ["module True", "caught"]


def test_an_idle_sidecar_maps_no_openssl(echo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    up = echo("a")
    path = tmp_path / "mesh.yaml"
    path.write_text(service_entry("a.example.com", 80, [(up.address, {})]))
    car = Sidecar(path)
    try:
        assert httpx.get(f"{car.url}/", headers={"host": "a.example.com"}).status_code == 200
        assert httpx.get(f"{car.admin}/stats").status_code == 200
        maps = Path(f"/proc/{car.proc.pid}/maps").read_text()
        assert "libcrypto" not in maps
        assert "libssl" not in maps
    finally:
        car.stop()
