from __future__ import annotations

from pathlib import Path

import pytest

from meshfast.config import ConfigError, load_config, load_config_text
from meshfast.config.load import Document, child, parent, parse_text, read_paths
from meshfast.config.resources import VirtualService

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
spec:
  hosts: [{name}]
  http:
  - route:
    - destination:
        host: {name}
"""


def test_child_and_parent_paths() -> None:
    assert child("$", "spec") == "$.spec"
    assert child("$.spec.http", 0) == "$.spec.http[0]"
    assert child("$.m", "end-user") == "$.m.end-user"
    assert child("$.labels", "kubernetes.io/name") == '$.labels["kubernetes.io/name"]'
    assert parent('$.labels["kubernetes.io/name"]') == "$.labels"
    assert parent("$.spec.http[0]") == "$.spec.http"
    assert parent("$.spec") == "$"
    assert parent("$") is None


def test_line_map_and_fallback() -> None:
    docs, errors = parse_text(VS.format(name="reviews"), "x.yaml")
    assert errors == []
    [doc] = docs
    assert doc.line == 1
    assert doc.lines["$.kind"] == 2
    assert doc.lines["$.spec.http[0]"] == 8
    assert doc.lines["$.spec.http[0].route[0].destination.host"] == 10
    # Unknown paths fall back to the nearest ancestor.
    assert doc.line_of("$.spec.http[0].route[0].weight") == 9
    assert doc.line_of("$.nothing.here") == 1


def test_multi_document_skips_empty_documents() -> None:
    text = "---\n" + VS.format(name="a") + "---\n---\n# only a comment\n---\n" + VS.format(name="b")
    config = load_config_text(text)
    names = [r.metadata.name for r in config.resources]
    assert names == ["a", "b"]


def test_second_document_line_numbers() -> None:
    text = VS.format(name="a") + "---\n" + VS.format(name="b").replace("hosts: [b]", "hosts: 7")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="m.yaml")
    [p] = info.value.problems
    assert (p.file, p.line, p.kind, p.name) == ("m.yaml", 17, "VirtualService", "b")
    assert p.path == "$.spec.hosts"


def test_kind_list_expands_items_with_their_own_lines() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: a}
  spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: b}
  spec: {hosts: [b], bogus: 1, http: [{route: [{destination: {host: b}}]}]}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="l.yaml")
    [p] = info.value.problems
    assert (p.line, p.name, p.path, p.message) == (11, "b", "$.spec.bogus", 'unknown field "bogus"')
    config = load_config_text(text.replace("bogus: 1, ", ""))
    assert [r.metadata.name for r in config.resources] == ["a", "b"]


def test_yaml_syntax_error_has_its_line() -> None:
    text = VS.format(name="a") + "---\nkind: [unclosed\nmetadata: {name: x}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="bad.yaml")
    [p] = info.value.problems
    assert p.file == "bad.yaml"
    assert p.line == 13
    assert (p.kind, p.name, p.path) == ("-", "-", "$")
    assert p.message.startswith("YAML syntax error")


def test_colons_in_flow_scalars_read_as_kubernetes_reads_them() -> None:
    # libyaml rejects `001:db8::` in a flow sequence, PyYAML reads it as a mapping;
    # Kubernetes (go-yaml) reads a string, and so does meshfast.
    text = "a: 1\n---\nb: [1.2.3.4, 001:db8::, 'x:y', c:d]\nc: {k: v}\nd:\n- 2001:db8::1\n"
    docs, errors = parse_text(text, "s.yaml")
    assert errors == []
    assert [d.data for d in docs] == [
        {"a": 1},
        {"b": ["1.2.3.4", "001:db8::", "x:y", "c:d"], "c": {"k": "v"}, "d": ["2001:db8::1"]},
    ]
    assert (docs[1].line_of("$.b[1]"), docs[1].line_of("$.d[0]")) == (3, 6)
    # A real syntax error after such a scalar is still one, at its line.
    docs, errors = parse_text("b: [001:db8::]\nc: [x\n", "s.yaml")
    assert docs == []
    assert [(e.line, e.message.startswith("YAML syntax error")) for e in errors] == [(3, True)]


def test_duplicate_mapping_key() -> None:
    text = VS.format(name="a").replace("metadata:\n  name: a", "metadata:\n  name: a\n  name: b")
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    [p] = info.value.problems
    assert (p.line, p.path, p.message) == (5, "$.metadata.name", 'duplicate key "name"')


def test_folder_reads_yaml_and_yml_sorted_not_recursive(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(VS.format(name="b"))
    (tmp_path / "a.yml").write_text(VS.format(name="a"))
    (tmp_path / "c.txt").write_text("not yaml: [")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(VS.format(name="d"))
    config = load_config([tmp_path])
    assert [r.metadata.name for r in config.resources] == ["a", "b"]
    docs, errors, files = read_paths([tmp_path])
    assert errors == []
    assert [Path(f).name for f in files] == [tmp_path.name, "a.yml", "b.yaml"]
    assert all(isinstance(d, Document) for d in docs)


def test_file_and_folder_together(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.yaml").write_text(VS.format(name="x"))
    single = tmp_path / "one.yaml"
    single.write_text(VS.format(name="y"))
    config = load_config([single, str(tmp_path / "dir")])
    assert [r.metadata.name for r in config.resources] == ["y", "x"]
    assert all(isinstance(r, VirtualService) for r in config.resources)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"kind: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config([tmp_path / "nope.yaml", bad])
    first, second = info.value.problems
    assert first.file.endswith("nope.yaml")
    assert first.message == "no such file or directory"
    assert second.file.endswith("latin1.yaml")
    assert second.message.startswith("cannot read")


def test_namespace_defaults_to_option() -> None:
    text = (
        VS.format(name="a")
        + "---\n"
        + VS.format(name="b").replace("name: b\n", "name: b\n  namespace: prod\n", 1)
    )
    config = load_config_text(text, namespace="staging")
    assert [r.metadata.namespace for r in config.resources] == ["staging", "prod"]


def test_problems_of_all_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VS.format(name="a").replace("hosts: [a]", "hosts: 1"))
    (tmp_path / "b.yaml").write_text("a: [\n")
    (tmp_path / "c.yaml").write_text(VS.format(name="c").replace("http:", "tcpx:"))
    with pytest.raises(ConfigError) as info:
        load_config([tmp_path])
    files = [Path(p.file).name for p in info.value.problems]
    assert files == ["a.yaml", "b.yaml", "c.yaml"]
    assert str(info.value).count("\n") == 2
