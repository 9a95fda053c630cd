"""The compiled ``Headers`` (cython/headers.pyx) against its pure-Python twin, the oracle.

Random sequences of operations, valid or not, are applied to one view of each kind; every
step must give the same result, or the same exception type and message, and leave the same
pairs behind.
"""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshfast._core as core
import meshfast._headers as compiled
from meshfast.filters import headers as twin

Twin = twin.Headers
Compiled: Any = compiled.Headers
Impl = Callable[..., Any]


class Str(str):
    """A str subclass: both must treat it as a str."""


VALID = ["a", "A", "b", "B", "x-y", "X-Y", "Content-Type", "set-cookie", "!#$%&'*+-.^_`|~9"]
INVALID = ["", "bad name", "x\n", "x\r", "a:b", "é", "x\x00", 5, None, b"a", Str("X-Y")]
NAMES = st.one_of(st.sampled_from(VALID), st.sampled_from(INVALID), st.text(max_size=4))
VALUES = st.one_of(
    st.text(alphabet="ab 1", max_size=3),
    st.sampled_from(["a\r", "b\nc", "\x00", "é", 5, None, b"v", Str("s")]),
)
PAIRS = st.lists(st.tuples(NAMES, VALUES), max_size=6)
VALID_PAIRS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "x-y", "host"]), st.text("ab", max_size=2)), max_size=6
)
# What `_trusted` may be given besides: pairs as lists, names of a str subclass.  The
# compiled class's C loops take the twin's Python path for them.
ODD_PAIRS = st.lists(
    st.tuples(st.sampled_from(["a", "b", Str("b"), Str("a")]), st.text("ab", max_size=2)).map(
        lambda p: list(p) if p[1] == "a" else p
    ),
    max_size=6,
)
INIT = st.one_of(
    st.none(),
    st.tuples(st.just("pairs"), PAIRS),
    st.tuples(st.just("dict"), st.dictionaries(NAMES.filter(lambda n: n is not None), VALUES)),
    st.tuples(st.just("trusted"), st.one_of(VALID_PAIRS, ODD_PAIRS)),
)
OP = st.one_of(
    st.tuples(st.sampled_from(["add", "set", "setitem"]), NAMES, VALUES),
    st.tuples(st.sampled_from(["get", "pop"]), NAMES, st.sampled_from([None, "d"])),
    st.tuples(
        st.sampled_from(["getitem", "getall", "contains", "delitem", "remove"]),
        NAMES,
        st.none(),
    ),
    st.tuples(
        st.sampled_from(["items", "keys", "len", "iter", "bool", "repr", "copy"]),
        st.none(),
        st.none(),
    ),
    st.tuples(st.just("eq"), VALID_PAIRS, st.none()),
)


def make(cls: Impl, init: Any, trusted: list[tuple[str, str]] | None) -> Any:
    if init is None:
        return cls()
    kind, arg = init
    if kind == "trusted":
        assert trusted is not None
        return cls._trusted(trusted)
    return cls(dict(arg) if kind == "dict" else list(arg))


def apply(cls: Impl, h: Any, op: str, a: Any, b: Any) -> Any:
    if op == "add":
        return h.add(a, b)
    if op == "set":
        return h.set(a, b)
    if op == "setitem":
        h[a] = b
        return None
    if op == "get":
        return h.get(a, b) if b is not None else h.get(a)
    if op == "pop":
        return h.pop(a, b) if b is not None else h.pop(a)
    if op == "getitem":
        return h[a]
    if op == "getall":
        return h.getall(a)
    if op == "contains":
        return a in h
    if op == "delitem":
        del h[a]
        return None
    if op == "remove":
        return h.remove(a)
    if op == "items":
        return h.items()
    if op == "keys":
        return h.keys()
    if op == "len":
        return len(h)
    if op == "iter":
        return list(h)
    if op == "bool":
        return bool(h)
    if op == "repr":
        return repr(h)
    if op == "copy":
        c = h.copy()
        assert type(c) is cls
        assert c == h
        assert c is not h
        c.add("x-copy", "1")  # a copy is independent
        assert c != h
        return c.items()
    if op == "eq":
        other = cls(list(a))
        return (h == other, h != other, other == h, h == list(a), h == h.copy())
    raise AssertionError(op)


def outcome(f: Callable[[], Any]) -> tuple[str, Any]:
    try:
        result = f()
    except Exception as e:  # the same exception type and message is what is compared
        return ("raised", type(e), str(e))
    return ("returned", type(result), result)


@settings(max_examples=300)
@given(INIT, st.lists(OP, max_size=25))
def test_compiled_headers_behave_like_the_twin(init: Any, ops: list[Any]) -> None:
    # `_trusted` wraps the list without copying: each kind gets its own, to compare after.
    lists = {
        cls: list(init[1]) if init and init[0] == "trusted" else None for cls in (Twin, Compiled)
    }
    made = {cls: outcome(partial(make, cls, init, lists[cls])) for cls in (Twin, Compiled)}
    if made[Twin][0] == "raised":
        assert made[Compiled] == made[Twin]
        return
    assert made[Compiled][0] == "returned"
    views = {cls: made[cls][2] for cls in (Twin, Compiled)}
    for op, a, b in ops:
        got = {cls: outcome(partial(apply, cls, views[cls], op, a, b)) for cls in (Twin, Compiled)}
        assert got[Compiled] == got[Twin], (op, a, b)
        assert views[Compiled].items() == views[Twin].items(), (op, a, b)
    assert lists[Compiled] == lists[Twin]  # `add` appends to the wrapped list, as the twin's


def test_compiled_module_is_compiled_and_registered_by_the_core() -> None:
    # A silent fallback to Python code cannot pass this: `class` statements make heap types
    # and Python functions; Cython's cdef class is a static type with C methods.
    assert sys.modules["meshfast._headers"] is core._headers is compiled
    assert Compiled.__module__ == "meshfast._headers"
    assert not Compiled.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE
    for method in (Compiled.get, Compiled.set, Compiled._trusted, Compiled.__getitem__):
        assert not inspect.isfunction(method)
        assert not inspect.ismethod(method) or not inspect.isfunction(method.__func__)
    assert not hasattr(Compiled(), "__dict__")
    assert Compiled.__hash__ is None
    assert Twin.__hash__ is None


def test_unhashable_and_mutable_views() -> None:
    for cls in (Twin, Compiled):
        with pytest.raises(TypeError, match="unhashable type"):
            hash(cls())


@pytest.mark.parametrize("cls", [Twin, Compiled], ids=["twin", "compiled"])
def test_pickle_and_copy(cls: Impl) -> None:
    import copy

    h = cls([("A", "1"), ("b", "2"), ("a", "3")])
    assert pickle.loads(pickle.dumps(h)) == h
    assert copy.copy(h) == h
    assert copy.deepcopy(h) == h


def test_compiled_headers_accept_a_twin_as_init() -> None:
    t = Twin([("A", "1"), ("b", "2")])
    assert Compiled(t).items() == t.items()


def run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "MESHFAST_PURE_PYTHON"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_the_package_uses_the_compiled_class_unless_told_not_to() -> None:
    code = (
        "import meshfast.filters as f, meshfast.filters.api as a, meshfast.filters.dispatch as d\n"
        "print(f.Headers.__module__, a.Headers is d.Headers is f.Headers)"
    )
    assert run(code) == "meshfast._headers True"
    assert run(code, MESHFAST_PURE_PYTHON="1") == "meshfast.filters.headers True"


def test_compiled_headers_unpickle_in_a_fresh_interpreter() -> None:
    # meshfast._headers is importable before meshfast._core is (python/meshfast/_headers.py).
    data = pickle.dumps(Compiled([("x-a", "1")]))
    code = f"import pickle; print(repr(pickle.loads({data!r})))"
    assert run(code) == "Headers([('x-a', '1')])"
