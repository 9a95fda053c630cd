from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from meshfast.config import ConfigError, compile_config, load_config_text
from meshfast.config.compile import CompileOptions
from meshfast.deploy import load
from meshfast.filters import registry

GOOD = """
import msgspec
from meshfast.filters import HttpFilter

class Tag(HttpFilter):
    class Config(msgspec.Struct, forbid_unknown_fields=True):
        name: str
        count: int = 1

class Raw(HttpFilter):
    pass

class NotAFilter:
    pass

class Boom(HttpFilter):
    def __init__(self, config):
        raise RuntimeError("no")
"""


def module(tmp_path: Path, text: str = GOOD) -> str:
    name = f"flt_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    return name


def write(tmp_path: Path, target: str, config: str = "{}") -> Path:
    path = tmp_path / "filters.yaml"
    path.write_text(
        "apiVersion: meshfast.io/v1alpha1\n"
        "kind: HttpFilter\n"
        "metadata:\n"
        "  name: f\n"
        "spec:\n"
        f"  python: {target}\n"
        "  config:\n"
        f"    {config}\n"
    )
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load([path])
    return [str(p) for p in e.value.problems]


def test_loads_from_the_config_folder_with_a_config_struct(tmp_path: Path) -> None:
    mod = module(tmp_path)
    config = load([write(tmp_path, f"{mod}:Tag", "name: x")])
    f = config.filters[("default", "f")]
    assert type(f).__name__ == "Tag"
    assert f.config.name == "x"
    assert f.config.count == 1
    assert f.name == "default/f"


def test_raw_config_without_a_struct(tmp_path: Path) -> None:
    mod = module(tmp_path)
    config = load([write(tmp_path, f"{mod}:Raw", "a: [1, 2]")])
    assert config.filters[("default", "f")].config == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("target", "config", "line", "path", "message"),
    [
        ("nosuchmodule_xyz:F", "{}", 6, "$.spec.python", 'cannot import module "nosuchmodule_xyz"'),
        ("{mod}:Missing", "{}", 6, "$.spec.python", 'has no class "Missing"'),
        ("{mod}:NotAFilter", "{}", 6, "$.spec.python", "is not a subclass"),
        ("{mod}:Boom", "{}", 6, "$.spec.python", "raised RuntimeError: no"),
        ("{mod}:Tag", "count: 2", 7, "$.spec.config", "missing required field `name`"),
        ("{mod}:Tag", "name: 3", 8, "$.spec.config.name", "Expected `str`, got `int`"),
        ("{mod}:Tag", "bogus: 3", 8, "$.spec.config.bogus", "unknown field `bogus`"),
        ("no-colon", "{}", 6, "$.spec.python", 'must be "module:Class"'),
    ],
)
def test_problems_at_file_and_line(
    tmp_path: Path, target: str, config: str, line: int, path: str, message: str
) -> None:
    mod = module(tmp_path)
    file = write(tmp_path, target.format(mod=mod), config)
    (problem,) = problems(file)
    assert problem.startswith(f"{file}:{line}: HttpFilter/f: {path}: ")
    assert message in problem


def test_import_error_inside_the_module(tmp_path: Path) -> None:
    mod = module(tmp_path, "raise ValueError('bad module')\n")
    (problem,) = problems(write(tmp_path, f"{mod}:F"))
    assert "importing" in problem
    assert "ValueError: bad module" in problem


def test_edited_module_is_reloaded(tmp_path: Path) -> None:
    mod = module(
        tmp_path, "from meshfast.filters import HttpFilter\nclass F(HttpFilter):\n  V = 1\n"
    )
    path = write(tmp_path, f"{mod}:F")
    assert type(load([path]).filters[("default", "f")]).V == 1
    (tmp_path / f"{mod}.py").write_text(
        "from meshfast.filters import HttpFilter\nclass F(HttpFilter):\n  V = 22\n"
    )
    assert type(load([path]).filters[("default", "f")]).V == 22


def test_spec_validation() -> None:
    text = (
        "apiVersion: meshfast.io/v1alpha1\nkind: HttpFilter\nmetadata: {name: f}\n"
        "spec:\n  python: a:B\n  failureStatus: 200\n  hosts: ['']\n  nope: 1\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config_text(text)
    msgs = sorted(f"{p.path}: {p.message}" for p in e.value.problems)
    assert msgs == [
        "$.spec.failureStatus: must be between 400 and 599, got 200",
        '$.spec.nope: unknown field "nope"',
    ]


def test_parse_target_and_folder_of(tmp_path: Path) -> None:
    assert registry.parse_target("a.b:C.D") == ("a.b", "C.D")
    assert registry.parse_target("a.b") is None
    assert registry.folder_of("<POST /config>") is None
    assert registry.folder_of(str(tmp_path)) == str(tmp_path)
    assert registry.folder_of(str(tmp_path / "x.yaml")) == str(tmp_path)


SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [reviews.default.svc.cluster.local, ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: v2
    match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews}}]
  - name: rest
    route: [{destination: {host: reviews}}]
"""


def _filters(name: str, body: str) -> str:
    return (
        f"---\napiVersion: meshfast.io/v1alpha1\nkind: HttpFilter\nmetadata: {{name: {name}}}\n"
        f"spec:\n  python: meshfast.examples.filters.add_header:AddHeader\n{body}"
    )


def test_compile_attaches_filter_refs() -> None:
    text = (
        SERVICES
        + _filters("b-all", "  failureStatus: 503\n")
        + _filters("a-reviews", "  hosts: [reviews]\n")
        + _filters("c-route", "  hosts: ['*']\n  route: v2\n")
    )
    config = load_config_text(text)
    snap = compile_config(config, CompileOptions(app="127.0.0.1:8080"))
    got = {
        (vh.name, rt.name): [(f.id, f.name, f.failure_status) for f in rt.action.filters]
        for t in snap.route_tables
        for vh in t.virtual_hosts
        for rt in vh.routes
    }
    assert got == {
        ("ratings.default.svc.cluster.local:9080", "default"): [(1, "default/b-all", 503)],
        ("reviews.default.svc.cluster.local:9080", "v2"): [
            (0, "default/a-reviews", 500),
            (1, "default/b-all", 503),
            (2, "default/c-route", 500),
        ],
        ("reviews.default.svc.cluster.local:9080", "rest"): [
            (0, "default/a-reviews", 500),
            (1, "default/b-all", 503),
        ],
        ("inbound", "default"): [(1, "default/b-all", 503)],
    }


def test_no_filters_no_change() -> None:
    config = load_config_text(SERVICES)
    snap = compile_config(config, CompileOptions())
    assert all(
        rt.action.filters == ()
        for t in snap.route_tables
        for vh in t.virtual_hosts
        for rt in vh.routes
    )
