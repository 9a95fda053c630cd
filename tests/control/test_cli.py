"""The command line: parsing, refusals of what is not built yet, ``validate``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from meshfast.cli import NOT_IMPLEMENTED_COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"

BROKEN = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
      weight: lots
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  subsets:
  - name: v1
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trace-sampling", "10"], "--trace-sampling needs --zipkin or --otlp"),
        (
            ["--zipkin", "https://127.0.0.1:9411"],
            "--zipkin: 'https://127.0.0.1:9411': only http://",
        ),
        (["--otlp", "127.0.0.1:4318"], "--otlp: '127.0.0.1:4318': only http://"),
        (["--zipkin", "http://c", "--trace-sampling", "101"], "a percentage from 0 to 100"),
        (["--otlp", "http://c", "--trace-sampling", "x"], "not a number: 'x'"),
    ],
)
def test_run_refuses_bad_tracing_flags(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_exit(["run", "-c", "does-not-matter.yaml", *argv]) == 2
    assert message in capsys.readouterr().err


def test_run_certs_without_an_identity_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_exit(["run", "-c", "x.yaml", "--certs", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"--certs {tmp_path}: missing cert-chain.pem, key.pem, root-cert.pem" in err


def main_exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("command", sorted(NOT_IMPLEMENTED_COMMANDS))
def test_commands_not_implemented_yet_exit_2(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "-c", "x.yaml", "--request", "GET http://reviews/"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"meshfast: `{command}` is not implemented yet (see the issues)" in err


def test_run_defaults() -> None:
    args = build_parser().parse_args(["run", "-c", "a.yaml", "-c", "b", "c"])
    assert args.paths == ["a.yaml", "b", "c"]
    assert args.admin == "127.0.0.1:15000"
    assert args.outbound == "127.0.0.1:15001"
    assert args.inbound == "127.0.0.1:15006"
    assert args.app is None
    assert args.workers == 0
    assert args.namespace == "default"
    assert args.drain_timeout == 5.0


def test_run_gateway_flags() -> None:
    args = build_parser().parse_args(["run", "-c", "a.yaml"])
    assert (args.gateway, args.gateway_bind) == (False, "0.0.0.0")
    args = build_parser().parse_args(["run", "-c", "a", "--gateway", "--gateway-bind", "::1"])
    assert (args.gateway, args.gateway_bind) == (True, "::1")


def test_run_locality_and_dns_refresh_flags() -> None:
    args = build_parser().parse_args(["run", "-c", "a.yaml"])
    assert (args.locality, args.dns_refresh) == ("", 30.0)
    argv = ["run", "-c", "a", "--locality", "us-east1/ b /c1", "--dns-refresh", "0"]
    args = build_parser().parse_args(argv)
    assert (args.locality, args.dns_refresh) == ("us-east1/b/c1", 0.0)
    assert build_parser().parse_args(["run", "-c", "a", "--locality", "eu"]).locality == "eu"


def test_run_authorization_flags() -> None:
    from meshfast.control.settings import SidecarSettings, options_for

    args = build_parser().parse_args(["run", "-c", "a.yaml"])
    assert (args.root_namespace, args.trust_domain, args.trust_domain_aliases) == (
        "istio-system",
        "cluster.local",
        (),
    )
    argv = ["run", "-c", "a", "--root-namespace", "mesh", "--trust-domain", "td1"]
    args = build_parser().parse_args([*argv, "--trust-domain-aliases", "old, older,"])
    assert (args.root_namespace, args.trust_domain, args.trust_domain_aliases) == (
        "mesh",
        "td1",
        ("old", "older"),
    )
    settings = SidecarSettings(
        root_namespace="mesh", trust_domain="td1", trust_domain_aliases=("old",)
    )
    options = options_for(settings, 1)
    assert (options.root_namespace, options.trust_domain, options.trust_domain_aliases) == (
        "mesh",
        "td1",
        ("old",),
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],  # -c is required
        ["run", "-c", "a.yaml", "--admin", "nope"],
        ["run", "-c", "a.yaml", "--workers", "-1"],
        ["run", "-c", "a.yaml", "--gateway-bind", "nope"],
        ["run", "-c", "a.yaml", "--locality", "a/b/c/d"],
        ["run", "-c", "a.yaml", "--locality", "a//c"],
        ["run", "-c", "a.yaml", "--dns-refresh", "-1"],
        ["run", "-c", "a.yaml", "--bogus"],
        ["echo"],  # --listen is required
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: meshfast" in capsys.readouterr().err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", str(DEMO), "--namespace", "demo"]) == 0
    assert capsys.readouterr().out == "ok: 3 resources\n"


def test_validate_broken_prints_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main(["validate", "-c", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2
    pattern = re.compile(re.escape(str(path)) + r":(\d+): (\w+)/([\w-]+): (\$[^:]*): .+")
    for line in lines:
        assert pattern.fullmatch(line), line
    kinds = {pattern.fullmatch(line).group(2) for line in lines}  # type: ignore[union-attr]
    assert kinds == {"VirtualService", "DestinationRule"}
    weight = next(line for line in lines if "weight" in line)
    assert pattern.fullmatch(weight).group(1) == "11"  # type: ignore[union-attr]


def test_validate_loads_filter_classes_and_reports_them_at_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The deploy path loads the classes (the config pipeline alone only checks the syntax).
    path = tmp_path / "filters.yaml"
    path.write_text(
        "apiVersion: meshfast.io/v1alpha1\nkind: HttpFilter\nmetadata: {name: f}\n"
        "spec:\n  python: meshfast.examples.filters.add_header:Nope\n"
    )
    assert main(["validate", "-c", str(path)]) == 1
    assert capsys.readouterr().out == (
        f"{path}:5: HttpFilter/f: $.spec.python: module"
        ' "meshfast.examples.filters.add_header" has no class "Nope"\n'
    )


def test_validate_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-c", str(tmp_path / "nope.yaml")]) == 1
    captured = capsys.readouterr()
    assert "nope.yaml" in captured.out + captured.err


def test_run_with_a_broken_config_exits_1_with_problems_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main(["run", "-c", str(path), "--admin", "127.0.0.1:0"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}:11: VirtualService/reviews:" in captured.err


def test_python_dash_m_and_cheap_imports() -> None:
    code = (
        "import sys, meshfast, meshfast.cli, meshfast.errors, meshfast.control; "
        "heavy = {'trio', 'meshfast._core', 'yaml', 'msgspec', 'h11'} & set(sys.modules); "
        "assert not heavy, heavy; print(meshfast.__version__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True
    )
    version = out.stdout.strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version)
    out = subprocess.run(
        [sys.executable, "-m", "meshfast", "--version"],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"meshfast {version}"


def test_errors_module_re_exports_config_errors() -> None:
    from meshfast import config, errors

    assert errors.ConfigError is config.ConfigError
    assert errors.Problem is config.Problem
    with pytest.raises(AttributeError):
        errors.Nope  # type: ignore[attr-defined]  # noqa: B018
