"""The client side of a round: one resident base model that trains many clients in turn.

A ``ClientTrainer`` builds the model and tokenises the data once; per client it only loads
the global adapter, trains and copies the result out. Both backends use it: the serial
backend holds one, every Ray client actor holds one.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np
import torch

from fedlora_ray.algorithm.messages import ClientReply, ClientTask
from fedlora_ray.config import RunConfig
from fedlora_ray.data import load_wordnet
from fedlora_ray.lora import Adapter, build_model, get_adapter, load_tokenizer, set_adapter
from fedlora_ray.train import EvalResult, evaluate, tokenize, train_local

BITS_PER_VALUE = 32  # uncompressed float32 upload [seed II-C: q bits per parameter]


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
        fed = self.cfg.federation
        replies = []
        for task in tasks:
            start = time.perf_counter()
            set_adapter(self.model, global_adapter)
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
            )
            upload = get_adapter(self.model)
            replies.append(
                ClientReply(
                    client_id=task.client_id,
                    examples=len(task.indices),
                    steps=result.steps,
                    local_loss=result.mean_loss,
                    upload=upload,
                    bits_sent=BITS_PER_VALUE * upload.num_entries(),
                    train_seconds=time.perf_counter() - start,
                    actor_id=self.actor_id,
                    state=dict(task.state),
                )
            )
        return replies

    def evaluate(self, global_adapter: Adapter, part: int = 0, parts: int = 1) -> EvalResult:
        """Evaluate on the ``part``-th of ``parts`` interleaved slices of the test split, so
        that a pool of actors can share the work."""
        set_adapter(self.model, global_adapter)
        idx = np.arange(part, len(self.test_data), parts)
        return evaluate(self.model, self.test_data, idx, self.cfg.federation.eval_batch_size, self.device)
