"""Checks of a run config against the base model and the data, before any work starts.

``validate_run_config`` (fedlora_ray.components) checks each field on its own, the rules
between fields and each component's own rules; these checks need the base model's module names
and shapes (read from a weightless copy on the meta device: no weights load) and the training
split (WordNet glosses: a fraction of a second). ``check_run`` raises ConfigError naming the
field, the value and what is allowed, so a bad run stops before Ray starts or any model is built.
"""

from __future__ import annotations

from fedlora_ray.config import ConfigError, RunConfig
from fedlora_ray.control import controller_class
from fedlora_ray.data import partition_indices
from fedlora_ray.tasks import DATASETS, load_splits, model_family
from fedlora_ray.tasks.base import targets

_MAX_LISTED = 8  # allowed module names listed in a message


def check_run(cfg: RunConfig) -> None:
    """Raise ConfigError when ``cfg`` cannot run on its base model and data."""
    check_data(cfg)  # first: it needs numpy only, the model check imports transformers (seconds)
    check_model(cfg)


def check_model(cfg: RunConfig) -> None:
    """model.target_modules name linear modules of the base model, and the LoRA rank fits them."""
    model = cfg.model
    family = model_family(model.name)
    modules = family.linear_modules(model)
    wanted = family.lora_targets(model)
    targeted = {name: dk for name, dk in modules.items() if targets(name, wanted)}
    for i, t in enumerate(wanted):
        if not any(targets(name, (t,)) for name in modules):
            short = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in modules))
            allowed = ", ".join(repr(n) for n in short[:_MAX_LISTED])
            example = next(iter(modules))
            field = family.targets_field
            where = (
                f"config field '{field}[{i}]' ="
                if field == "model.target_modules"
                else (f"config field '{field}' gives the LoRA target")
            )
            raise ConfigError(
                f"{where} {t!r}: no linear module of the "
                f"{model.name!r} base model has that name; allowed are its linear modules' names, "
                f"{allowed}{', ...' if len(short) > _MAX_LISTED else ''} (or a dotted tail of a "
                f"full name such as {example!r})"
            )
    limit = min(min(dk) for dk in targeted.values())
    # TSFA replaces model.lora_rank by its offline choice r* in 1..controller.max_rank (and its
    # pilot calibration trains at rank controller.max_rank), so max_rank is what must fit then.
    if controller_class(cfg.controller.kind).chooses_rank:
        field, rank = "controller.max_rank", cfg.controller.max_rank
    else:
        field, rank = "model.lora_rank", model.lora_rank
    if rank > limit:
        names = ", ".join(repr(t) for t in wanted)
        raise ConfigError(
            f"config field '{field}' = {rank}: must be <= {limit}, the smallest dimension "
            f"(min of in and out features) of the targeted modules {names} of the "
            f"{model.name!r} base model"
        )


def check_data(cfg: RunConfig) -> None:
    """The training split serves every client at least data.min_examples_per_client examples
    under the configured partition (docs/algorithms.md §8): the partition itself is drawn, from
    the labels only, and refuses with a ConfigError saying how many clients the data can serve."""
    fed, data = cfg.federation, cfg.data
    try:
        train, _ = load_splits(data)
    except ConfigError:
        raise  # the loader named its own field
    except ValueError as err:  # a category with no more glosses than data.test_per_class
        raise ConfigError(f"config field 'data.test_per_class' = {data.test_per_class}: {err}") from None
    try:
        partition_indices(train.labels, fed.num_clients, data, fed.seed)
    except ConfigError as err:  # the partition knows the counts; the dataset knows its size fields
        more = DATASETS[data.dataset].more_examples(data)
        raise ConfigError(f"{err} ({more})" if more else str(err)) from None
