"""The default space of ``optiforge optimize``, by model family, objective and what is installed.

* classifier (MLP, CNN): the precisions the device has units for (bf16 on CUDA and on CPUs with AMX or
  AVX-512 BF16 — elsewhere bf16 is emulated and slower than float32; fp16 on CUDA), int8 dynamic and static
  per installed engine (PyTorch, ONNX Runtime), structured pruning of 30% and 50% of the channels with a
  fine-tune repair, each combined with every precision; low rank (half the rank, fine-tuned) alone and
  with int8; k-means weight sharing when the objective is size.
* encoder (a sentence encoder): its runtime forms: padding-free execution, ONNX Runtime int8 with and
  without SmoothQuant (and with its two most sensitive layers kept float), and the float graph.

Fine-tuning inside the space runs ``finetune.epochs`` epochs (default 2); the proxy of successive halving
runs half of them.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from optiforge.hardware.capabilities import cpu_has_bf16

FAMILIES = ("classifier", "encoder")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def quantize_variants(objective: str, cuda: bool) -> list[Any]:
    """``none`` (float) and each precision or int8 form the device and the installed engines run."""
    variants: list[Any] = ["none"]
    if cuda or cpu_has_bf16():
        variants.append({"scheme": "bf16", "engine": "torch"})
    if cuda:
        variants.append({"scheme": "fp16", "engine": "torch"})
    if not cuda:  # PyTorch's int8 kernels (x86/ARM) run on the CPU only
        variants += [{"scheme": "int8_dynamic", "engine": "torch"}, {"scheme": "int8_static", "engine": "torch"}]
    if _installed("onnxruntime") and objective != "memory":  # its memory is not PyTorch's to measure
        variants += [
            {"scheme": "int8_dynamic", "engine": "onnxruntime"},
            {"scheme": "int8_static", "engine": "onnxruntime"},
        ]
    return variants


def default_space(family: str, objective: str, *, finetune_epochs: int = 2, cuda: bool | None = None) -> dict:
    """The fields of a :class:`~optiforge.search.SearchConfig` space (``stages``, ``options``, ``candidates``).

    >>> space = default_space("classifier", "size", cuda=False)
    >>> sorted(space["options"])
    ['prune', 'quantize', 'share']
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if family == "encoder":
        runtimes = [
            {"quantize": "none", "remove_padding": False},
            {"quantize": "none", "remove_padding": True},
            {"quantize": "int8_dynamic", "remove_padding": True},
            {"quantize": "int8_dynamic", "remove_padding": True, "smoothing": {"alpha": 0.8}},
            # the two layers whose int8 costs the most fidelity kept float (ranked once, on the validation data)
            {
                "quantize": "int8_dynamic",
                "remove_padding": True,
                "smoothing": {"alpha": 0.8},
                "layers": {"float_most_sensitive": 2},
            },
            {"quantize": "int8_dynamic", "remove_padding": False, "smoothing": {"alpha": 0.8}},
        ]
        return {"options": {"encoder_runtime": runtimes}} if objective != "memory" else {}
    if family != "classifier":
        raise ValueError(f"unknown model family '{family}'; known: {', '.join(FAMILIES)}")
    repair = {"method": "structured", "finetune": {"epochs": finetune_epochs}}
    options: dict[str, list[Any]] = {"prune": ["none", {**repair, "sparsity": 0.3}, {**repair, "sparsity": 0.5}]}
    if objective == "size":
        options["share"] = ["none", {"clusters": 16, "finetune": {"epochs": finetune_epochs}}]
    options["quantize"] = quantize_variants(objective, cuda)
    low_rank = {"factorize": {"rank_ratio": 0.5, "finetune": {"epochs": finetune_epochs}}}
    candidates: list[list[Any]] = [[low_rank]]
    if not cuda:
        candidates.append([low_rank, {"quantize": {"scheme": "int8_dynamic", "engine": "torch"}}])
    return {"options": options, "candidates": candidates}
