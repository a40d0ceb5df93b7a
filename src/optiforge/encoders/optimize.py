"""The ONNX Runtime path for sentence encoders: smooth → remove padding → export → fuse → int8.

:func:`optimize_encoder` is the verb: it takes a :class:`SentenceEncoder`
and returns an :class:`OnnxSentenceEncoder` whose file is a finished ONNX
sentence encoder. Each step is a field of :class:`EncoderRuntimeConfig`:

* ``smoothing_alpha``: SmoothQuant before export (:mod:`.smoothing`);
* ``fuse``: ONNX Runtime's transformer fusions (one ``Attention`` op per
  layer, ``SkipLayerNormalization``, ``BiasGelu``, embedding + LayerNorm);
* ``quantize``: ``int8_dynamic`` (weights int8 per channel, activations
  quantized per batch at run time) or ``int8_static`` (activation ranges
  calibrated on training sentences);
* ``float_layers``: module-name patterns kept in float32 (``*`` is one name
  segment), e.g. ``encoder.layer.*.output.dense`` for the feed-forward
  output projections, the usual most sensitive matrices;
* ``remove_padding``: compute on real tokens only (:mod:`.unpadded`), exact;
  query/key/value become one ``qkv`` matrix per layer;
* ``smoothing_layers``: which layers to smooth (default all). Smoothing the
  query/key/value inputs puts a ``Mul`` inside the attention pattern, which
  then no longer fuses; smoothing only the feed-forward layers keeps the fusion.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from optiforge.config import Config
from optiforge.errors import ConfigError, DependencyError, ModelError

log = logging.getLogger("optiforge")


class SessionConfig(Config):
    """How ONNX Runtime runs the finished graph (not part of the graph itself)."""

    threads: int | None = Field(None, ge=1, description="ONNX Runtime threads (default: PyTorch's)")
    spinning: bool = Field(False, description="let ONNX Runtime threads busy-wait (helps on an idle machine only)")


class EncoderRuntimeConfig(Config):
    """How a sentence encoder is turned into a fast ONNX Runtime graph."""

    remove_padding: bool = Field(False, description="compute on real tokens only (BERT-like encoders; exact)")
    fuse: bool = Field(True, description="ONNX Runtime transformer fusions (Attention, SkipLayerNorm, ...)")
    quantize: Literal["none", "int8_dynamic", "int8_static"] = "int8_dynamic"
    per_channel: bool = True
    float_layers: list[str] = Field(default_factory=list, description="module-name patterns kept in float")
    smoothing_alpha: float | None = Field(None, ge=0.0, le=1.0, description="SmoothQuant strength; none = off")
    smoothing_layers: list[str] = Field(default_factory=list, description="module-name patterns to smooth (all)")
    calibration_batches: int = Field(8, ge=1, description="training batches for smoothing/static ranges")
    session: SessionConfig = Field(default_factory=SessionConfig, description="how the result's session runs")


def _pattern(layer: str) -> re.Pattern:
    """``encoder.layer.*.output.dense`` → a regex over ``.``-joined node paths."""
    parts = [r"[^./]+" if part == "*" else re.escape(part) for part in layer.split(".")]
    return re.compile(r"(^|[./])" + r"[./]".join(parts) + r"[./]")


def nodes_for_layers(onnx_path: str | Path, float_layers: Sequence[str]) -> list[str]:
    """Names of the MatMul/Gemm/Attention nodes exported from modules matching ``float_layers``.

    The TorchScript exporter names nodes after module paths
    (``/transformer/encoder/layer.0/output/dense/MatMul``); fusion keeps MatMul names.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    found: list[str] = []
    for layer in float_layers:
        pattern = _pattern(layer)
        matches = [
            node.name
            for node in graph.node
            if node.op_type in ("MatMul", "Gemm", "Attention") and pattern.search(node.name + "/")
        ]
        if not matches:
            raise ConfigError(f"float_layers: no matrix product in the graph comes from '{layer}'")
        found += matches
    return found


def fuse_transformer(source: Path, destination: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's BERT fusions; returns how many of each fused operator were made."""
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    optimized.save_model_to_file(str(destination))
    return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}


def quantize_graph(
    source: Path, destination: Path, config: EncoderRuntimeConfig, calibration: list[torch.Tensor], excluded: list[str]
) -> None:
    """Dynamic or static int8 with ONNX Runtime's quantizer (fused contrib ops included)."""
    import onnx

    from optiforge.encoders.module import unpack
    from optiforge.encoders.onnx_export import INPUT_NAMES
    from optiforge.quantization.onnx_runtime import quantize_onnx

    quantize_onnx(
        source,
        destination,
        scheme=config.quantize,
        calibration=[dict(zip(INPUT_NAMES, unpack(batch), strict=True)) for batch in calibration],
        calibration_batches=None,
        per_channel=config.per_channel,
        nodes_to_exclude=excluded,
        # the graph is already fused: pre-processing would rename the nodes kept in float
        preprocess=False,
        # fused contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference;
        # their outputs are float32, which is what this tells the quantizer
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def optimize_encoder(
    encoder: nn.Module,
    config: EncoderRuntimeConfig | None = None,
    calibration: Sequence[torch.Tensor] = (),
    *,
    path: str | Path,
):
    """Export ``encoder`` and make it fast with ONNX Runtime; returns an :class:`OnnxSentenceEncoder`.

    ``calibration`` holds packed token batches ``(batch, 2, sequence)`` (needed
    for smoothing and for ``int8_static``); ``path`` is where the final ONNX
    file goes.

    >>> from optiforge.encoders import load_sentence_encoder  # doctest: +SKIP
    >>> from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder  # doctest: +SKIP
    >>> config = EncoderRuntimeConfig(smoothing_alpha=0.8)  # doctest: +SKIP
    >>> fast = optimize_encoder(load_sentence_encoder(), config, batches, path="minilm.onnx")  # doctest: +SKIP
    """
    from optiforge.encoders.onnx_export import export_sentence_encoder
    from optiforge.encoders.runtime import OnnxSentenceEncoder

    config = config or EncoderRuntimeConfig()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise DependencyError("encoder runtime: onnxruntime is not installed; pip install onnxruntime") from None
    calibration = list(calibration)[: config.calibration_batches]
    needs_calibration = config.smoothing_alpha is not None or config.quantize == "int8_static"
    if needs_calibration and not calibration:
        raise ConfigError("encoder runtime: smoothing and int8_static need calibration batches")
    path = Path(path)
    work = Path(tempfile.mkdtemp(prefix="optiforge-encoder-"))
    info: dict = {"quantize": config.quantize, "fused": {}}
    try:
        model = encoder
        if config.smoothing_alpha is not None:
            from optiforge.encoders.smoothing import smooth_linears

            # the pooled output is not an input of any Linear, so every layer of the transformer qualifies
            model = smooth_linears(
                encoder, calibration, alpha=config.smoothing_alpha, select=lambda name, module: _smoothed(name, config)
            )
        if config.remove_padding:
            from optiforge.encoders.unpadded import remove_padding

            model = remove_padding(model)
        current = export_sentence_encoder(model, work / "float.onnx", calibration[0] if calibration else None)
        if config.fuse:
            transformer_config = getattr(getattr(encoder, "transformer", None), "config", None)
            if transformer_config is None:
                raise ModelError("encoder runtime: fuse needs a transformers model with a config")
            fused = work / "fused.onnx"
            info["fused"] = fuse_transformer(
                current, fused, transformer_config.num_attention_heads, transformer_config.hidden_size
            )
            current = fused
        if config.quantize != "none":
            excluded = nodes_for_layers(current, config.float_layers) if config.float_layers else []
            info["float_nodes"] = len(excluded)
            quantized = work / "quantized.onnx"
            quantize_graph(current, quantized, config, calibration, excluded)
            current = quantized
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(current), path.with_name(path.name + ".partial"))
        path.with_name(path.name + ".partial").replace(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return OnnxSentenceEncoder(path, config.session.threads, info=info, spinning=config.session.spinning)


def _matches(name: str, layers: Sequence[str]) -> bool:
    return any(_pattern(layer).search("/" + name + "/") for layer in layers)


def _smoothed(name: str, config: EncoderRuntimeConfig) -> bool:
    """Smooth the chosen layers (all by default) except those kept in float, which need none."""
    chosen = not config.smoothing_layers or _matches(name, config.smoothing_layers)
    return chosen and not _matches(name, config.float_layers) and "pooler" not in name
