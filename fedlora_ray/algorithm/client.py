"""The client side of a round: one resident base model that trains many clients in turn.

A ``ClientTrainer`` builds the model and tokenises the data once; per client it only loads
the global adapter, trains and copies the result out. Both backends use it: the serial
backend holds one, every Ray client actor holds one.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from fedlora_ray.algorithm import schemes
from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.compress import compensate, compress_update, residual
from fedlora_ray.config import RunConfig
from fedlora_ray.data import load_wordnet
from fedlora_ray.lora import Adapter, build_model, get_adapter, load_tokenizer, set_adapter
from fedlora_ray.lora.adapter import lora_parameters
from fedlora_ray.lora.rank_mask import lora_b_modules, rank_mask
from fedlora_ray.train import EvalResult, evaluate, tokenize, train_local

_COMPRESSOR_STREAM = 0x5EED  # the random baselines draw from their own stream


class ClientTrainer:
    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu", actor_id: str = "serial"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.actor_id = actor_id
        train, test = load_wordnet(cfg.data)
        tokenizer = load_tokenizer(cfg.model)
        self.train_data = tokenize(tokenizer, train.texts, train.labels, cfg.model.max_length)
        self.test_data = tokenize(tokenizer, test.texts, test.labels, cfg.model.max_length)
        self.model = build_model(cfg.model, len(train.label_names), cfg.federation.seed).to(self.device)
        self._initial = get_adapter(self.model)
        self._lora_params = lora_parameters(self.model)
        self._lora_pairs = list(self._lora_params.values())
        self._lora_b = lora_b_modules(self.model)
        if cfg.algorithm.kind == "ffa":  # FFA-LoRA: A stays at its seeded init on every client
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
        fed, comp, kind = self.cfg.federation, self.cfg.compression, self.cfg.algorithm.kind
        lambda_o = comp.lambda_o if comp.method == "soft" else 0.0
        keep_memory = kind == "fedavg" and comp.error_feedback and comp.method != "none"
        rank = self.cfg.model.lora_rank
        replies = []
        for task in tasks:
            start = time.perf_counter()
            set_adapter(self.model, global_adapter)
            components = None
            masked: AbstractContextManager[None] = nullcontext()
            if kind in ("fslora", "hetlora"):
                k = rank if task.components is None else task.components
                components = schemes.sketch_components(kind, task.seed, list(self._lora_params), rank, k)
                masked = rank_mask(self._lora_b, schemes.component_scale(kind, components, rank))
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
                    lambda_o=lambda_o,
                )
            if components is not None:
                schemes.restore_outside(self._lora_params, global_adapter.lora, components)
            local = get_adapter(self.model)
            delta = {
                m: (b - global_adapter.lora[m][0], a - global_adapter.lora[m][1])
                for m, (b, a) in local.lora.items()
            }
            if kind == "fedavg":
                update = compensate(delta, task.state.get("error") if keep_memory else None)
                gen = torch.Generator().manual_seed(task.seed ^ _COMPRESSOR_STREAM)
                task_comp = (
                    comp if task.keep_ratio is None else dataclasses.replace(comp, keep_ratio=task.keep_ratio)
                )
                sent = compress_update(update, local.lora, task_comp, gen)
            else:
                sent = schemes.structured_upload(kind, delta, components, comp.value_bits)
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
                    bits_sent=sent.bits + comp.value_bits * head_entries,
                    distortion=sent.distortion,
                    train_seconds=time.perf_counter() - start,
                    actor_id=self.actor_id,
                    state={"error": residual(update, sent)} if keep_memory else {},
                )
            )
        return replies

    def evaluate(self, global_adapter: Adapter, part: int = 0, parts: int = 1) -> EvalResult:
        """Evaluate on the ``part``-th of ``parts`` interleaved slices of the test split, so
        that a pool of actors can share the work."""
        set_adapter(self.model, global_adapter)
        idx = np.arange(part, len(self.test_data), parts)
        return evaluate(self.model, self.test_data, idx, self.cfg.federation.eval_batch_size, self.device)
