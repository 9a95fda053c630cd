"""Loading filters: ``module:Class`` → an instance configured from ``spec.config``.

Modules are imported from ``sys.path`` (PYTHONPATH) and from the folder of the config file
that names them (appended to ``sys.path``).  A module this registry imported is imported
again (``importlib.reload``) when its file changed since, so a config reload picks up edited
filter code; modules it depends on are not reloaded.

Problems are returned as ``(JSON path, message)`` pairs (``$.spec.python``,
``$.spec.config.rate``...) for the config validator to place at their file and line:
:func:`load_resource` is the ``FilterLoader`` the deploy path gives ``load_config``, so the
config pipeline validates filters without importing this package.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

import msgspec

from meshfast.config.http_filter import Issue, parse_target, ref_name
from meshfast.filters.api import MAX_BODY_LIMIT as MAX_BODY
from meshfast.filters.api import HttpFilter

if TYPE_CHECKING:
    from meshfast.config import resources as r
    from meshfast.config.model import Config

__all__ = ["Issue", "folder_of", "load", "load_missing", "load_resource", "parse_target"]

_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]*)`$")

_lock = threading.Lock()
_stamps: dict[str, tuple[int, int]] = {}  # module -> (mtime_ns, size) of its file when imported


def folder_of(source: str) -> str | None:
    """The folder modules named by ``source`` (a config file or folder) are imported from;
    None for texts that were not read from files (``<POST /config>``)."""
    if not source or source.startswith("<"):
        return None
    path = os.path.abspath(source)
    return path if os.path.isdir(path) else os.path.dirname(path)


def _stamp(module: ModuleType) -> tuple[int, int] | None:
    file = getattr(module, "__file__", None)
    if not file:
        return None
    try:
        st = os.stat(file)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _import(name: str, folder: str | None) -> ModuleType:
    with _lock:
        if folder is not None and folder not in sys.path:
            sys.path.append(folder)
        importlib.invalidate_caches()
        module = sys.modules.get(name)
        if module is None:
            module = importlib.import_module(name)
            stamp = _stamp(module)
            if stamp is not None:
                _stamps[name] = stamp
        elif name in _stamps:
            stamp = _stamp(module)
            if stamp is not None and stamp != _stamps[name]:
                module = importlib.reload(module)
                _stamps[name] = stamp
        return module


def _config_issue(exc: msgspec.ValidationError) -> Issue:
    text = str(exc)
    path = ""
    m = _AT.match(text)
    if m:
        text, path = m.group("msg"), m.group("path")
    m = _UNKNOWN.match(text)
    if m:
        path = f"{path}.{m.group('field')}"
    return f"$.spec.config{path}", text


def load(
    target: str, config: Mapping[str, Any] | None, *, folder: str | None, name: str
) -> tuple[HttpFilter | None, list[Issue]]:
    """Imports ``target`` (``module:Class``), validates ``config`` against the class's
    ``Config`` Struct (if it has one) and constructs the filter as ``Class(config)``.

    Returns the filter (its ``name`` set to ``name``), or None and the problems.
    """
    parsed = parse_target(target)
    if parsed is None:
        return None, [("$.spec.python", f'"{target}" must be "module:Class"')]
    module_name, attr = parsed
    try:
        module = _import(module_name, folder)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            where = "PYTHONPATH" + (f" or {folder}" if folder else "")
            return None, [("$.spec.python", f'cannot import module "{module_name}" from {where}')]
        return None, [("$.spec.python", f'importing "{module_name}" failed: {exc}')]
    except Exception as exc:
        return None, [
            ("$.spec.python", f'importing "{module_name}" failed: {type(exc).__name__}: {exc}')
        ]
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None, [("$.spec.python", f'module "{module_name}" has no class "{attr}"')]
    if not isinstance(obj, type) or not issubclass(obj, HttpFilter):
        return None, [
            ("$.spec.python", f'"{target}" is not a subclass of meshfast.filters.HttpFilter')
        ]
    for attr_name in ("request_body_limit", "response_body_limit"):
        limit = getattr(obj, attr_name, 0)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_BODY:
            return None, [
                (
                    "$.spec.python",
                    f"{attr}.{attr_name} must be an int from 0 to {MAX_BODY}, got {limit!r}",
                )
            ]
    raw = dict(config or {})
    value: Any = raw
    config_type = getattr(obj, "Config", None)
    if isinstance(config_type, type) and issubclass(config_type, msgspec.Struct):
        try:
            value = msgspec.convert(raw, config_type)
        except msgspec.ValidationError as exc:
            return None, [_config_issue(exc)]
    try:
        instance = obj(value)
    except Exception as exc:
        return None, [("$.spec.python", f"{attr}(config) raised {type(exc).__name__}: {exc}")]
    instance.name = name
    return instance, []


def load_resource(resource: r.HttpFilter, source: str, /) -> tuple[HttpFilter | None, list[Issue]]:
    """:func:`load` for an ``HttpFilter`` resource read from ``source`` (a config file, folder
    or ``<text>`` name): the config pipeline's ``FilterLoader``."""
    return load(
        resource.spec.python,
        resource.spec.config,
        folder=folder_of(source),
        name=ref_name(resource),
    )


def load_missing(config: Config) -> Config:
    """``config`` with an instance for every HttpFilter resource: those it lacks (a config
    loaded without a filter loader, or built by hand) are loaded here.  Their problems raise
    ``ConfigError`` at line 1 of their source (the documents' lines are not known here)."""
    from meshfast.config.http_filter import numbered
    from meshfast.config.model import ConfigError, Problem

    built: dict[tuple[str, str], HttpFilter] = {}
    problems: list[Problem] = []
    for _, res in numbered(config.resources):
        key = (res.metadata.namespace, res.metadata.name)
        if key in config.filters:
            continue
        source = config.sources.get(("HttpFilter", *key), "<config>")
        instance, issues = load_resource(res, source)
        problems.extend(Problem(source, 1, "HttpFilter", key[1], p, m) for p, m in issues)
        if instance is not None:
            built[key] = instance
    if problems:
        raise ConfigError(problems)
    return replace(config, filters={**config.filters, **built}) if built else config
