from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import meshfast.filters
from meshfast.filters import headers as twin

# What the package uses (compiled unless MESHFAST_PURE_PYTHON=1) and the pure-Python twin.
IMPLS = pytest.mark.parametrize(
    "cls", [meshfast.filters.Headers, twin.Headers], ids=["selected", "twin"]
)

NAMES = st.sampled_from(["a", "A", "b", "B", "x-y", "X-Y"])
VALUES = st.text(alphabet="abc 1", max_size=3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), NAMES, VALUES),
        st.tuples(st.just("set"), NAMES, VALUES),
        st.tuples(st.just("setitem"), NAMES, VALUES),
        st.tuples(st.just("del"), NAMES, st.just("")),
        st.tuples(st.just("remove"), NAMES, st.just("")),
    ),
    max_size=20,
)


def model_apply(model: list[tuple[str, str]], op: str, name: str, value: str) -> None:
    key = name.lower()
    if op == "add":
        model.append((key, value))
    elif op in ("set", "setitem"):
        first = next((i for i, (n, _) in enumerate(model) if n == key), None)
        rest = [p for p in model if p[0] != key]
        if first is None:
            rest.append((key, value))
        else:
            rest.insert(sum(1 for n, _ in model[:first] if n != key), (key, value))
        model[:] = rest
    else:
        model[:] = [p for p in model if p[0] != key]


@IMPLS
@given(OPS)
def test_headers_match_a_list_of_pairs(
    cls: type[twin.Headers], ops: list[tuple[str, str, str]]
) -> None:
    h = cls()
    model: list[tuple[str, str]] = []
    for op, name, value in ops:
        if op == "add":
            h.add(name, value)
        elif op == "set":
            h.set(name, value)
        elif op == "setitem":
            h[name] = value
        elif op == "del":
            present = name in h
            if present:
                del h[name]
            else:
                with pytest.raises(KeyError):
                    del h[name]
        else:
            h.remove(name)
        model_apply(model, op, name, value)
        assert h.items() == model
        for n in ("a", "B", "x-Y", "zz"):
            vals = [v for k, v in model if k == n.lower()]
            assert h.getall(n) == vals
            assert h.get(n) == (vals[0] if vals else None)
            assert (n in h) == bool(vals)
        assert list(h) == list(dict.fromkeys(k for k, _ in model))
        assert len(h) == len(set(k for k, _ in model))


@IMPLS
def test_mapping_access_and_init(cls: type[twin.Headers]) -> None:
    Headers = cls
    h = Headers([("Content-Type", "text/plain"), ("set-cookie", "a"), ("Set-Cookie", "b")])
    assert h["content-type"] == "text/plain"
    assert h.getall("SET-COOKIE") == ["a", "b"]
    assert Headers({"X-A": "1"}).items() == [("x-a", "1")]
    assert Headers(h) == h
    assert h.copy() is not h
    with pytest.raises(KeyError):
        h["missing"]
    assert h.get("missing", "d") == "d"
    assert h.pop("set-cookie") == "a"
    assert "set-cookie" not in h


@IMPLS
@pytest.mark.parametrize(
    ("name", "value"),
    [("bad name", "v"), ("", "v"), ("x\n", "v"), ("x", "a\r\nb: c"), ("x", "a\x00")],
)
def test_invalid_names_and_values_are_refused(
    cls: type[twin.Headers], name: str, value: str
) -> None:
    with pytest.raises(ValueError, match="invalid header"):
        cls().add(name, value)
