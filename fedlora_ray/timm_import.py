"""Importing timm (and torchvision) beside the CPU torch wheel.

timm imports torchvision, and the torchvision wheels pip finds are CUDA builds: their compiled
ops (``torchvision/_C.so``) link against ``libtorch_cuda.so``, which the pinned CPU torch wheel
lacks. ``_C.so`` then fails to load, torchvision carries on without its custom ops, and
``torchvision/_meta_registrations.py`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` at import, which raises "operator torchvision::nms does not exist". So
``import torchvision`` fails, and with it ``import timm``, although a ViT uses none of those
ops (they are detection ops). transformers imports torchvision too whenever it is installed
(``transformers.image_utils``, reached from ``modeling_utils``), so then peft and every text
model fail the same way.

The workaround defines the two operator schemas that ``_C.so`` would have defined, with no
kernel behind them (calling them raises), so the fake-kernel registration finds them:

- ``import_timm`` / ``import_torchvision`` import as usual and, only when that fails with this
  error, define the schemas, drop the half-imported modules and import again.
- ``guard_torchvision_import`` installs an import hook (cheap: it imports nothing) that, the
  first time anything imports torchvision, tries to load ``_C.so`` as torchvision would and
  defines the schemas only when that fails. Call it before anything may import transformers,
  e.g. from the package's ``__init__``, so that text models keep working once torchvision is
  installed.

The ``Library`` holding the definitions is module-level: the definitions last as long as it
does.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

_SCHEMAS = (  # as torchvision's csrc/ops/nms.cpp and its quantized nms define them
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: Any = None  # the torch.library.Library holding the stand-in definitions, kept alive


def _define_missing_ops() -> None:
    global _LIBRARY
    if _LIBRARY is not None:
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _LIBRARY = lib


def _compiled_ops_load() -> bool:
    """Whether torchvision's ``_C`` extension loads into this torch (loaded once here, as
    torchvision's own import would load it; True when there is nothing to load)."""
    spec = importlib.machinery.PathFinder.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True
    found = [p for d in spec.submodule_search_locations for p in sorted(Path(d).glob("_C.*so"))]
    if not found:
        return True
    import torch

    try:
        torch.ops.load_library(str(found[0]))
    except (OSError, RuntimeError):
        return False
    return True


class _TorchvisionGuard(importlib.abc.MetaPathFinder):
    """Before the first ``import torchvision``: define the stand-in ops when ``_C`` does not
    load. Finds nothing itself: the import goes on through the ordinary finders."""

    done = False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision" and not self.done:
            self.done = True
            if not _compiled_ops_load():
                _define_missing_ops()
        return None


_GUARD = _TorchvisionGuard()


def guard_torchvision_import() -> None:
    """Make a later ``import torchvision`` (by timm, transformers or anyone) work beside a
    torchvision build that does not match torch. Idempotent; imports nothing."""
    if "torchvision" not in sys.modules and _GUARD not in sys.meta_path:
        sys.meta_path.insert(0, _GUARD)


def _drop(prefixes: tuple[str, ...]) -> None:
    """Forget half-imported modules, so the next import runs them again from the start."""
    for name in [n for n in sys.modules if n.split(".", 1)[0] in prefixes]:
        del sys.modules[name]


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except RuntimeError as err:
        if "operator torchvision::" not in str(err) or "does not exist" not in str(err):
            raise
    _drop(("timm", "torchvision"))
    _define_missing_ops()
    return importlib.import_module(name)


def import_torchvision() -> ModuleType:
    """``import torchvision``, working around a torchvision build that does not match torch."""
    return _import("torchvision")


def import_timm() -> ModuleType:
    """``import timm``, working around a torchvision build that does not match torch."""
    return _import("timm")
