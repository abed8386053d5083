"""One client's local training and the test-set evaluation: plain loops over prepared batches."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedlora_ray.lora.orthogonality import orthogonal_penalty
from fedlora_ray.tasks.base import Batches


@dataclass(frozen=True)
class LocalResult:
    mean_loss: float
    steps: int


def autocast(device: torch.device, precision: str) -> AbstractContextManager[None]:
    """``runtime.precision``: 'bf16' runs the forward under bfloat16 autocast (the trained LoRA
    factors and the optimiser stay float32), 'fp32' leaves it in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def client_batches(indices: np.ndarray, epochs: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The example indices of each of a client's local steps: every epoch a fresh shuffle drawn
    from the client's round seed, cut into batches in order."""
    gen = torch.Generator().manual_seed(seed)
    idx_all = torch.tensor(np.asarray(indices), dtype=torch.long)  # copy: Ray hands read-only arrays
    out = []
    for _ in range(epochs):
        order = idx_all[torch.randperm(len(idx_all), generator=gen)]
        out += [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return out


def train_local(
    model: nn.Module,
    data: Batches,
    indices: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    lora_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    lambda_o: float = 0.0,
    orth_scaled: bool = False,
    precision: str = "fp32",
) -> LocalResult:
    """E epochs of AdamW on the client's examples [seed II-B]. The model already holds the
    global adapter; a fresh optimiser per round, as each client restarts from the global
    factors. Shuffling and dropout draw from ``seed`` only, so the result does not depend on
    which process runs the client. With ``lambda_o`` > 0 the loss carries SOFT's orthogonal
    regulariser over ``lora_pairs`` [seed eq. (7)], or its scale-free variant with
    ``orth_scaled``; the logged loss is the task loss alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    batches = client_batches(indices, epochs, batch_size, seed)
    torch.manual_seed(seed)  # dropout
    model.train()
    total, steps = torch.zeros((), device=device), 0
    token_loss = getattr(model, "row_losses", None)  # a causal LM's: NLL of response tokens
    for idx in batches:
        inputs, y = data.batch(idx, device)
        with autocast(device, precision):
            if token_loss is not None:
                nll, tokens = token_loss(*inputs, y)
            else:
                logits = model(*inputs)
        if token_loss is not None:  # the mean over the batch's response tokens [docs/algorithms.md §13]
            loss = nll.sum() / tokens.sum().clamp_min(1)
        else:
            loss = F.cross_entropy(logits.float(), y)
        objective = (
            loss + lambda_o * orthogonal_penalty(lora_pairs, orth_scaled)
            if lambda_o > 0 and lora_pairs
            else loss
        )
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        total += loss.detach()
        steps += 1
    model.eval()
    return LocalResult(float(total) / max(steps, 1), steps)


@dataclass(frozen=True)
class EvalResult:
    """Per test batch: (batch index, loss sum, loss count, correct, count). Sums run over the
    batches in index order, so they do not depend on which worker computed which batch.

    A classifier's batch counts its examples twice (loss and accuracy). A causal LM's batch holds
    either held-out responses (their summed NLL over their response tokens and the token count,
    no accuracy) or whole multiple-choice questions (no loss; right answers and questions)
    [docs/algorithms.md §13]: ``loss`` is then the token-weighted mean NLL, whose exp is the
    perplexity, and ``accuracy`` the multiple-choice accuracy (None without questions)."""

    batches: tuple[tuple[int, float, int, int, int], ...]

    @staticmethod
    def combine(parts: list[EvalResult]) -> EvalResult:
        return EvalResult(tuple(sorted(b for p in parts for b in p.batches)))

    @property
    def loss_sum(self) -> float:
        return sum(b[1] for b in self.batches)

    @property
    def loss_count(self) -> int:
        return sum(b[2] for b in self.batches)

    @property
    def correct(self) -> int:
        return sum(b[3] for b in self.batches)

    @property
    def count(self) -> int:
        return sum(b[4] for b in self.batches)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.loss_count if self.loss_count else None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Batches,
    batch_size: int,
    device: torch.device,
    part: int = 0,
    parts: int = 1,
    precision: str = "fp32",
    mc_scoring: str = "mean",
) -> EvalResult:
    """Loss and correct count of every ``parts``-th batch of the whole split, from ``part``.
    Examples are taken in length order so batches carry little padding; the batches are cut
    the same way whatever ``parts`` is. A causal LM's test split is scored by
    ``evaluate_language_model``."""
    if hasattr(data, "eval_batches"):
        return evaluate_language_model(model, data, batch_size, device, part, parts, precision, mc_scoring)
    model.eval()
    idx = data.eval_order()
    out = []
    for b, start in enumerate(range(0, len(idx), batch_size)):
        if b % parts != part:
            continue
        inputs, y = data.batch(idx[start : start + batch_size], device)
        with autocast(device, precision):
            logits = model(*inputs).float()
        loss = float(F.cross_entropy(logits, y, reduction="sum"))
        out.append((b, loss, len(y), int((logits.argmax(-1) == y).sum()), len(y)))
    return EvalResult(tuple(out))


@torch.no_grad()
def evaluate_language_model(
    model: nn.Module,
    data: Any,
    batch_size: int,
    device: torch.device,
    part: int,
    parts: int,
    precision: str,
    mc_scoring: str,
) -> EvalResult:
    """A causal LM's share of the test split [docs/algorithms.md §13]: the summed NLL of the
    held-out responses and their token count, and for each multiple-choice question whether its
    best-scored choice is the right one. A choice's score is the log-likelihood of its response
    tokens given the question, per token (``mc_scoring`` 'mean') or summed ('sum'), as MMLU's
    log-likelihood scoring ranks continuations; ties go to the first choice."""
    model.eval()
    out = []
    for b, (rows, questions) in enumerate(data.eval_batches(batch_size)):
        if b % parts != part:
            continue
        inputs, y = data.batch(rows, device)
        with autocast(device, precision):
            nll, tokens = model.row_losses(*inputs, y)  # type: ignore[operator]
        nll, tokens = nll.double().cpu(), tokens.cpu()
        if questions is None:
            out.append((b, float(nll.sum()), int(tokens.sum()), 0, 0))
            continue
        score = -nll / tokens.clamp_min(1) if mc_scoring == "mean" else -nll
        first, right = int(rows[0]), 0
        for q in questions:
            lo, hi = data.starts[q] - first, data.starts[q + 1] - first
            right += int(int(score[lo:hi].argmax()) == data.answers[q])
        out.append((b, 0.0, 0, right, len(questions)))
    return EvalResult(tuple(out))
