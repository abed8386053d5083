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
from fedlora_ray.algorithm.schedule import cut_passes
from fedlora_ray.algorithm.schemes import make_scheme
from fedlora_ray.algorithm.schemes.base import LocalUpdate
from fedlora_ray.batched.loop import ClientWork, train_pass
from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.lora.adapter import Adapter, get_adapter, lora_parameters, set_adapter
from fedlora_ray.lora.rank_mask import lora_b_modules, rank_mask
from fedlora_ray.preflight import check_model
from fedlora_ray.privacy.mechanism import local_noise_generator, local_release, noised_tensors
from fedlora_ray.tasks import load_splits, model_family
from fedlora_ray.train import EvalResult, LocalResult, evaluate, train_local


def restore_outside(local: Adapter, global_lora: Adapter, components: dict[str, torch.Tensor]) -> None:
    """Put the global values back in the entries outside the trained components. They had zero
    gradient from the task loss and never entered the forward; only AdamW's decoupled weight
    decay (and SOFT's regulariser) moved them, so this is the same as having frozen them."""
    for m, idx in components.items():
        b, a = local.lora[m]
        outside = torch.ones(b.shape[1], dtype=torch.bool)
        outside[idx] = False
        gb, ga = global_lora.lora[m]
        b[:, outside] = gb[:, outside]
        a[outside, :] = ga[outside, :]


def has_dropout(model: torch.nn.Module) -> bool:
    """Some dropout of the model is on in training: a dropout layer with p > 0, or an attention
    dropout rate in a transformers config (applied inside attention, not as a layer)."""
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return True
    configs = [m.config for m in model.modules() if hasattr(m, "config")]
    rates = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")
    return any(float(getattr(c, r, 0) or 0) > 0 for c in configs for r in rates)


class ClientTrainer:
    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu", actor_id: str = "serial"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.actor_id = actor_id
        # the LoRA targets and rank against the base model's modules, with a message naming the
        # field, before peft meets them: every run builds its model here, so this is where it
        # is checked (the launcher stays free of torch and transformers)
        check_model(cfg)
        train, test = load_splits(cfg.data)
        family = model_family(cfg.model.name)
        self.train_data = family.prepare(cfg.model, train, self.device)  # once per actor, for all clients
        self.test_data = family.prepare(cfg.model, test, self.device)
        self._family, self._test_split, self._tokenizer = family, test, None
        self.model = family.build(cfg.model, len(train.label_names), cfg.federation.seed).to(self.device)
        self._initial = get_adapter(self.model)
        self._lora_params = lora_parameters(self.model)
        self._lora_pairs = list(self._lora_params.values())
        self._lora_b = lora_b_modules(self.model)
        if cfg.model.gradient_checkpointing and cfg.runtime.clients_per_pass > 1 and has_dropout(self.model):
            # the backward recomputes each layer's forward, where a client's own dropout stream
            # (docs/algorithms.md §12) would draw new masks; torch restores only its global one
            raise ConfigError(
                "config field 'model.gradient_checkpointing' = True: the base model has dropout, so it "
                f"cannot train runtime.clients_per_pass = {cfg.runtime.clients_per_pass} clients per pass "
                "with it; set runtime.clients_per_pass=1 or model.gradient_checkpointing=false"
            )
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

    def adapter_config_json(self) -> str:
        """peft's adapter_config.json for this model (peft is loaded here already)."""
        from fedlora_ray.lora.save import adapter_config_json

        return adapter_config_json(self.cfg.model)

    def train(self, global_adapter: Adapter, tasks: list[ClientTask]) -> list[ClientReply]:
        """The tasks' local rounds, cut into passes of ``runtime.clients_per_pass``."""
        per_pass = self.cfg.runtime.clients_per_pass
        passes = cut_passes([len(t.indices) for t in tasks], per_pass)
        return self.train_passes(global_adapter, [[tasks[i] for i in p] for p in passes])

    def train_passes(self, global_adapter: Adapter, passes: list[list[ClientTask]]) -> list[ClientReply]:
        """Each pass's local rounds: load the global adapter, train the scheme's components (one
        client at a time, or a pass's clients together), and let the scheme make each upload
        and the client's new state."""
        replies = []
        modules = list(self._lora_params)
        for tasks in passes:
            start = time.perf_counter()
            components = [self.scheme.components(t.seed, modules, t.components) for t in tasks]
            if len(tasks) == 1 and self.cfg.runtime.clients_per_pass == 1:
                trained = [self._train_one(global_adapter, tasks[0], components[0])]
            else:
                trained = self._train_together(global_adapter, tasks, components)
            seconds = (time.perf_counter() - start) / len(tasks)  # a pass's time, shared evenly
            for task, comp, (result, local) in zip(tasks, components, trained, strict=True):
                replies.append(self._reply(global_adapter, task, comp, result, local, seconds))
        return replies

    def _training_kwargs(self) -> dict[str, Any]:
        cfg, scheme = self.cfg, self.scheme
        return {
            "epochs": cfg.federation.local_epochs,
            "batch_size": cfg.federation.batch_size,
            "lr": cfg.federation.lr,
            "weight_decay": cfg.federation.weight_decay,
            "device": self.device,
            "lambda_o": scheme.orthogonal_weight,
            "orth_scaled": cfg.compression.orth_penalty == "scaled",
            "precision": cfg.runtime.precision,
        }

    def _train_one(
        self, global_adapter: Adapter, task: ClientTask, components: dict[str, torch.Tensor] | None
    ) -> tuple[LocalResult, Adapter]:
        set_adapter(self.model, global_adapter)
        masked: AbstractContextManager[None] = nullcontext()
        if components is not None:
            masked = rank_mask(self._lora_b, self.scheme.component_scale(components))
        with masked:
            result = train_local(
                self.model, self.train_data, task.indices, seed=task.seed, lora_pairs=self._lora_pairs,
                **self._training_kwargs(),
            )  # fmt: skip
        return result, get_adapter(self.model)

    def _train_together(
        self,
        global_adapter: Adapter,
        tasks: list[ClientTask],
        components: list[dict[str, torch.Tensor] | None],
    ) -> list[tuple[LocalResult, Adapter]]:
        work = [
            ClientWork(t.indices, t.seed, None if comp is None else self.scheme.component_scale(comp))
            for t, comp in zip(tasks, components, strict=True)
        ]
        return train_pass(
            self.model, self.train_data, work, global_adapter, train_a=self.scheme.trains_a,
            **self._training_kwargs(),
        )  # fmt: skip

    def _reply(
        self, global_adapter: Adapter, task: ClientTask, components: dict[str, torch.Tensor] | None,
        result: LocalResult, local: Adapter, seconds: float,
    ) -> ClientReply:  # fmt: skip
        if components is not None:
            restore_outside(local, global_adapter, components)
        delta = {
            m: (b - global_adapter.lora[m][0], a - global_adapter.lora[m][1])
            for m, (b, a) in local.lora.items()
        }
        if task.dp_sigma is not None:  # local DP: what leaves the client is noised first (§14)
            delta, local = self._noised(global_adapter, task, local)
        sent, state = self.scheme.upload(
            LocalUpdate(delta, local.lora, components, task.keep_ratio, task.state, task.seed)
        )
        head_entries = sum(t.numel() for t in local.head.values())
        return ClientReply(
            client_id=task.client_id,
            examples=len(task.indices),
            steps=result.steps,
            local_loss=result.mean_loss,
            payload=sent.payload,
            head=local.head,
            kept_entries=sent.kept,
            bits_sent=sent.bits + self.cfg.compression.value_bits * head_entries,
            distortion=sent.distortion,
            train_seconds=seconds,
            actor_id=self.actor_id,
            state=state,
        )

    def _noised(
        self, global_adapter: Adapter, task: ClientTask, local: Adapter
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], Adapter]:
        """Local DP [docs/algorithms.md §14]: the whole change (LoRA factors and head) clipped to
        privacy.clip_norm, N(0, sigma^2 C^2) added on every trained coordinate; the scheme then
        sparsifies the noised change, and the local factors it scores are global + noised."""
        assert task.dp_sigma is not None
        change = [x - g for x, g in zip(local.tensors(), global_adapter.tensors())]  # delta, then the head's
        out, _ = local_release(
            change, noised_tensors(global_adapter, self.scheme.trains_a), self.cfg.privacy.clip_norm,
            task.dp_sigma, local_noise_generator(task.seed),
        )  # fmt: skip
        noised = global_adapter.with_tensors(out)
        return noised.lora, global_adapter.with_tensors(
            [g + d for g, d in zip(global_adapter.tensors(), out)]
        )

    def generate(self, global_adapter: Adapter, part: int = 0, parts: int = 1) -> list[dict[str, Any]]:
        """Greedy answers of ``global_adapter`` to the first ``federation.generations`` held-out
        prompts, this worker's share (prompt i goes to part i mod parts); [] for a model family
        that does not generate (a classifier)."""
        make = getattr(self._family, "generations", None)
        count = min(self.cfg.federation.generations, len(self._test_split.examples))
        if make is None or count == 0:
            return []
        if self._tokenizer is None:  # loaded once: a GGUF tokenizer takes seconds
            self._tokenizer = self._family.load_tokenizer(self.cfg.model)  # type: ignore[attr-defined]
        set_adapter(self.model, global_adapter)
        indices = list(range(part, count, parts))
        rows: list[dict[str, Any]] = make(
            self.model, self._tokenizer, self.cfg.model, self._test_split, indices,
            self.cfg.federation.generation_tokens,
        )  # fmt: skip
        return rows

    def evaluate(self, global_adapter: Adapter, part: int = 0, parts: int = 1) -> EvalResult:
        """Evaluate the ``part``-th of ``parts`` shares of the test split's batches, so that a pool
        of actors can share the work; the batches are the same whatever ``parts`` is, so the
        combined sums are too."""
        set_adapter(self.model, global_adapter)
        return evaluate(
            self.model, self.test_data, self.cfg.federation.eval_batch_size, self.device, part, parts,
            self.cfg.runtime.precision, self.cfg.federation.mc_scoring,
        )  # fmt: skip
