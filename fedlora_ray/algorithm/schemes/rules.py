"""What the built-in schemes ask of a config, read from the config alone (no torch): config
validation runs these through the registry's light entries, and the scheme classes' own
``validate`` classmethods run the same functions, so a subclass inherits its parent's rules
[docs/algorithms.md §6]."""

from __future__ import annotations

from fedlora_ray.config import ConfigError, RunConfig, validate_ratios


def any_compressor(cfg: RunConfig) -> None:
    """FedAvg: every uplink compressor goes."""


def sends_its_own_update(cfg: RunConfig) -> None:
    """A scheme other than FedAvg sends an update of its own making, which the sparsifiers of
    ``compression.method`` do not apply to."""
    if cfg.compression.method != "none":
        raise ConfigError(
            f"config field 'compression.method' = {cfg.compression.method!r}: the sparsifiers "
            f"apply to algorithm.kind='fedavg' only; algorithm.kind={cfg.algorithm.kind!r} sends its own "
            "update, so set compression.method='none'"
        )
    if cfg.compression.target != "update":
        raise ConfigError(
            f"config field 'compression.target' = {cfg.compression.target!r}: sending the sparsified "
            f"factors applies to algorithm.kind='fedavg' only; algorithm.kind={cfg.algorithm.kind!r} "
            "sends its own update, so leave compression.target='update'"
        )


def draws_client_ratios(cfg: RunConfig) -> None:
    """A scheme whose clients train k_i = s_i r components (FSLoRA, HetLoRA): its own update,
    and every ratio of ``algorithm.client_ratios`` keeps at least one component."""
    sends_its_own_update(cfg)
    validate_ratios("algorithm.client_ratios", cfg.algorithm.client_ratios, cfg.model.lora_rank)
