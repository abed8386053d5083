"""The causal-LM families' own config rules, read from the config alone (no torch, no
transformers: a config is checked before anything heavy loads) [docs/algorithms.md §13]."""

from __future__ import annotations

from fedlora_ray.config import ConfigError, RunConfig


def validate(cfg: RunConfig) -> None:
    """A GGUF file is named once, the pilot calibration (a classifier's) is not asked for, and
    gradient checkpointing meets no LoRA dropout in a pass of several clients."""
    model = cfg.model
    if model.gguf_file and model.weights.endswith(".gguf"):
        raise ConfigError(
            f"config field 'model.gguf_file' = {model.gguf_file!r}: model.weights = {model.weights!r} "
            "names the GGUF file already; leave one of them empty"
        )
    if model.gguf_file and not model.gguf_file.endswith(".gguf"):
        raise ConfigError(f"config field 'model.gguf_file' = {model.gguf_file!r}: must name a .gguf file")
    if cfg.controller.calibrate:
        raise ConfigError(
            "config field 'controller.calibrate' = True: the pilot calibration trains a classifier's "
            f"cross-entropy; it does not take model.name = {model.name!r} yet (set controller.sigma_beta "
            "by hand)"
        )
    rt = cfg.runtime
    no_gpu = (rt.backend == "ray" and rt.num_gpus_per_actor == 0) or (
        rt.backend == "serial" and rt.device == "cpu"
    )
    if model.load_in_4bit and (
        no_gpu or model.gguf_file or model.weights.endswith(".gguf") or not model.weights
    ):
        why = (
            "a GGUF base is dequantized to float32 (give a hub id or a folder of safetensors weights)"
            if model.gguf_file or model.weights.endswith(".gguf") or not model.weights
            else "the client actors get no GPU (runtime.num_gpus_per_actor = 0)"
            if rt.backend == "ray"
            else "the serial backend runs on the CPU (runtime.device = 'cpu')"
        )
        raise ConfigError(
            f"config field 'model.load_in_4bit' = True: 4-bit bases need bitsandbytes and a CUDA GPU; {why}. "
            "Set model.load_in_4bit=false to train the float32 base"
        )
    if model.gradient_checkpointing and cfg.runtime.clients_per_pass > 1 and model.lora_dropout > 0:
        # the backward recomputes each layer's forward, and a client's own dropout stream
        # (docs/algorithms.md §12) would draw new masks there; torch restores only its global one
        raise ConfigError(
            f"config field 'model.lora_dropout' = {model.lora_dropout}: must be 0 with "
            f"model.gradient_checkpointing and runtime.clients_per_pass = {cfg.runtime.clients_per_pass} "
            "(a recomputed layer would draw other dropout masks); or set runtime.clients_per_pass=1"
        )
