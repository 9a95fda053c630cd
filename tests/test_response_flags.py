"""The response flags the core sets, the Python side and the docs stay in step: every flag
the core can render (``_core.response_flags``) is documented in README's local replies."""

from __future__ import annotations

import re

from meshfast import _core
from tests.samples import REPO


def test_every_flag_is_documented_once_with_its_name() -> None:
    flags = _core.response_flags()
    names = [name for name, _ in flags]
    assert len(names) == len(set(names))
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**Local replies**") :]
    section = section[: section.index("\n- **")]
    documented = set(re.findall(r"`([A-Z]{2,4})`", section))
    assert set(names) <= documented, set(names) - documented


def test_rbac_is_a_403() -> None:
    assert ("RBAC", 403) in _core.response_flags()
