"""Built-in models: an MLP, a 1-D CNN (MNIST-1D) and a LeNet-like 2-D CNN.

Builders are plain functions ``(input_shape, num_classes, **options) -> nn.Module``;
users add their own with ``MODELS.register("name")`` or a ``factory`` path.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from optiforge.config import ModelConfig
from optiforge.data.builtin import TaskData, call_with_options
from optiforge.errors import ConfigError, DataError, ModelError
from optiforge.models.sources import build_from_source
from optiforge.models.weights import load_checkpoint_into
from optiforge.registry import Registry, import_factory

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

BYTES_PER_PARAMETER = 4  # float32


def _sizes(values: object, field: str, builder: str) -> list[int]:
    """A list of positive layer sizes, or a ConfigError naming the field and the value."""
    if isinstance(values, (list, tuple)) and all(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1 for value in values
    ):
        return list(values)
    raise ConfigError(f"model.{field}: {builder} needs a list of positive integers, e.g. [64, 32] (got {values!r:.80})")


def _positive(value: object, field: str, builder: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"model.{field}: {builder} needs a positive integer (got {value!r:.80})")


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_parameter_memory(parameters: int, builder: str) -> None:
    """Refuse a model whose float32 weights alone cannot fit in this machine's memory, before allocating them."""
    available = memory_bytes()
    needed = parameters * BYTES_PER_PARAMETER
    if available is not None and needed > available:
        raise ConfigError(
            f"model: this {builder} would have {parameters:,} parameters, about {needed / 1e9:,.1f} GB of float32 "
            f"weights (more with gradients and optimizer state), but this machine has {available / 1e9:.1f} GB "
            "of memory; choose smaller layer sizes"
        )


@MODELS.register("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: list[int] = (256, 128),
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Module:
    """Flatten → [Linear → activation (→ Dropout)] per hidden size → Linear."""
    activations = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
    if not isinstance(activation, str) or activation not in activations:
        raise ConfigError(f"model.activation: unknown {activation!r:.80}; allowed: {', '.join(activations)}")
    hidden = _sizes(hidden, "hidden", "mlp")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout: a probability in [0, 1) (got {dropout!r:.80})")
    widths = [math.prod(input_shape), *hidden, num_classes]
    check_parameter_memory(sum(width * size + size for width, size in itertools.pairwise(widths)), "mlp")
    layers: list[nn.Module] = [nn.Flatten()]
    width = widths[0]
    for size in hidden:
        layers += [nn.Linear(width, size), activations[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@MODELS.register("cnn1d")
def cnn1d(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: list[int] = (32, 64, 64),
    kernel_size: int = 5,
    batch_norm: bool = True,
    stride: int = 2,
) -> nn.Module:
    """Conv1d blocks (conv → BatchNorm → ReLU, strided) then a linear head.

    For MNIST-1D ``(1, 40)`` inputs; the published baseline CNN reaches about 94%.
    """
    if len(input_shape) != 2:
        raise DataError(f"model cnn1d needs inputs of shape (channels, length), the data gives {input_shape}")
    channels = _sizes(channels, "channels", "cnn1d")
    kernel_size = _positive(kernel_size, "kernel_size", "cnn1d")
    stride = _positive(stride, "stride", "cnn1d")
    in_channels, length = input_shape
    parameters, width = 0, in_channels
    for out_channels in channels:
        parameters += width * out_channels * kernel_size + out_channels * (3 if batch_norm else 1)
        width, length = out_channels, (length + 2 * (kernel_size // 2) - kernel_size) // stride + 1
    check_parameter_memory(parameters + width * length * num_classes + num_classes, "cnn1d")
    layers: list[nn.Module] = []
    in_channels, length = input_shape
    for out_channels in channels:
        layers.append(nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2))
        if batch_norm:
            layers.append(nn.BatchNorm1d(out_channels))
        layers.append(nn.ReLU())
        in_channels = out_channels
        length = (length + 2 * (kernel_size // 2) - kernel_size) // stride + 1
    layers += [nn.Flatten(), nn.Linear(in_channels * length, num_classes)]
    return nn.Sequential(*layers)


@MODELS.register("cnn2d")
def cnn2d(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: list[int] = (16, 32),
    hidden: int = 64,
) -> nn.Module:
    """LeNet-like: two conv → ReLU → max-pool blocks, then two linear layers."""
    if len(input_shape) != 3:
        raise DataError(
            f"model cnn2d needs image inputs (channels, height, width), the data gives {input_shape}; "
            "for digits set data.image: true"
        )
    channels = _sizes(channels, "channels", "cnn2d")
    hidden = _positive(hidden, "hidden", "cnn2d")
    in_channels, height, width = input_shape
    parameters = 0
    for out_channels in channels:
        parameters += in_channels * out_channels * 9 + out_channels
        in_channels, height, width = out_channels, height // 2, width // 2
    check_parameter_memory(
        parameters + in_channels * max(height * width, 1) * hidden + hidden * (num_classes + 1), "cnn2d"
    )
    in_channels, height, width = input_shape
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        in_channels, height, width = out_channels, height // 2, width // 2
    if height < 1 or width < 1:
        raise DataError(f"model cnn2d: {len(channels)} pooling blocks are too many for {input_shape} inputs")
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def _packed_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weight and bias an int8 module holds outside ``parameters()``: packed (PyTorch) or a buffer (torchao)."""
    weight_bias = getattr(module, "_weight_bias", None)
    if type(module).__name__.endswith("PackedParams"):
        return []  # its owner (the quantized Linear) reports them
    if callable(weight_bias):
        try:
            tensors = weight_bias()
        except (RuntimeError, TypeError, AttributeError):
            return []
        return [tensor for tensor in tensors if isinstance(tensor, torch.Tensor)]
    weight = module._buffers.get("weight") if isinstance(module, nn.Linear) else None
    return [weight] if isinstance(weight, torch.Tensor) else []


def _nonzero(tensor: torch.Tensor) -> int:
    if tensor.is_quantized:
        tensor = tensor.int_repr()
    try:
        return int(torch.count_nonzero(tensor.detach()).item())
    except (RuntimeError, NotImplementedError, TypeError):  # a quantized tensor subclass without count_nonzero
        return tensor.numel()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), shared tensors counted once.

    int8 modules hold their weights outside ``parameters()`` (PyTorch's packed params, torchao's
    buffers); those weights and biases are counted too, so an int8 model has as many parameters as
    the float one.
    """
    seen: set[int] = set()
    total = nonzero = 0
    tensors = list(model.parameters())
    for module in model.modules():
        tensors += _packed_weights(module)
    for tensor in tensors:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel()
        nonzero += _nonzero(tensor)
    return total, nonzero


def check_fits(model: nn.Module, data: TaskData, where: str = "model") -> None:
    """Run one real example through the model; name the mismatch if it fails."""
    inputs = data.example_input(2)
    model_was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(inputs)
    except Exception as error:
        raise DataError(
            f"{where}: the data's inputs of shape {tuple(data.input_shape)} do not fit the model "
            f"({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    finally:
        model.train(model_was_training)
    if data.task == "classification":
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[1] != data.num_classes:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise DataError(
                f"{where}: the model gives outputs of shape {shape}, the data has {data.num_classes} classes "
                f"(expected (batch, {data.num_classes}))"
            )


def _build_registered(config: ModelConfig, data: TaskData, where: str) -> nn.Module:
    if config.factory:
        builder = import_factory(config.factory, f"{where}.factory")
    else:
        builder = MODELS.get(config.name or "", field=f"{where}.name")
    try:
        return call_with_options(
            builder, config.options, where, input_shape=data.input_shape, num_classes=data.num_classes
        )
    except (ConfigError, DataError, ModelError):
        raise
    except (Exception, SystemExit) as error:
        if config.factory:  # a user factory failing is a model problem, not a bug of ours
            raise ModelError(f"{where}.factory '{config.factory}' failed: {type(error).__name__}: {error}") from None
        if isinstance(error, TypeError):
            raise ConfigError(f"{where}: cannot build '{config.name}': {error}") from None
        raise


def build_model(config: ModelConfig, data: TaskData, where: str = "model") -> nn.Module:
    """Build the model a ``model:`` section describes (its one source), sized for ``data``."""
    if config.name is None and config.factory is None:
        model = build_from_source(config, data, where)
    else:
        model = _build_registered(config, data, where)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{where}: the builder returned {type(model).__name__}, not an nn.Module")
    if config.checkpoint:
        path = Path(config.checkpoint)
        if not path.is_file():
            raise ConfigError(f"{where}.checkpoint: no file '{path}'")
        load_checkpoint_into(model, path, f"{where}.checkpoint")
    check_fits(model, data, where)
    return model
