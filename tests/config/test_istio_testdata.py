"""Istio's own CRD validation test data, checked the way Istio's test checks it.

Istio's ``TestCRDs`` (pkg/config/validation/openapi_test.go) splits every file of
``pkg/config/validation/testdata/crds`` into documents (``yml.SplitString``: a line starting
with ``---`` ends a document), removes the top-level ``_err`` key and validates each document
alone.  A document with ``_err`` is invalid (the value is the error Istio expects), one
without is valid.

Here each document goes through ``load_config_text(istio=True)`` (``validate --istio``)
alone, with its ``_err`` line blanked (so lines keep their numbers):

- a valid document must draw no error (what meshfast does not serve yet is left out in that
  mode), and its kind must actually be checked;
- an invalid document must draw at least one error, at a FILE:LINE inside the document;
  where Istio's error names a field (``spec.jwtRules[0].fromHeaders[0].name: Required
  value``, ``audiences[0] in body should be ...``), one of meshfast's errors names that field
  too.
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
# The field an Istio error names: a `spec.…` path, or what comes before "in body".
_SPEC_PATH = re.compile(r"\bspec((?:\.[A-Za-z]+(?:\[\d+\])?)*)(?::| in body)")
_IN_BODY = re.compile(r"([A-Za-z]+)(?:\[\d+\])? in body")

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


def named_field(err: str) -> str | None:
    """The field Istio's error names, if it names one (its last path component)."""
    m = _SPEC_PATH.search(err)
    if m:
        last = m.group(1).rsplit(".", 1)[-1] if m.group(1) else "spec"
        return last.split("[", 1)[0]
    m = _IN_BODY.search(err)
    return m.group(1) if m else None


def test_the_named_field_is_read_off_istio_errors() -> None:
    assert named_field("'spec.jwtRules[0].fromHeaders[0].name: Required value'") == "name"
    assert named_field("'audiences[0] in body should be at least 1 chars long'") == "audiences"
    assert named_field("spec.portLevelMtls in body should have at least 1 properties") == (
        "portLevelMtls"
    )
    assert named_field("'spec: Required value'") == "spec"
    assert named_field("portLevelMtls requires selector") is None


def _problems(name: str, doc: str) -> list[str]:
    """What ``validate --istio`` says of the document (Istio's validity alone)."""
    text = _ERR.sub("", doc)
    try:
        load_config_text(text, source=name, istio=True)
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
    errors = [p for p in problems if ": warning: " not in p]
    assert not any(_NOT_IMPLEMENTED in p for p in errors), errors
    err = _ERR.search(doc)
    if err:
        assert errors, f"invalid for Istio ({err.group(0)}), but meshfast says {problems}"
        field = named_field(err.group(0))
        if field is not None:
            assert any(field in e.split(": ", 3)[-2] or f'"{field}"' in e for e in errors), (
                f"Istio names {field!r} ({err.group(0)}); meshfast says {errors}"
            )
    else:
        assert not errors, errors
        kind = _KIND.search(doc)
        assert kind is not None
        assert v.checks_kind(kind.group(1)), f"{kind.group(1)} is not checked at all"
