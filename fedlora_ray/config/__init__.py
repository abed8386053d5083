"""One tree of frozen dataclasses for a run: YAML plus ``--set a.b=value`` overrides, validated.

Every field carries help text and, where it has one, its allowed range in ``metadata``; the
loader rejects unknown keys, wrong types and out-of-range values with a message that names the
field, the value and what is allowed, before any work starts.

Plain data at the bottom of the package: it imports only the standard library and PyYAML. The
rules that need a component (its name in a registry, its own fields) are
``fedlora_ray.components``', which loads a run's config through this package.
"""

from fedlora_ray.config.fields import (
    AlgorithmConfig,
    ChannelConfig,
    CheckpointConfig,
    CompressionConfig,
    ConfigError,
    ControllerConfig,
    DataConfig,
    FederationConfig,
    LogConfig,
    ModelConfig,
    PrivacyConfig,
    RunConfig,
    RuntimeConfig,
    SamplingConfig,
    fld,
)
from fedlora_ray.config.loading import (
    allowed_values,
    help_table,
    load_config,
    parse_override,
    replace,
    validate,
    validate_ratios,
    yaml_error_text,
)

__all__ = [
    "AlgorithmConfig",
    "ChannelConfig",
    "CheckpointConfig",
    "PrivacyConfig",
    "CompressionConfig",
    "ConfigError",
    "ControllerConfig",
    "DataConfig",
    "FederationConfig",
    "LogConfig",
    "ModelConfig",
    "RunConfig",
    "RuntimeConfig",
    "SamplingConfig",
    "allowed_values",
    "fld",
    "help_table",
    "load_config",
    "parse_override",
    "replace",
    "validate",
    "validate_ratios",
    "yaml_error_text",
]
