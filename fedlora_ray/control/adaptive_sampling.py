"""adaptive: sampling probabilities q_i and sketch ratios s_i chosen once, in ``init``, to minimise
rounds x E[round time] (the solver of ``control.adaptive``); then each round the band is split
so that the participants finish together, as ``finish`` does [docs/algorithms.md §7]."""

from __future__ import annotations

import numpy as np

from fedlora_ray.config import ConfigError, RunConfig, validate_ratios
from fedlora_ray.control import adaptive
from fedlora_ray.control.base import components_for, register_controller
from fedlora_ray.control.finish import Finish


@register_controller
class Adaptive(Finish):
    name = "adaptive"

    @classmethod
    def validate(cls, cfg: RunConfig) -> None:
        if cfg.algorithm.kind != "fslora":
            raise ConfigError(
                "config field 'controller.kind' = 'adaptive': it chooses sketch ratios, so "
                f"algorithm.kind must be 'fslora', not {cfg.algorithm.kind!r}"
            )
        if cfg.sampling.kind != "independent":
            raise ConfigError(
                "config field 'controller.kind' = 'adaptive': it chooses sampling probabilities, so "
                f"sampling.kind must be 'independent', not {cfg.sampling.kind!r}"
            )
        validate_ratios("controller.sketch_options", cfg.controller.sketch_options, cfg.model.lora_rank)

    def client_plan(
        self, problem: adaptive.AdaptiveProblem, ratios: np.ndarray
    ) -> tuple[adaptive.AdaptivePlan, np.ndarray]:  # noqa: E501
        plan = adaptive.solve(problem)
        return plan, np.array([components_for(x, self.rank) for x in plan.s])
