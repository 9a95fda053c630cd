"""Reading YAML: files, folders and request bodies into documents that remember their lines.

Every document is plain Python data (dicts, lists, scalars) plus a map from JSON path
(``$.spec.http[0].route[1].weight``) to the 1-based line where that value's key (or list
item) is written, so validation can name the exact line of a problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshfast.config.files import config_files

try:
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader

_BLANKZ = "\0 \t\r\n\x85\u2028\u2029"


class _KubeLoader(yaml.SafeLoader):
    """PyYAML's loader, reading a ``:`` inside a plain scalar the way Kubernetes does.

    Kubernetes (sigs.k8s.io/yaml, go-yaml) ends a plain scalar at a ``:`` only when a blank
    follows, in flow collections too: ``[1.2.3.4, 001:db8::]`` is two strings.  libyaml
    rejects it ("found unexpected ':'"), PyYAML reads ``{001:db8:: null}``.  Only texts that
    libyaml rejects that way are read again with this (pure Python, slower) loader.
    """

    def scan_plain(self) -> Any:
        # PyYAML's Scanner.scan_plain, but for the one condition that ends the scalar at ':'.
        chunks: list[str] = []
        start_mark = self.get_mark()
        end_mark = start_mark
        indent = self.indent + 1
        spaces: list[str] = []
        while self.peek() != "#":
            length = 0
            while True:
                ch = self.peek(length)
                if (
                    ch in _BLANKZ
                    or (ch == ":" and self.peek(length + 1) in _BLANKZ)
                    or (self.flow_level and ch in ",?[]{}")
                ):
                    break
                length += 1
            if length == 0:
                break
            self.allow_simple_key = False
            chunks.extend(spaces)
            chunks.append(self.prefix(length))
            self.forward(length)
            end_mark = self.get_mark()
            spaces = self.scan_plain_spaces(indent, start_mark) or []
            if not spaces or self.peek() == "#" or (not self.flow_level and self.column < indent):
                break
        return yaml.tokens.ScalarToken("".join(chunks), True, start_mark, end_mark)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_LAST = re.compile(r'(\[\d+\]|\["(?:[^"\\]|\\.)*"\]|\.[^.\[]*)$')


def child(path: str, key: object) -> str:
    """The JSON path of ``key`` (a mapping key or a list index) under ``path``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = str(key)
    if _IDENT.match(text):
        return f"{path}.{text}"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{escaped}"]'


def parent(path: str) -> str | None:
    """The enclosing path, or None for ``$``."""
    m = _LAST.search(path)
    if m is None or m.start() == 0:
        return None
    return path[: m.start()]


@dataclass(frozen=True)
class LoadError:
    """A file that could not be read or parsed."""

    file: str
    line: int
    message: str


@dataclass
class Document:
    """One YAML document (or one item of a ``kind: List``)."""

    file: str
    line: int
    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    # (path, message) problems seen while reading, such as duplicate mapping keys.
    problems: list[tuple[str, str]] = field(default_factory=list)

    def line_of(self, path: str) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        p: str | None = path
        while p is not None:
            line = self.lines.get(p)
            if line is not None:
                return line
            p = parent(p)
        return self.line


def _index(node: yaml.Node, path: str, doc: Document) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            if key == "<<":
                continue
            p = child(path, key)
            if key in seen:
                doc.problems.append((p, f'duplicate key "{key}"'))
            seen.add(key)
            doc.lines[p] = key_node.start_mark.line + 1  # a repeated key wins, as in PyYAML
            _index(value_node, p, doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            p = child(path, i)
            doc.lines.setdefault(p, item.start_mark.line + 1)
            _index(item, p, doc)


def _item_node(node: yaml.Node, index: int) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if (
            key_node.value == "items"
            and isinstance(value_node, yaml.SequenceNode)
            and index < len(value_node.value)
        ):
            item: yaml.Node = value_node.value[index]
            return item
    return None


def _documents(file: str, node: yaml.Node, data: Any) -> Iterator[Document]:
    if data is None:
        return
    if (
        isinstance(data, dict)
        and data.get("kind") == "List"
        and isinstance(data.get("items"), list)
    ):
        for i, item in enumerate(data["items"]):
            if item is None:
                continue
            item_node = _item_node(node, i)
            if item_node is None:  # pragma: no cover - items always come from the node
                continue
            doc = Document(file=file, line=item_node.start_mark.line + 1, data=item)
            doc.lines["$"] = doc.line
            _index(item_node, "$", doc)
            yield doc
        return
    doc = Document(file=file, line=node.start_mark.line + 1, data=data)
    doc.lines["$"] = doc.line
    _index(node, "$", doc)
    yield doc


def parse_text(text: str, source: str) -> tuple[list[Document], list[LoadError]]:
    """Every non-empty document of a multi-document YAML text."""
    docs, errors = _parse(_Loader, text, source)
    if _Loader is not _KubeLoader and any("found unexpected ':'" in e.message for e in errors):
        docs, errors = _parse(_KubeLoader, text, source)
    return docs, errors


_DOCUMENT_START = re.compile(r"^---", re.MULTILINE)
_NOT_NEWLINE = re.compile(r"[^\n]")


def _parse(
    loader_class: type[Any], text: str, source: str
) -> tuple[list[Document], list[LoadError]]:
    """Every document of ``text``; a syntax error loses its own document only: reading goes
    on at the next ``---`` line, so the problems of the documents after it still come."""
    docs: list[Document] = []
    errors: list[LoadError] = []
    start = 0
    while True:
        resume = _parse_until_error(loader_class, text, source, docs, errors, start)
        if resume is None:
            return docs, errors
        # The rest, where it was: what came before blanked (the marks' lines and columns hold).
        text = _NOT_NEWLINE.sub(" ", text[:resume]) + text[resume:]
        start = resume + 1


def _parse_until_error(
    loader_class: type[Any],
    text: str,
    source: str,
    docs: list[Document],
    errors: list[LoadError],
    start: int,
) -> int | None:
    """Reads documents until the end (None) or a syntax error: then where the next document
    starts, from the error's line on (a ``---`` that the error ran into starts it) and not
    before ``start`` (None if none does)."""
    loader = loader_class(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node)
            docs.extend(_documents(source, node, data))
        return None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        column = f" (column {mark.column + 1})" if mark is not None else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        errors.append(LoadError(source, line, f"YAML syntax error{column}: {what}"))
        line_start = text.rfind("\n", 0, mark.index) + 1 if mark is not None else len(text)
        following = _DOCUMENT_START.search(text, max(line_start, start))
        return following.start() if following is not None else None
    except yaml.YAMLError as e:
        errors.append(LoadError(source, 1, f"YAML error: {e}"))
        return None
    finally:
        loader.dispose()


def read_paths(paths: Sequence[str | Path]) -> tuple[list[Document], list[LoadError], list[str]]:
    """The documents of every file (folders: their ``*.yaml``/``*.yml``, sorted, not recursive).

    Also returns the files in the order they were read.
    """
    docs: list[Document] = []
    errors: list[LoadError] = []
    files: list[str] = []
    for raw in paths:
        path = Path(raw)
        files.append(str(path))
        if not path.exists():
            errors.append(LoadError(str(path), 1, "no such file or directory"))
            continue
        for file in config_files(path):
            files.append(str(file))
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                errors.append(LoadError(str(file), 1, f"cannot read: {e}"))
                continue
            d, err = parse_text(text, str(file))
            docs.extend(d)
            errors.extend(err)
    return docs, errors, files
