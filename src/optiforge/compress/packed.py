"""The packed file: what compression made cheap, stored cheaply, and checked on load.

Layout (all integers little-endian; see docs/compression.md):

    magic      8 bytes   b"OFPACK" + format version (uint16)
    checksum   8 bytes   BLAKE2b-64 of every byte after it
    sections   uint32 count, then one uint32 compressed length per section
    body       the sections, each a zstandard frame:
               0 header (JSON), 1 architecture, 2 positions, 3 indices, 4 codebooks, 5 values

The header lists every tensor with its encoding and its byte ranges in the
(decompressed) sections. Encodings are chosen per tensor and are lossless:
``dense`` (byte-shuffled values; float16 when every float32 value is exactly
a float16), ``sparse`` (positions + non-zero values), ``shared`` (codebook +
⌈log2 k⌉-bit indices) and ``sparse_shared`` (positions + codebook + indices).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import io
import json
import pickle
import struct
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard
from torch import nn

from optiforge.compress import codec
from optiforge.errors import ModelError, OptiforgeError
from optiforge.exporters.base import register_exporter
from optiforge.files import atomic_write

MAGIC = b"OFPACK"
VERSION = 1
SECTIONS = ("header", "architecture", "positions", "indices", "codebooks", "values")
_LEVEL = 19


class PackedFileError(OptiforgeError):
    """A packed file is corrupted, truncated, or does not fit the model given."""


class _Streams:
    """Byte streams being built; ``add`` returns the [offset, length] of what it appended."""

    def __init__(self) -> None:
        self.parts: dict[str, bytearray] = {name: bytearray() for name in SECTIONS[2:]}

    def add(self, section: str, data: bytes) -> list[int]:
        start = len(self.parts[section])
        self.parts[section] += data
        return [start, len(data)]


def _exact_half(values: torch.Tensor) -> torch.Tensor | None:
    """``values`` as float16 when that loses nothing, else None."""
    if values.dtype != torch.float32:
        return None
    half = values.half()
    return half if torch.equal(codec.bit_view(half.float()), codec.bit_view(values)) else None


def _encode_values(values: torch.Tensor, streams: _Streams, record: dict) -> None:
    """Store float or integer values: shared through a codebook, or dense."""
    count = values.numel()
    width = values.element_size()
    half = _exact_half(values) if values.is_floating_point() else None
    dense_bytes = count * (2 if half is not None else width)
    if values.is_floating_point() and count:
        unique, inverse = torch.unique(codec.bit_view(values), return_inverse=True)
        k = unique.numel()
        bit_count = codec.index_bits(max(k, 2))
        # a codebook pays when the indices plus the codebook are clearly smaller than the values
        if k <= 65536 and count * bit_count / 8 + k * width < 0.75 * dense_bytes:
            record["codebook"] = streams.add("codebooks", codec.raw_bytes(unique.view(values.dtype)))
            record["k"], record["bits"] = k, bit_count
            record["indices"] = streams.add("indices", codec.pack_indices(inverse.numpy(), bit_count))
            return
    if half is not None:
        record["stored_as"] = "float16"
        record["values"] = streams.add("values", codec.shuffle_bytes(codec.raw_bytes(half), 2))
        return
    record["values"] = streams.add("values", codec.shuffle_bytes(codec.raw_bytes(values), width))


def _encode_tensor(name: str, tensor: torch.Tensor, streams: _Streams) -> dict:
    tensor = tensor.detach().cpu().contiguous()
    record: dict[str, Any] = {"name": name, "dtype": codec.dtype_name(tensor.dtype), "shape": list(tensor.shape)}
    flat = tensor.view(-1)
    if tensor.dtype == torch.bool or tensor.dtype not in codec.DTYPES.values():
        if tensor.dtype not in codec.DTYPES.values():
            raise ModelError(f"packed format: tensor '{name}' has dtype {tensor.dtype}, which it cannot store")
        record["encoding"] = "dense"
        record["values"] = streams.add("values", codec.raw_bytes(flat))
        return record
    keep = flat != 0  # -0.0 counts as zero and comes back as +0.0, equal in value
    stored = int(keep.sum())
    if tensor.is_floating_point() and stored < 0.6 * flat.numel():
        bitmap, gaps = codec.bitmap_encode(keep), codec.gaps_encode(keep)
        use_gaps = codec.quick_size(gaps) < codec.quick_size(bitmap)
        record["positions"] = streams.add("positions", gaps if use_gaps else bitmap)
        record["position_code"] = "gaps" if use_gaps else "bitmap"
        flat = flat[keep]
    _encode_values(flat, streams, record)
    sparse, shared = "positions" in record, "codebook" in record
    record["encoding"] = {
        (False, False): "dense",
        (True, False): "sparse",
        (False, True): "shared",
        (True, True): "sparse_shared",
    }[(sparse, shared)]
    return record


def _decode_tensor(record: dict, sections: dict[str, bytes]) -> torch.Tensor:
    dtype = codec.DTYPES[record["dtype"]]
    shape = record["shape"]
    count = int(np.prod(shape)) if shape else 1

    def part(section: str, key: str) -> bytes:
        start, length = record[key]
        return sections[section][start : start + length]

    keep = None
    stored = count
    if "positions" in record:
        data = part("positions", "positions")
        keep = codec.gaps_decode(data, count) if record["position_code"] == "gaps" else codec.bitmap_decode(data, count)
        stored = int(keep.sum())
    if "codebook" in record:
        codebook = codec.from_bytes(part("codebooks", "codebook"), dtype, record["k"])
        indices = codec.unpack_indices(part("indices", "indices"), record["bits"], stored)
        values = codebook[torch.from_numpy(indices)]
    elif record.get("stored_as") == "float16":
        raw = codec.unshuffle_bytes(part("values", "values"), 2)
        values = codec.from_bytes(raw, torch.float16, stored).float()
    else:
        width = torch.empty(0, dtype=dtype).element_size()
        raw = part("values", "values")
        if dtype != torch.bool:
            raw = codec.unshuffle_bytes(raw, width)
        values = codec.from_bytes(raw, dtype, stored)
    if keep is None:
        return values.view(shape)
    full = torch.zeros(count, dtype=dtype)
    full[keep] = values
    return full.view(shape)


# empty hook containers that nn.Module.__setstate__ re-creates (two more are re-created by _restore_hooks)
_REBUILT = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
    "_non_persistent_buffers_set",
    "_is_full_backward_hook",
    "_backward_pre_hooks",
    "_forward_hooks",
    "_backward_hooks",
)


def _skeleton(model: nn.Module) -> bytes:
    """The module tree without its tensors (they go to the other sections) and without empty hook tables."""
    memo = {id(tensor): None for tensor in list(model.parameters()) + list(model.buffers())}
    hooks = [name for name, module in model.named_modules() if module._forward_hooks or module._forward_pre_hooks]
    if hooks:
        raise ModelError(
            f"packed format: layer '{hooks[0] or type(model).__name__}' has forward hooks, which "
            "cannot be stored; remove them (e.g. torch.nn.utils.prune.remove) first"
        )
    skeleton = copy.deepcopy(model, memo).eval()  # the mode is not part of what is stored: files stay reproducible
    for module in skeleton.modules():
        if type(module).__setstate__ is nn.Module.__setstate__:
            for key in _REBUILT:
                if key in module.__dict__ and not module.__dict__[key]:
                    del module.__dict__[key]
    return pickle.dumps(skeleton, protocol=pickle.HIGHEST_PROTOCOL)


_RUN_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _refuse_hooks(model: nn.Module, path: Path) -> None:
    """:func:`write_packed` stores no hooks, so a stored hook was put there by hand: it would run on forward."""
    for name, module in model.named_modules():
        tables = [key for key in _RUN_HOOKS if vars(module).get(key)]
        if tables:
            where = f"'{path}': layer '{name or type(model).__name__}'"
            raise PackedFileError(f"{where} carries {tables[0]}, which packed files never hold")


def _restore_hooks(model: nn.Module) -> None:
    for module in model.modules():
        for key in ("_forward_hooks", "_backward_hooks"):
            if key not in module.__dict__:
                module.__dict__[key] = OrderedDict()


def _refuse_graphs(model: nn.Module, path: Path) -> None:
    from optiforge.exporters.onnx import OnnxModule

    for name, module in model.named_modules():
        if isinstance(module, OnnxModule):
            where = f"layer '{name}'" if name else type(model).__name__
            raise ModelError(
                f"packed: '{path}': {where} is an ONNX Runtime graph, whose weights are not PyTorch tensors a packed "
                "file could hold; export it with format 'onnx'"
            )


def write_packed(model: nn.Module, path: str | Path, applied: Sequence[dict] = ()) -> Path:
    """Write ``model`` (architecture and every parameter and buffer) as a packed file.

    ``applied`` lists the compression configs applied to the model, oldest
    first (``[result.applied, ...]`` of the ``*_with_result`` verbs); the
    header keeps them under ``compression``.

    >>> import torch, optiforge
    >>> from optiforge.compress import write_packed, load_packed
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> path = write_packed(model, "/tmp/of-doc.ofpk")
    >>> torch.equal(load_packed(path)[0].weight, model[0].weight)
    True

    A model whose weights live outside PyTorch tensors (an ONNX Runtime graph)
    is refused: the file would hold no tensors.
    """
    _refuse_graphs(model, Path(path))
    streams = _Streams()
    records, seen = [], {}
    named = [("param", name, tensor) for name, tensor in model.named_parameters(remove_duplicate=False)]
    named += [("buffer", name, tensor) for name, tensor in model.named_buffers(remove_duplicate=False)]
    for kind, name, tensor in named:
        if tensor is None:
            continue
        if id(tensor) in seen:  # tied weights are stored once
            seen[id(tensor)].setdefault("aliases", []).append(name)
            continue
        record = _encode_tensor(name, tensor, streams)
        record["kind"] = kind
        if kind == "param" and not tensor.requires_grad:
            record["frozen"] = True
        records.append(record)
        seen[id(tensor)] = record
    header = {
        "format": "optiforge-packed",
        "version": VERSION,
        "torch": torch.__version__,
        "model": type(model).__name__,
        "compression": list(applied),
        "tensors": records,
    }
    raw = [json.dumps(header, separators=(",", ":")).encode(), _skeleton(model)]
    raw += [bytes(streams.parts[name]) for name in SECTIONS[2:]]
    compressor = zstandard.ZstdCompressor(level=_LEVEL)
    frames = [compressor.compress(data) for data in raw]
    table = struct.pack(f"<I{len(frames)}I", len(frames), *(len(frame) for frame in frames))
    body = table + b"".join(frames)
    digest = hashlib.blake2b(body, digest_size=8).digest()
    content = MAGIC + struct.pack("<H", VERSION) + digest + body
    return atomic_write(path, lambda file: file.write(content))


def _read_sections(path: Path) -> tuple[dict, dict[str, bytes]]:
    if not path.is_file():
        raise PackedFileError(f"no packed file '{path}'")
    content = path.read_bytes()
    if len(content) < 20 or content[:6] != MAGIC:
        raise PackedFileError(f"'{path}' is not an optiforge packed file (wrong magic bytes)")
    (version,) = struct.unpack("<H", content[6:8])
    if version > VERSION:
        raise PackedFileError(f"'{path}' is packed format version {version}; this optiforge reads up to {VERSION}")
    body = content[16:]
    if hashlib.blake2b(body, digest_size=8).digest() != content[8:16]:
        raise PackedFileError(f"'{path}' is corrupted (checksum mismatch); refusing to load it")
    try:  # past the checksum only a file written on purpose can be malformed; it gets one error, not a traceback
        (count,) = struct.unpack("<I", body[:4])
        lengths = struct.unpack(f"<{count}I", body[4 : 4 + 4 * count])
        offset, sections = 4 + 4 * count, {}
        decompressor = zstandard.ZstdDecompressor()
        for name, length in zip(SECTIONS, lengths, strict=True):
            sections[name] = decompressor.decompress(body[offset : offset + length])
            offset += length
        header = json.loads(sections["header"])
    except (struct.error, zstandard.ZstdError, ValueError) as error:
        raise PackedFileError(f"'{path}' is malformed ({type(error).__name__}: {error})") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise PackedFileError(f"'{path}' is malformed (its header lists no tensors)")
    return header, sections


def _decoded(header: dict, sections: dict[str, bytes], path: Path) -> list[tuple[dict, torch.Tensor]]:
    """(record, tensor) for every tensor record in the header."""
    try:
        return [(record, _decode_tensor(record, sections)) for record in header["tensors"]]
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise PackedFileError(f"'{path}' holds a malformed tensor record ({type(error).__name__}: {error})") from None


def describe_packed(path: str | Path) -> dict:
    """The header of a packed file (tensors, encodings, byte ranges), after checking it."""
    header, sections = _read_sections(Path(path))
    header["section_bytes"] = {name: len(data) for name, data in sections.items()}
    return header


def read_packed_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Name → tensor for every parameter and buffer in a packed file (aliases included)."""
    header, sections = _read_sections(Path(path))
    tensors = {}
    for record, tensor in _decoded(header, sections, Path(path)):
        for name in [record["name"], *record.get("aliases", [])]:
            tensors[name] = tensor
    return tensors


# optiforge's own module classes that a packed architecture may name (module, qualified name)
_OPTIFORGE_MODULES = frozenset(
    {
        ("optiforge.encoders.smoothing", "SmoothedLinear"),
        ("optiforge.encoders.unpadded", "FusedQKV"),
        ("optiforge.encoders.unpadded", "UnpaddedAttention"),
        ("optiforge.encoders.unpadded", "UnpaddedLayer"),
        ("optiforge.encoders.unpadded", "UnpaddedEncoderStack"),
        ("optiforge.encoders.unpadded", "UnpaddedBert"),
        ("optiforge.distillation.hints", "HintAdapter"),
        ("optiforge.distillation.callback", "DistillationStudent"),
    }
)
# what module attributes hold besides modules: activation functions (e.g. TransformerEncoderLayer.activation)
_FUNCTIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "softmax")
_RISK = "trusted=True runs code from the file; use it only for files you made"


@functools.cache
def _torch_allowlist() -> tuple[dict[tuple[str, str], Any], frozenset[int]]:
    """Exact (module, qualified name) → object for what a stored architecture may name, and the ids of the
    few of them that the file may call (containers and value types; never a module class)."""
    allowed: dict[tuple[str, str], Any] = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("torch.nn.modules.") or module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module_name:
                allowed[(value.__module__, value.__qualname__)] = value
    for name in _FUNCTIONS:
        allowed[("torch.nn.functional", name)] = getattr(torch.nn.functional, name)
    for name, value in vars(torch).items():
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    callables = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    allowed.update(callables)
    return allowed, frozenset(id(value) for value in callables.values())


class _ArchitectureUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so each opcode can be checked
    """Rebuilds a module tree from exact allowlisted names only; nothing in the file is called but containers.

    A name is looked up as one exact ``(module, qualified name)`` pair, never as a dotted path, so
    ``optiforge.cli`` + ``os.system`` is refused. Modules are created with ``cls.__new__`` and filled by
    ``nn.Module.__setstate__``; their constructors never run.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.path = path

    def refuse(self, what: str) -> PackedFileError:
        return PackedFileError(
            f"'{self.path}': the stored architecture {what}, which load_packed does not rebuild by default; "
            f"pass model=<a module of the same architecture>, or trusted=True ({_RISK})"
        )

    def find_class(self, module: str, name: str) -> Any:
        allowed, _ = _torch_allowlist()
        if (module, name) in allowed:
            return allowed[(module, name)]
        if (module, name) in _OPTIFORGE_MODULES:
            found = getattr(importlib.import_module(module), name)
            if isinstance(found, type) and issubclass(found, nn.Module):
                return found
        raise self.refuse(f"uses {module}:{name}")

    def _load_reduce(self) -> None:
        if id(self.stack[-2]) not in _torch_allowlist()[1]:
            raise self.refuse(f"calls {getattr(self.stack[-2], '__qualname__', type(self.stack[-2]).__name__)}")
        pickle._Unpickler.load_reduce(self)

    def _load_newobj(self) -> None:
        cls = self.stack[-2]
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise self.refuse(f"creates {getattr(cls, '__qualname__', type(cls).__name__)} objects")
        pickle._Unpickler.load_newobj(self)

    def _load_build(self) -> None:
        if not isinstance(self.stack[-2], (nn.Module, OrderedDict)):
            raise self.refuse(f"sets the state of a {type(self.stack[-2]).__name__}")
        pickle._Unpickler.load_build(self)

    def _load_refused(self) -> None:
        raise self.refuse("uses a pickle instruction that can call classes (INST, OBJ, NEWOBJ_EX or PERSID)")

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.BUILD[0]] = _load_build
    for _opcode in (pickle.INST, pickle.OBJ, pickle.NEWOBJ_EX, pickle.PERSID, pickle.BINPERSID):
        dispatch[_opcode[0]] = _load_refused
    del _opcode


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor, kind: str) -> None:
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if kind == "param":
        owner._parameters[attribute] = tensor
    else:
        owner._buffers[attribute] = tensor


def load_packed(path: str | Path, model: nn.Module | None = None, *, trusted: bool = False) -> nn.Module:
    """Rebuild the module stored by :func:`write_packed`; its outputs equal the original's.

    With ``model`` the tensors are loaded into that module (same architecture
    required) and the stored architecture is not read. Otherwise the stored
    architecture is rebuilt from an exact allowlist (torch.nn layer classes,
    optiforge's module classes, a few activation functions, containers); no
    constructor and nothing else named in the file is called, so loading a file
    from anyone cannot run code. ``trusted=True`` allows any class, and so
    **runs code from the file**: use it only for files you made.

    The checksum detects corruption; it has no key, so it says nothing about
    who wrote the file.
    """
    path = Path(path)
    header, sections = _read_sections(path)
    if model is None:
        data = sections["architecture"]
        try:
            model = pickle.loads(data) if trusted else _ArchitectureUnpickler(data, path).load()
        except PackedFileError:
            raise
        except Exception as error:
            raise PackedFileError(
                f"'{path}': the stored architecture cannot be rebuilt ({type(error).__name__}: {error})"
            ) from None
        if not isinstance(model, nn.Module):
            raise PackedFileError(f"'{path}': the stored architecture is a {type(model).__name__}, not a module")
        for record, tensor in _decoded(header, sections, path):
            if record["kind"] == "param":  # one Parameter for all its names keeps tied weights tied
                tensor = nn.Parameter(tensor, requires_grad=not record.get("frozen", False))
            for name in [record["name"], *record.get("aliases", [])]:
                try:
                    _set_tensor(model, name, tensor, record["kind"])
                except (AttributeError, TypeError) as error:
                    raise PackedFileError(
                        f"'{path}': tensor '{name}' has no place in the stored architecture"
                    ) from error
        _refuse_hooks(model, path)
        _restore_hooks(model)
        _flatten_recurrent(model)
        return model.eval()
    tensors = {
        name: tensor
        for record, tensor in _decoded(header, sections, path)
        for name in [record["name"], *record.get("aliases", [])]
    }
    current = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    missing = sorted(set(current) - set(tensors))
    if missing or any(tensors[name].shape != current[name].shape for name in current):
        wrong = missing[0] if missing else next(n for n in current if tensors[n].shape != current[n].shape)
        raise PackedFileError(f"'{path}' does not fit the model given: tensor '{wrong}' is missing or of another shape")
    with torch.no_grad():
        for name, tensor in current.items():
            tensor.copy_(tensors[name])
    _flatten_recurrent(model)
    return model


def _flatten_recurrent(model: nn.Module) -> None:
    """GRU/LSTM/RNN layers given loaded tensors must rebuild their flat weights before they run."""
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()
            module.flatten_parameters()


@register_exporter("packed", ".ofpk")
def export_packed(model: nn.Module, path: Path, example_input: Any = None) -> Path:
    """Export format ``packed``: sparse positions, shared-value indices and the other tensors, entropy-coded."""
    return write_packed(model, path)
