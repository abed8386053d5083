"""Pilot calibration of the bound's singular-value profile [ours, beyond the seed; docs/algorithms.md §5].

A few centralised AdamW steps at rank R on a random sample of the training data; then, per
LoRA module, the singular values of B A (rank <= R), each normalised by its largest, averaged
over modules. sigma_beta is the least-squares slope of -log sigma_j against log j over the
non-negligible values. Only the profile is estimated: the constants c_r, c_s, c_c stay as
configured, since a few steps say nothing reliable about them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedlora_ray.config import RunConfig, replace


def pilot_calibration(cfg: RunConfig) -> dict[str, Any]:
    from fedlora_ray.lora.adapter import lora_parameters
    from fedlora_ray.tasks import load_splits, model_family

    rank = cfg.controller.max_rank
    pilot = replace(cfg, f"model.lora_rank={rank}", f"model.lora_alpha={2 * rank}")
    train, _ = load_splits(pilot.data)
    family = model_family(pilot.model.name)
    data = family.prepare(pilot.model, train)
    model = family.build(pilot.model, len(train.label_names), pilot.federation.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=pilot.federation.lr, weight_decay=pilot.federation.weight_decay)
    gen = torch.Generator().manual_seed(pilot.federation.seed)
    model.train()
    for _ in range(cfg.controller.calibrate_steps):
        idx = torch.randint(len(data), (pilot.federation.batch_size,), generator=gen)
        inputs, y = data.batch(idx, torch.device("cpu"))
        loss = F.cross_entropy(model(*inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    profiles = []
    with torch.no_grad():
        for b, a in lora_parameters(model).values():
            s = torch.linalg.svdvals(b.flatten(1).double() @ a.flatten(1).double())[:rank]
            if float(s[0]) > 0:
                profiles.append((s / s[0]).numpy())
    profile = np.mean(profiles, axis=0)
    j = np.arange(1, rank + 1)
    keep = profile > 1e-6
    slope = np.polyfit(np.log(j[keep]), np.log(profile[keep]), 1)[0]
    return {
        "max_rank": rank,
        "steps": cfg.controller.calibrate_steps,
        "final_pilot_loss": float(loss.detach()),
        "sigma_profile": profile.tolist(),
        "sigma_beta": float(max(1e-3, -slope)),
    }
