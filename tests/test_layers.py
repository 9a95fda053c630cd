"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold: ``lint-imports``,
as CI runs it, on this checkout's package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(python_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(python_dir), str(ROOT / "python")])}
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_are_kept() -> None:
    pytest.importorskip("importlinter")
    out = _lint_imports(ROOT / "python")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout
    # The contract this layering was made for is among them.
    assert "The config pipeline imports no other part of meshfast" in out.stdout


def test_a_config_module_importing_the_filters_breaks_them(tmp_path: Path) -> None:
    """A copy of the package whose validator imports the filter registry again (inside a
    function, as it used to) fails the check."""
    pytest.importorskip("importlinter")
    import shutil

    copy = tmp_path / "python"
    shutil.copytree(
        ROOT / "python" / "meshfast",
        copy / "meshfast",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    validate = copy / "meshfast" / "config" / "validate.py"
    validate.write_text(
        validate.read_text()
        + "\n\ndef _filters() -> object:\n    from meshfast.filters import registry\n\n"
        "    return registry\n"
    )
    out = _lint_imports(copy)
    assert out.returncode != 0
    assert "meshfast.config.validate -> meshfast.filters.registry" in out.stdout
