"""Standard-library modules a sidecar imports but does not use, loaded on first use instead.

Trio imports ``ssl`` (``trio._ssl``) and ``hmac`` (``trio._dtls``) when it is imported, which
maps OpenSSL's ``libssl`` and ``libcrypto`` into the process: ~4.6 MiB of a sidecar's idle RSS
for TLS code it never runs (the core does TLS in Rust). Only plain modules can be deferred
this way, not packages (see :func:`defer`).  :func:`defer` puts a placeholder in
``sys.modules`` that becomes the real module the first time anything reads one of its
attributes — ``ssl.SSLContext``, ``from hmac import compare_digest``: user code and filters
see the real module — while a bare ``import ssl`` (all Trio does at import time) does not
load it.

Only ``meshfast run`` calls it, before Trio is imported; the library never does.
(``importlib.util.LazyLoader`` cannot do this: the ``import`` statement itself reads the
module's ``__spec__``, which makes a lazy module load.)
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

__all__ = ["defer"]

_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """A module whose contents are loaded on the first attribute it is asked for."""

    def __getattr__(self, name: str) -> Any:
        with _lock:
            real = self.__dict__.get("_meshfast_real")
            if real is None:
                real = _load(self.__name__)
                self.__dict__["_meshfast_real"] = real
                # Holders of the placeholder (modules that imported it) now see the real
                # contents; new imports get the real module.
                self.__dict__.update(
                    {k: v for k, v in real.__dict__.items() if k not in ("__spec__", "__loader__")}
                )
        return getattr(real, name)


def _load(name: str) -> types.ModuleType:
    placeholder = sys.modules.pop(name)
    try:
        return importlib.import_module(name)
    except BaseException:
        sys.modules[name] = placeholder
        raise


def defer(*names: str) -> None:
    """Placeholders for the ``names`` not imported yet (and importable)."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        # Not packages: `import pkg.sub` would reach the placeholder first, and loading the
        # real package from there runs its submodules twice (two copies of their classes).
        if spec is None or spec.submodule_search_locations is not None:
            continue
        module = _Deferred(name)
        module.__spec__ = spec
        module.__file__ = spec.origin
        sys.modules[name] = module
