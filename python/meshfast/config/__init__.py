"""The config pipeline: Istio YAML → validated resources → the IR the core is told.

The names below are imported on first use (PEP 562): ``meshfast.config.ir`` alone (what a
sidecar serving a cached snapshot needs) does not load the resource types, the validators
or the compiler.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshfast.config.compile import CompileOptions, compile_config
    from meshfast.config.model import Config, ConfigError, Problem
    from meshfast.config.resources import Resource
    from meshfast.config.validate import load_config, load_config_text

__all__ = [
    "CompileOptions",
    "Config",
    "ConfigError",
    "Problem",
    "Resource",
    "compile_config",
    "load_config",
    "load_config_text",
]

_HOMES = {
    "CompileOptions": "compile",
    "compile_config": "compile",
    "Config": "model",
    "ConfigError": "model",
    "Problem": "model",
    "Resource": "resources",
    "load_config": "validate",
    "load_config_text": "validate",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"meshfast.config.{home}"), name)
    globals()[name] = value
    return value
