"""Istio's own CRD validation test data, checked the way Istio's test checks it.

Istio's ``TestCRDs`` (pkg/config/validation/openapi_test.go) splits every file of
``pkg/config/validation/testdata/crds`` into documents (``yml.SplitString``: a line starting
with ``---`` ends a document), removes the top-level ``_err`` key and validates each document
alone.  A document with ``_err`` is invalid (the value is the error Istio expects), one
without is valid.

Here each document goes through ``load_config_text`` alone, with its ``_err`` line blanked
(so lines keep their numbers):

- a valid document must draw no error: at most "not implemented yet" (Istio-valid config that
  meshfast does not serve yet), and its kind must actually be checked;
- an invalid document must draw at least one error that is not "not implemented yet", at a
  FILE:LINE inside the document.
"""

from __future__ import annotations

import re

import pytest

from meshfast.config import ConfigError, load_config_text
from meshfast.config import validate as v
from tests.samples import SAMPLES

CRDS = SAMPLES / "pkg" / "config" / "validation" / "testdata" / "crds"
_ERR = re.compile(r"^_err:.*$", re.MULTILINE)
_KIND = re.compile(r"^kind:\s*(\S+)\s*$", re.MULTILINE)
_NOT_IMPLEMENTED = "not implemented yet"

# Documents meshfast does not get right yet, by id: strict, so a fix turns them red.
XFAIL: dict[str, str] = {}


def split(text: str) -> list[str]:
    """Istio's ``yml.SplitString``."""
    parts: list[str] = []
    active: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("---"):
            parts.append("".join(active))
            active = []
        else:
            active.append(line)
    parts.append("".join(active))
    return [p.strip() for p in parts if p.strip()]


def _cases() -> list[object]:
    cases: list[object] = []
    for file in sorted(CRDS.glob("*.yaml")):
        for i, doc in enumerate(split(file.read_text(encoding="utf-8"))):
            case_id = f"{file.stem}#{i}"
            marks = []
            if case_id in XFAIL:
                marks.append(pytest.mark.xfail(strict=True, reason=f"issue 12: {XFAIL[case_id]}"))
            cases.append(pytest.param(file.name, doc, id=case_id, marks=marks))
    return cases


CASES = _cases()


def test_the_corpus_is_there() -> None:
    # 14 files in the shared copy; a document per `---`, each valid or invalid by its file.
    assert len(CASES) == 76
    for param in CASES:
        name, doc = param.values
        assert bool(_ERR.search(doc)) == name.endswith("-invalid.yaml"), param


def _problems(name: str, doc: str) -> list[str]:
    text = _ERR.sub("", doc)
    try:
        load_config_text(text, source=name)
    except ConfigError as e:
        lines = text.count("\n") + 1
        for p in e.problems:
            assert p.file == name
            assert 1 <= p.line <= lines, str(p)
            assert p.path.startswith("$"), str(p)
        return [str(p) for p in e.problems]
    return []


@pytest.mark.parametrize(("name", "doc"), CASES)
def test_istio_crd_testdata(name: str, doc: str) -> None:
    problems = _problems(name, doc)
    errors = [p for p in problems if _NOT_IMPLEMENTED not in p]
    if _ERR.search(doc):
        assert errors, f"invalid for Istio ({_ERR.search(doc)}), but meshfast says {problems}"
    else:
        assert not errors, errors
        kind = _KIND.search(doc)
        assert kind is not None
        assert v.checks_kind(kind.group(1)), f"{kind.group(1)} is not checked at all"
