"""The config pipeline: Istio YAML → validated resources → the IR the core is told."""

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
