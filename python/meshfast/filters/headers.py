"""``Headers``: the case-insensitive, multi-value header view filters are given.

This is the pure-Python implementation; it is also the oracle the compiled twin
(``cython/headers.pyx``) is tested against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

__all__ = ["Headers"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def _name(name: str) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    return name.lower()


def _value(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"header values are str, got {type(value).__name__}")
    if _BAD_VALUE.search(value):
        raise ValueError(f"invalid header value {value!r} (CR, LF and NUL are not allowed)")
    return value


class Headers:
    """Case-insensitive, multi-value, ordered HTTP headers: a list of (name, value) pairs.

    Names are kept lowercase.  Mapping-style access sees the first value of a name
    (``headers["x"]``, ``get``); ``getall`` sees every value.  ``headers[name] = value`` and
    ``set`` replace every value of ``name`` (in the place of the first one); ``add`` appends
    one more.  Iterating gives each name once, in order of first appearance; ``items()``
    gives every pair.  Names must be HTTP tokens and values must not hold CR, LF or NUL
    (``ValueError``).
    """

    __slots__ = ("_pairs",)

    def __init__(
        self, init: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None
    ) -> None:
        self._pairs: list[tuple[str, str]] = []
        if init is None:
            return
        if isinstance(init, Headers):
            self._pairs = list(init._pairs)
            return
        pairs = init.items() if isinstance(init, Mapping) else init
        for name, value in pairs:
            self.add(name, value)

    @classmethod
    def _trusted(cls, pairs: list[tuple[str, str]]) -> Headers:
        """Wraps pairs from the core (names already lowercase and valid) without copying."""
        h = cls.__new__(cls)
        h._pairs = pairs
        return h

    # --- reading

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = name.lower()
        for n, v in self._pairs:
            if n == key:
                return v
        return default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name``, in order (empty when absent)."""
        key = name.lower()
        return [v for n, v in self._pairs if n == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(n == key for n, _ in self._pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """Each name once, in order of first appearance."""
        return list(dict.fromkeys(n for n, _ in self._pairs))

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, in order."""
        return list(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._pairs == other._pairs
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"

    def copy(self) -> Headers:
        return Headers(self)

    # --- writing

    def add(self, name: str, value: str) -> None:
        """Appends one more value for ``name``."""
        self._pairs.append((_name(name), _value(value)))

    def set(self, name: str, value: str) -> None:
        """Replaces every value of ``name`` by ``value``, where the first one was (appended
        when absent)."""
        key, value = _name(name), _value(value)
        out: list[tuple[str, str]] = []
        done = False
        for pair in self._pairs:
            if pair[0] != key:
                out.append(pair)
            elif not done:
                out.append((key, value))
                done = True
        if not done:
            out.append((key, value))
        self._pairs = out

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def remove(self, name: str) -> int:
        """Removes every value of ``name``; returns how many there were."""
        key = name.lower()
        before = len(self._pairs)
        self._pairs = [p for p in self._pairs if p[0] != key]
        return before - len(self._pairs)

    def pop(self, name: str, default: str | None = None) -> str | None:
        """Removes every value of ``name`` and returns the first (or ``default``)."""
        value = self.get(name, default)
        self.remove(name)
        return value
