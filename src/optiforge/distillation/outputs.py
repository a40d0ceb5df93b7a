"""What a model returns, read as the tensors distillation compares.

A transformers model returns a ``ModelOutput`` (``logits``, ``last_hidden_state``);
other models return a tensor, a dict or a tuple whose first entry is the logits.
Distillation reads the logits (or the embedding) from any of them; hidden states
are read by hints, from the layers that return them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from optiforge.errors import ModelError

# the entries tried, in order, when a model returns a mapping or a ModelOutput
_OUTPUT_KEYS = ("logits", "last_hidden_state", "pooler_output")


def output_tensor(output: Any, role: str = "model") -> torch.Tensor:
    """The logits of ``output`` (a tensor, a ``ModelOutput``, a dict or a tuple with the logits first).

    >>> import torch
    >>> output_tensor({"loss": None, "logits": torch.zeros(2, 3)}).shape
    torch.Size([2, 3])
    >>> output_tensor((torch.ones(2, 4), torch.zeros(2, 4))).sum().item()
    8.0
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) or hasattr(output, "logits"):
        for key in _OUTPUT_KEYS:
            value = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
            if isinstance(value, torch.Tensor):
                return value
        if isinstance(output, Mapping):
            for value in output.values():
                if isinstance(value, torch.Tensor):
                    return value
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ModelError(
        f"{role}: it returns {type(output).__name__}, which holds no logits; distillation reads a tensor, "
        "a ModelOutput with 'logits' or 'last_hidden_state', or a dict/tuple with the logits first"
    )
