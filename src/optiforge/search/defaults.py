"""The default space of ``optiforge optimize``, by model family, objective and what is installed.

* classifier (MLP, CNN), speed and memory: the precisions the device has units for (bf16 on CUDA and on
  CPUs with AMX or AVX-512 BF16 — elsewhere bf16 is emulated and slower than float32; fp16 on CUDA), int8
  dynamic (PyTorch) and static per installed engine (PyTorch, ONNX Runtime, OpenVINO through NNCF),
  structured pruning of 30%, 50% and 70% of the channels with a fine-tune repair (one, two and eight times
  the fine-tune epochs), each combined with every precision; low rank (half the rank, fine-tuned) alone
  and with int8.
* classifier, size: Deep Compression (Han et al., 2016, https://arxiv.org/abs/1510.00149): gradual
  magnitude pruning to 90%, 95% and 97% zeros during ten times the fine-tune epochs, then k-means weight
  sharing with 16 or 8 values per layer (biases too), fine-tuned; also structured pruning of 50% of the
  channels with and without sharing, and static int8 alone and after that pruning. The size measured is
  the packed file each compression stage writes (zeros and shared values entropy-coded).
* pretrained (a pretrained network judged by fidelity to its own float outputs, as EfficientNet-Lite0 on
  ``photos``): post-training forms only, since its recipe trains nothing and fine-tuning a pretrained network
  on a few hundred unlabelled views costs more than the whole search: the precisions and int8 forms of the
  classifier space, bf16 in OpenVINO on a CPU with bf16 units, and OpenVINO int8 with the k layers whose int8
  costs the most fidelity kept float (k in ``KEPT_FLOAT``, the layers ranked once on the validation data);
  for size, the int8 forms and NNCF's int8 and int4 weight compression.
* encoder (a sentence encoder): its runtime forms: padding-free execution, ONNX Runtime int8 with and
  without SmoothQuant (and with its two most sensitive layers kept float), OpenVINO int8 (NNCF) without
  padding when OpenVINO and NNCF are installed, and the float graph; on a CPU with bf16 units, OpenVINO's
  padding-free graph in bf16 too, float and int8 (the ops left float in bf16).

Fine-tuning inside the space runs ``finetune.epochs`` epochs (default 2); the proxy of successive halving
runs half of them.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from optiforge.hardware.capabilities import cpu_has_bf16

FAMILIES = ("classifier", "pretrained", "encoder")
# gradual magnitude pruning needs many epochs to reach 90%+ zeros without losing accuracy:
# the compress recipe prunes over 20 epochs, ten times the default fine-tune
GRADUAL_EPOCHS_FACTOR = 10
DEEP_SPARSITIES = (0.9, 0.95, 0.97)
SHARED_VALUES = (16, 8)
# share of channels removed -> fine-tune epochs as a multiple of ``finetune_epochs``: the deeper the cut,
# the longer the repair (the compression benchmark's 60% cut of the MNIST-1D CNN took 15 epochs to stay
# within a point of its accuracy; 70% after 8 epochs lost 1.5 points of the MNIST-1D CNN's validation accuracy)
STRUCTURED_REPAIRS = {0.3: 1, 0.5: 2, 0.7: 8}
# layers kept float in OpenVINO int8 of a pretrained network: EfficientNet-Lite0 (50 weighted layers)
# loses 17 points of top-1 agreement with every layer int8 and keeps 97.6% with 11 chosen by hand
KEPT_FLOAT = (4, 8, 12, 16)


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
    if objective == "memory":  # ONNX Runtime and OpenVINO allocate their own memory, not PyTorch's to measure
        return variants
    if _installed("onnxruntime"):  # its static int8 beats its dynamic form on every model measured: only static
        variants.append({"scheme": "int8_static", "engine": "onnxruntime"})
    if not cuda and _installed("openvino") and _installed("nncf"):
        variants.append({"scheme": "int8_static", "engine": "openvino"})
    return variants


def encoder_runtimes(objective: str) -> list[dict]:
    """The ``encoder_runtime`` configs of the encoder space (none for memory: the runtimes allocate their own)."""
    if objective == "memory":
        return []
    smoothed = {"quantize": "int8_dynamic", "remove_padding": True, "smoothing": {"alpha": 0.8}}
    runtimes: list[dict] = [
        {"quantize": "none", "remove_padding": False},
        {"quantize": "none", "remove_padding": True},
        {"quantize": "int8_dynamic", "remove_padding": True},
        smoothed,
        # the two layers whose int8 costs the most fidelity kept float (ranked once, on the validation data)
        {**smoothed, "layers": {"float_most_sensitive": 2}},
        {**smoothed, "remove_padding": False},
    ]
    if _installed("openvino") and _installed("nncf"):
        runtimes.append({"engine": "openvino", "quantize": "int8_static", "remove_padding": True})
        if cpu_has_bf16():
            runtimes += [
                {"engine": "openvino", "quantize": quantize, "remove_padding": True, "session": {"precision": "bf16"}}
                for quantize in ("none", "int8_static")
            ]
    return runtimes


def _size_space(finetune_epochs: int, cuda: bool) -> dict:
    structured = {
        "method": "structured",
        "sparsity": 0.5,
        "finetune": {"epochs": STRUCTURED_REPAIRS[0.5] * finetune_epochs},
    }
    gradual = {
        "method": "magnitude",
        "schedule": "gradual",
        "finetune": {"epochs": GRADUAL_EPOCHS_FACTOR * finetune_epochs},
    }
    share_epochs = max(1, (5 * finetune_epochs + 1) // 2)  # the compress recipe's 5 at the default 2
    options: dict[str, list[Any]] = {
        "prune": ["none", structured, *({**gradual, "sparsity": sparsity} for sparsity in DEEP_SPARSITIES)],
        "share": [
            "none",
            *({"clusters": k, "include_bias": True, "finetune": {"epochs": share_epochs}} for k in SHARED_VALUES),
        ],
    }
    int8 = [v for v in quantize_variants("size", cuda) if isinstance(v, dict) and v["scheme"] == "int8_static"]
    candidates: list[list[Any]] = []
    if int8:  # a dense int8 file: a quarter of float32 without any training
        candidates += [[{"quantize": int8[0]}], [{"prune": structured}, {"quantize": int8[0]}]]
    return {"options": options, "candidates": candidates}


def _post_training_space(objective: str, cuda: bool) -> dict:
    openvino = not cuda and _installed("openvino") and _installed("nncf")
    variants = quantize_variants(objective, cuda)
    if objective == "size":
        variants = [v for v in variants if isinstance(v, dict) and v["scheme"] == "int8_static"]
        if openvino:
            compressed = ("int8_weight_only", "int4_weight_only")
            variants += [{"scheme": scheme, "engine": "openvino"} for scheme in compressed]
        return {"options": {"quantize": ["none", *variants]}}
    if openvino and objective != "memory":
        if cpu_has_bf16():
            variants.append({"scheme": "bf16", "engine": "openvino"})
        variants += [
            {"scheme": "int8_static", "engine": "openvino", "layers": {"float_most_sensitive": k}} for k in KEPT_FLOAT
        ]
    return {"options": {"quantize": variants}}


def default_space(family: str, objective: str, *, finetune_epochs: int = 2, cuda: bool | None = None) -> dict:
    """The fields of a :class:`~optiforge.search.SearchConfig` space (``stages``, ``options``, ``candidates``).

    >>> space = default_space("classifier", "size", cuda=False)
    >>> sorted(space["options"])
    ['prune', 'share']
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if family == "encoder":
        runtimes = encoder_runtimes(objective)
        return {"options": {"encoder_runtime": runtimes}} if runtimes else {}
    if family == "pretrained":
        return _post_training_space(objective, cuda)
    if family != "classifier":
        raise ValueError(f"unknown model family '{family}'; known: {', '.join(FAMILIES)}")
    if objective == "size":
        return _size_space(finetune_epochs, cuda)
    options: dict[str, list[Any]] = {
        "prune": [
            "none",
            *(
                {"method": "structured", "sparsity": sparsity, "finetune": {"epochs": factor * finetune_epochs}}
                for sparsity, factor in STRUCTURED_REPAIRS.items()
            ),
        ],
        "quantize": quantize_variants(objective, cuda),
    }
    low_rank = {"factorize": {"rank_ratio": 0.5, "finetune": {"epochs": finetune_epochs}}}
    candidates: list[list[Any]] = [[low_rank]]
    if not cuda:
        candidates.append([low_rank, {"quantize": {"scheme": "int8_dynamic", "engine": "torch"}}])
    return {"options": options, "candidates": candidates}
