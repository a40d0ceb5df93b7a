"""The architecture section of a packed file: the module tree stored without tensors or hooks, and rebuilt
from an exact allowlist so that loading a file from anyone runs no code from it."""

from __future__ import annotations

import copy
import functools
import importlib
import io
import pickle
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.compress.packed_format import PackedFileError
from optiforge.errors import ModelError

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


def _flatten_recurrent(model: nn.Module) -> None:
    """GRU/LSTM/RNN layers given loaded tensors must rebuild their flat weights before they run."""
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()
            module.flatten_parameters()
