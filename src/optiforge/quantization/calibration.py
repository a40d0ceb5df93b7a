"""Calibration batches from a loader of any structure, and activation observers.

A loader may yield a tensor, an ``(inputs, targets)`` pair or a mapping of
named tensors (a tokenizer's ``input_ids``/``attention_mask``); ``model_inputs``
takes what the model's forward receives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from optiforge.errors import ConfigError, DataError

# the percentile observer clips the rarest 0.01% of activation values on each side
PERCENTILE = 99.99


def model_inputs(batch: Any) -> Any:
    """What the model's forward receives from one loader batch."""
    if isinstance(batch, (torch.Tensor, Mapping)):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise DataError(
        f"calibration: a batch must be a tensor, a mapping or an (inputs, targets) pair, got {type(batch).__name__}"
    )


def call(model: Any, inputs: Any) -> Any:
    """Run ``model`` on inputs taken from a batch (a mapping goes in as keyword arguments)."""
    if isinstance(inputs, Mapping) and not getattr(model, "takes_mapping", False):
        return model(**inputs)
    return model(inputs)


def take_batches(loader: Iterable | None, batches: int, field: str = "calibration") -> list[Any]:
    """The first ``batches`` model inputs of ``loader``; a clear error when it has none."""
    if loader is None:
        raise ConfigError(
            f"quantize: '{field}' is required for this scheme: pass a loader of model inputs "
            "(calibration=loader in Python; the stage uses the training split)"
        )
    taken = []
    for batch in loader:
        taken.append(model_inputs(batch))
        if len(taken) >= batches:
            break
    if not taken:
        raise DataError(f"quantize: the {field} loader yielded no batches")
    return taken


def check_fits(model: torch.nn.Module, inputs: Any, field: str = "calibration") -> None:
    """Run the float model on one batch; name the mismatch when it fails."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call(model, inputs)
    except Exception as error:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise DataError(
            f"quantize: the {field} batches (inputs {shape}) do not fit the model "
            f"({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    finally:
        model.train(was_training)


def _percentile_observer():
    from torch.ao.quantization.observer import MinMaxObserver

    class PercentileObserver(MinMaxObserver):
        """Range = the running mean over batches of each batch's low/high percentiles."""

        def __init__(self, percentile: float = PERCENTILE, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.percentile = percentile
            self.register_buffer("batches", torch.tensor(0))

        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            if x_orig.numel() == 0:
                return x_orig
            values = x_orig.detach().float().flatten()
            if values.numel() > 1_000_000:  # torch.quantile refuses very large inputs; a stride keeps the shape
                values = values[:: values.numel() // 1_000_000 + 1]
            levels = torch.tensor([1 - self.percentile / 100, self.percentile / 100], dtype=values.dtype)
            low, high = torch.quantile(values, levels)
            seen = int(self.batches)
            if seen == 0:
                self.min_val.copy_(low)
                self.max_val.copy_(high)
            else:
                self.min_val.copy_((self.min_val * seen + low) / (seen + 1))
                self.max_val.copy_((self.max_val * seen + high) / (seen + 1))
            self.batches += 1
            return x_orig

    return PercentileObserver


def activation_observer(name: str):
    """A torch observer class (with arguments) for the activation ranges.

    ``mse`` is PyTorch's HistogramObserver, which searches the range that
    minimises the squared quantization error over a histogram.
    """
    import torch.ao.quantization.observer as observers

    # reduce_range: x86/fbgemm int8 kernels can overflow 16-bit accumulators on CPUs
    # without VNNI; 7-bit activations avoid it (PyTorch's own x86 default does the same)
    common = {"dtype": torch.quint8, "qscheme": torch.per_tensor_affine, "reduce_range": True}
    if name == "minmax":
        return observers.MinMaxObserver.with_args(**common)
    if name == "moving_average":
        return observers.MovingAverageMinMaxObserver.with_args(**common)
    if name == "percentile":
        return _percentile_observer().with_args(**common)
    if name == "mse":
        return observers.HistogramObserver.with_args(**common)
    raise ConfigError(f"quantize.observer: unknown '{name}'; allowed: minmax, moving_average, percentile, mse")
