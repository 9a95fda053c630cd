"""The pipeline's public value types: problems, the error carrying them, the loaded config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from meshfast.config.resources import Resource
from meshfast.config.unsupported import Severity, Unsupported


@dataclass(frozen=True)
class Problem:
    """One validation problem, pointing at a file, line and field path.

    ``severity``: ``error`` (invalid, for Istio too), ``unsupported`` (valid Istio that
    meshfast does not serve yet: its message is an :class:`Unsupported`), or ``warning``
    (served, but likely not what was meant: the cross-resource checks of ``istioctl
    analyze``'s kind).  Left empty, it is read off the message.
    """

    file: str
    line: int
    kind: str
    name: str
    path: str
    message: str
    severity: Severity | Literal[""] = ""

    def __post_init__(self) -> None:
        if not self.severity:
            unsupported = isinstance(self.message, Unsupported)
            object.__setattr__(self, "severity", "unsupported" if unsupported else "error")

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " + ("warning: " if self.severity == "warning" else "")
        return f"{where}{self.kind}/{self.name}: {self.path}: {self.message}"


class ConfigError(Exception):
    """The config is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True)
class Config:
    """Decoded, validated resources, in the order they were read.

    ``sources`` names the file each resource was read from, by ``(kind, namespace, name)``
    (``<body>``-style names for texts that were not files); relative paths in a resource (a
    Gateway's certificates) are relative to that file's folder.

    ``filters`` holds the ``meshfast.filters.HttpFilter`` instances of the HttpFilter
    resources, by ``(namespace, name)``: built by the ``load_filter`` given to ``load_config``
    (``meshfast.deploy.load`` gives the filter registry's), or added by the caller (the
    embedding API).  Empty when the config was loaded without a filter loader.
    """

    resources: list[Resource] = field(default_factory=list)
    sources: dict[tuple[str, str, str], str] = field(default_factory=dict)
    filters: dict[tuple[str, str], Any] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
