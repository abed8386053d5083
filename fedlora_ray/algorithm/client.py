"""The client side of a round: one resident base model that trains many clients in turn.

A ``ClientTrainer`` builds the model and prepares the data once; per client it only loads
the global adapter, trains and copies the result out. Both backends use it: the serial
backend holds one, every Ray client actor holds one.
"""

from __future__ import annotations

import resource
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.algorithm.schemes import make_scheme
from fedlora_ray.algorithm.schemes.base import LocalUpdate
from fedlora_ray.config import RunConfig
from fedlora_ray.lora import Adapter, get_adapter, set_adapter
from fedlora_ray.lora.adapter import lora_parameters
from fedlora_ray.lora.rank_mask import lora_b_modules, rank_mask
from fedlora_ray.tasks import load_splits, model_family
from fedlora_ray.train import EvalResult, evaluate, train_local


def restore_outside(params: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]], global_lora: Adapter,
                    components: dict[str, torch.Tensor]) -> None:  # fmt: skip
    """Put the global values back in the entries outside the trained components. They had zero
    gradient and never entered the forward; only AdamW's decoupled weight decay moved them, so
    this is the same as having frozen them."""
    with torch.no_grad():
        for m, idx in components.items():
            b, a = (p.flatten(1) for p in params[m])  # views: a 1x1 conv's factors as matrices
            outside = torch.ones(b.shape[1], dtype=torch.bool)
            outside[idx] = False
            gb, ga = global_lora.lora[m]
            b[:, outside] = gb[:, outside].to(b.device)
            a[outside, :] = ga[outside, :].to(a.device)


class ClientTrainer:
    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu", actor_id: str = "serial"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.actor_id = actor_id
        train, test = load_splits(cfg.data)
        family = model_family(cfg.model.name)
        self.train_data = family.prepare(cfg.model, train, self.device)  # once per actor, for all clients
        self.test_data = family.prepare(cfg.model, test, self.device)
        self.model = family.build(cfg.model, len(train.label_names), cfg.federation.seed).to(self.device)
        self._initial = get_adapter(self.model)
        self._lora_params = lora_parameters(self.model)
        self._lora_pairs = list(self._lora_params.values())
        self._lora_b = lora_b_modules(self.model)
        self.scheme = make_scheme(cfg)
        if not self.scheme.trains_a:  # FFA-LoRA: A stays at its seeded init on every client
            for _, a in self._lora_pairs:
                a.requires_grad_(False)

    def describe(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "actor_id": self.actor_id,
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(self.device) if cuda else 0,
            "cuda_max_reserved_bytes": torch.cuda.max_memory_reserved(self.device) if cuda else 0,
            # peak resident memory of this process (Linux reports KiB): what sizes an actor
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

    def initial_adapter(self) -> Adapter:
        return self._initial.clone()

    def train(self, global_adapter: Adapter, tasks: list[ClientTask]) -> list[ClientReply]:
        """Each task's local round: load the global adapter, train the scheme's components, and
        let the scheme make the upload and the client's new state."""
        fed, scheme = self.cfg.federation, self.scheme
        modules = list(self._lora_params)
        replies = []
        for task in tasks:
            start = time.perf_counter()
            set_adapter(self.model, global_adapter)
            components = scheme.components(task.seed, modules, task.components)
            masked: AbstractContextManager[None] = nullcontext()
            if components is not None:
                masked = rank_mask(self._lora_b, scheme.component_scale(components))
            with masked:
                result = train_local(
                    self.model,
                    self.train_data,
                    task.indices,
                    epochs=fed.local_epochs,
                    batch_size=fed.batch_size,
                    lr=fed.lr,
                    weight_decay=fed.weight_decay,
                    seed=task.seed,
                    device=self.device,
                    lora_pairs=self._lora_pairs,
                    lambda_o=scheme.orthogonal_weight,
                    orth_scaled=self.cfg.compression.orth_penalty == "scaled",
                )
            if components is not None:
                restore_outside(self._lora_params, global_adapter, components)
            local = get_adapter(self.model)
            delta = {
                m: (b - global_adapter.lora[m][0], a - global_adapter.lora[m][1])
                for m, (b, a) in local.lora.items()
            }
            sent, state = scheme.upload(
                LocalUpdate(delta, local.lora, components, task.keep_ratio, task.state, task.seed)
            )
            head_entries = sum(t.numel() for t in local.head.values())
            replies.append(
                ClientReply(
                    client_id=task.client_id,
                    examples=len(task.indices),
                    steps=result.steps,
                    local_loss=result.mean_loss,
                    payload=sent.payload,
                    head=local.head,
                    kept_entries=sent.kept,
                    bits_sent=sent.bits + self.cfg.compression.value_bits * head_entries,
                    distortion=sent.distortion,
                    train_seconds=time.perf_counter() - start,
                    actor_id=self.actor_id,
                    state=state,
                )
            )
        return replies

    def evaluate(self, global_adapter: Adapter, part: int = 0, parts: int = 1) -> EvalResult:
        """Evaluate the ``part``-th of ``parts`` shares of the test split's batches, so that a pool
        of actors can share the work; the batches are the same whatever ``parts`` is, so the
        combined sums are too."""
        set_adapter(self.model, global_adapter)
        return evaluate(
            self.model, self.test_data, self.cfg.federation.eval_batch_size, self.device, part, parts
        )
