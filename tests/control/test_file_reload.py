"""``Sidecar.reload_files`` (SIGHUP, ``--watch``): the outcome is logged, a refusal names
every problem at FILE:LINE, and no failure of a reload ends the sidecar."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from meshfast.control.sidecar import Sidecar, SidecarSettings

from .test_admin import GOOD_YAML, SNAPSHOT, FakeCore, FakeSnapshotError


async def serving(nursery: trio.Nursery, path: Path) -> Sidecar:
    settings = SidecarSettings(admin="127.0.0.1:0", outbound="127.0.0.1:0", sources=(str(path),))
    sidecar = Sidecar(FakeCore(), SNAPSHOT, settings, core_errors=(FakeSnapshotError,))
    await nursery.start(sidecar.serve)
    return sidecar


async def test_an_edit_is_applied_and_logged(
    tmp_path: Path, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD_YAML)
    sidecar = await serving(nursery, path)
    assert await sidecar.reload_files("SIGHUP") == 2
    assert "meshfast: SIGHUP: version 2 serving (was 1)" in capsys.readouterr().err
    assert sidecar.sources == (str(path),)
    assert await sidecar.reload_files("SIGHUP") == 2  # the same file again: unchanged
    assert "SIGHUP: config unchanged, version 2 keeps serving" in capsys.readouterr().err
    sidecar.request_shutdown()


async def test_a_broken_edit_is_refused_with_file_and_line(
    tmp_path: Path, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD_YAML.replace("resolution: STATIC", "resolution: SOMETIMES"))
    line = 1 + path.read_text().splitlines().index("  resolution: SOMETIMES")
    sidecar = await serving(nursery, path)
    assert await sidecar.reload_files("watch") is None
    err = capsys.readouterr().err
    assert "meshfast: watch: config refused, version 1 keeps serving; problems:" in err
    assert f"{path}:{line}:" in err, err
    assert sidecar.version == 1
    assert sidecar.reloader.counts()["refused"] == 1
    sidecar.request_shutdown()


async def test_no_failure_of_a_reload_ends_the_sidecar(
    tmp_path: Path,
    nursery: trio.Nursery,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sidecar = await serving(nursery, tmp_path / "gone.yaml")
    assert await sidecar.reload_files("watch") is None  # the file is not there
    assert "version 1 keeps serving" in capsys.readouterr().err

    async def bug(paths: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(sidecar.reloader, "apply_files", bug)
    assert await sidecar.reload_files("SIGHUP") is None
    err = capsys.readouterr().err
    assert "SIGHUP: failed (RuntimeError: a bug); version 1 keeps serving" in err
    assert sidecar.state == "ready"
    sidecar.request_shutdown()
