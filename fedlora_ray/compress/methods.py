"""The built-in ``compression.method`` registry entries: ILoRA (none), SOFT and the baselines."""

from __future__ import annotations

from fedlora_ray.compress import fedlodrop, flasc, lowest_ranks, rlora, soft
from fedlora_ray.compress.base import Dense, PerModule, register_compressor

register_compressor("none", Dense())
register_compressor("soft", PerModule(soft.select, orthogonal=True))
register_compressor("flasc", flasc.Flasc())
register_compressor("rlora", PerModule(rlora.select))
register_compressor("hetlora", PerModule(lowest_ranks.select))
register_compressor("fedlodrop", PerModule(fedlodrop.select, whole_components=True))
