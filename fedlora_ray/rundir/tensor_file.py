"""A checksummed file of tensors and plain data: what checkpoints and client-store files are.

The file is a safetensors file [docs/algorithms.md §10]. Its tensors are the tree's tensors and
numpy arrays, named by their order in the tree; its header metadata holds versioned JSON:

- ``format``: ``fedlora-ray/tensor-tree``, and ``version`` (``FORMAT_VERSION``);
- ``kind``: what the file holds (``checkpoint``, ``client-state``), checked on load;
- ``tree``: the data as JSON, each tensor replaced by ``{"$t": name}`` (``"$a"`` for a numpy
  array, ``"$tuple"``, ``"$np"`` for a numpy scalar, ``"$f"`` for a non-finite float, ``"$dc"``
  for a dataclass of a type the reader allows);
- ``sha256``: over the tree's JSON and every tensor's name, dtype, shape and bytes.

Loading parses the header, reads the tensors with safetensors (no pickle: nothing in the file
runs code), recomputes the checksum and rebuilds the tree. Anything wrong (a flipped byte, a
cut-short file, another kind or version) raises ``DamagedFileError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlora_ray.atomic_write import atomic_path
from fedlora_ray.run_errors import DamagedFileError

if TYPE_CHECKING:
    import torch

FORMAT = "fedlora-ray/tensor-tree"
FORMAT_VERSION = 2  # 1 was a torch pickle (checkpoint/round-NNNNNN.pt), no longer read
_HEADER_LIMIT = 100_000_000  # safetensors' own bound on the JSON header


class _Encoder:
    def __init__(self, types: Mapping[str, type]) -> None:
        import torch  # here: reading a run folder's listing (the launcher) needs no torch

        self.torch = torch
        self.tensors: dict[str, torch.Tensor] = {}
        self.names = {cls: name for name, cls in types.items()}
        self._seen: dict[int, str] = {}  # id of a tensor or array already added -> its name
        self._storages: set[int] = set()

    def _add(self, obj: torch.Tensor | np.ndarray) -> str:
        """``obj``'s name: one tensor in the file however often the tree holds the object."""
        if id(obj) in self._seen:
            return self._seen[id(obj)]
        if isinstance(obj, np.ndarray):
            array = obj if obj.flags.writeable else obj.copy()  # from_numpy warns on read-only
            tensor = self.torch.from_numpy(np.ascontiguousarray(array))
        else:
            tensor = obj.detach().to("cpu").contiguous()
        if tensor.numel() and tensor.untyped_storage().data_ptr() in self._storages:
            tensor = tensor.clone()  # a view of a tensor already added: safetensors stores each once
        self._storages.add(tensor.untyped_storage().data_ptr())
        name = self._seen[id(obj)] = str(len(self.tensors))
        self.tensors[name] = tensor
        return name

    def encode(self, obj: Any) -> Any:
        if isinstance(obj, self.torch.Tensor):
            return {"$t": self._add(obj)}
        if isinstance(obj, np.ndarray):
            return {"$a": self._add(obj)}
        if isinstance(obj, np.generic):  # a numpy scalar keeps its type: resume = one go, bit for bit
            return {"$np": obj.dtype.str, "v": self.encode(obj.item())}
        if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"$f": repr(obj)}
        if isinstance(obj, tuple):
            return {"$tuple": [self.encode(v) for v in obj]}
        if isinstance(obj, list):
            return [self.encode(v) for v in obj]
        if isinstance(obj, dict):
            for key in obj:
                if not isinstance(key, str) or key.startswith("$"):
                    raise TypeError(
                        f"a tensor file's dict keys are strings without a leading '$', not {key!r}"
                    )
            return {k: self.encode(v) for k, v in obj.items()}
        if dataclasses.is_dataclass(obj) and type(obj) in self.names:
            fields = {f.name: self.encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            return {"$dc": self.names[type(obj)], "fields": fields}
        raise TypeError(f"a tensor file cannot hold a {type(obj).__name__}")


def _digest(tree_json: str, tensors: Mapping[str, torch.Tensor]) -> str:
    import torch

    h = hashlib.sha256(tree_json.encode())
    for name in sorted(tensors, key=int):
        t = tensors[name]
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def encode_tensor_file(tree: Any, kind: str, types: Mapping[str, type] = {}) -> bytes:
    """The bytes of a tensor file holding ``tree``; ``types``: the dataclasses it may hold, by
    the name the file records."""
    from safetensors.torch import save

    encoder = _Encoder(types)
    tree_json = json.dumps(encoder.encode(tree), allow_nan=False, separators=(",", ":"))
    meta = {
        "format": FORMAT,
        "version": str(FORMAT_VERSION),
        "kind": kind,
        "tree": tree_json,
        "sha256": _digest(tree_json, encoder.tensors),
    }
    return save(encoder.tensors, metadata=meta)


def write_tensor_file(
    path: str | os.PathLike[str],
    tree: Any,
    kind: str,
    types: Mapping[str, type] = {},
    *,
    durable: bool = True,
) -> int:
    """``tree`` as the tensor file ``path``, whole or not at all; returns its size in bytes."""
    data = encode_tensor_file(tree, kind, types)
    with atomic_path(path, durable=durable, needed=len(data)) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return len(data)


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, shorter than a safetensors header: the file is cut short")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_HEADER_LIMIT, len(data) - 8):
        raise ValueError("its header runs past the end of the file: the file is cut short or damaged")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    return header


class _Decoder:
    def __init__(self, tensors: Mapping[str, torch.Tensor], types: Mapping[str, type] | None) -> None:
        self.tensors, self.types = tensors, types

    def decode(self, obj: Any) -> Any:
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "$t" in obj:
            return self.tensors[obj["$t"]]
        if "$a" in obj:
            return self.tensors[obj["$a"]].numpy()
        if "$np" in obj:
            return np.dtype(obj["$np"]).type(self.decode(obj["v"]))
        if "$f" in obj:
            return float(obj["$f"])
        if "$tuple" in obj:
            return tuple(self.decode(v) for v in obj["$tuple"])
        if "$dc" in obj:
            fields = {k: self.decode(v) for k, v in obj["fields"].items()}
            if self.types is None:  # a reader of the plain data only: the dataclass as its fields
                return fields
            cls = self.types.get(obj["$dc"])
            if cls is None:
                raise ValueError(f"it holds a {obj['$dc']!r}, which this reader does not build")
            return cls(**fields)
        return {k: self.decode(v) for k, v in obj.items()}


def decode_tensor_file(data: bytes, kind: str, types: Mapping[str, type] | None = {}) -> Any:
    """The tree of a tensor file's bytes; ValueError saying what is wrong when they are not a
    whole, unchanged tensor file of ``kind``. ``types``: the dataclasses it may build (None:
    every dataclass comes back as the dict of its fields)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        meta = _header(data).get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"not a fedlora-ray tensor file (format {meta.get('format')!r})")
    if meta.get("version") != str(FORMAT_VERSION):
        raise ValueError(f"format version {meta.get('version')}; this fedlora-ray reads {FORMAT_VERSION}")
    if meta.get("kind") != kind:
        raise ValueError(f"holds a {meta.get('kind')!r}, not a {kind!r}")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ValueError(f"its tensors cannot be read ({err})") from None
    try:
        if _digest(meta["tree"], tensors) != meta.get("sha256"):
            raise ValueError("checksum mismatch: its content changed after it was written")
        return _Decoder(tensors, types).decode(json.loads(meta["tree"]))
    except (
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        RuntimeError,
    ) as err:  # not this version's layout
        raise ValueError(f"its content does not match this version's layout ({err!r})") from None


def read_tensor_file(
    path: str | os.PathLike[str], kind: str, types: Mapping[str, type] | None = {}, remedy: str = ""
) -> Any:
    """The tree held in the tensor file ``path``, verified; DamagedFileError (the file, what is
    wrong, ``remedy``) when it is not whole and unchanged."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DamagedFileError(path, "missing", remedy) from None
    except OSError as err:
        raise DamagedFileError(path, f"cannot be read ({err.strerror or err})", remedy) from None
    try:
        return decode_tensor_file(data, kind, types)
    except ValueError as err:
        raise DamagedFileError(path, str(err), remedy) from None
