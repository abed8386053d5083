"""The built-in ``compression.method`` registry entries: ILoRA (none), SOFT and the baselines
[docs/algorithms.md §2-3].

Each entry is light: whether the method is dense, and how to build it. The selectors and the
compressor classes import torch, so each is imported when a scheme first builds its method,
never when a config is checked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedlora_ray.compress.registry import COMPRESSORS, CompressorSpec

if TYPE_CHECKING:
    from fedlora_ray.compress.base import Compressor


@functools.cache  # one compressor object per method and process, as when the registry held them
def _build(method: str) -> Compressor:
    from fedlora_ray.compress import fedlodrop, flasc, lowest_ranks, rlora, soft
    from fedlora_ray.compress.base import Dense, PerModule

    makers: dict[str, Callable[[], Compressor]] = {
        "none": Dense,
        # SOFT: the orthogonal regulariser of eq. (7), and the error feedback of §III-C
        "soft": lambda: PerModule(soft.select, orthogonal=True, paper_error_feedback=True),
        "flasc": flasc.Flasc,
        "rlora": lambda: PerModule(rlora.select),
        "hetlora": lambda: PerModule(lowest_ranks.select),
        "fedlodrop": lambda: PerModule(fedlodrop.select, whole_components=True),
    }
    return makers[method]()


COMPRESSORS.update(
    {
        "none": CompressorSpec(dense=True, build=functools.partial(_build, "none")),
        **{
            method: CompressorSpec(dense=False, build=functools.partial(_build, method))
            for method in ("soft", "rlora", "hetlora", "fedlodrop")
        },
        # FLASC's global scope ranks all modules at once with the summed budget [docs/algorithms.md §3]
        "flasc": CompressorSpec(
            dense=False, build=functools.partial(_build, "flasc"), pooled=lambda c: c.flasc_scope == "global"
        ),
    }
)
