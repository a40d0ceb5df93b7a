"""The ONNX Runtime path for sentence encoders: smooth → remove padding → export → fuse → int8.

:func:`optimize_encoder` is the verb: it takes a :class:`SentenceEncoder`
and returns an :class:`OnnxSentenceEncoder` whose file is a finished ONNX
sentence encoder; :func:`optimize_encoder_with_result` also says what was
done (fused operators, the layers and graph nodes kept in float, the layers
smoothed). Each step is a field of :class:`EncoderRuntimeConfig`:

* ``smoothing``: SmoothQuant before export (:mod:`.smoothing`), ``{alpha, layers}``;
  smoothing the query/key/value inputs puts a ``Mul`` inside the attention
  pattern, which then no longer fuses; smoothing only the feed-forward layers
  keeps the fusion;
* ``remove_padding``: compute on real tokens only (:mod:`.unpadded`), exact;
  query/key/value become one ``qkv`` matrix per layer;
* ``fuse``: ONNX Runtime's transformer fusions (one ``Attention`` op per
  layer, ``SkipLayerNormalization``, ``BiasGelu``, embedding + LayerNorm);
* ``quantize``: ``int8_dynamic`` (weights int8 per channel, activations
  quantized per batch at run time) or ``int8_static`` (activation ranges
  calibrated on training sentences);
* ``layers``: which Linear layers are quantized (:class:`~optiforge.layers.QuantizedLayerFilter`);
  ``layers: {exclude: [transformer.encoder.layer.*.output.dense]}`` keeps the
  feed-forward output projections, the usual most sensitive matrices, in float32;
  ``layers: {float_most_sensitive: 2}`` measures which two lose the most fidelity
  (:mod:`.sensitive_layers`, on the ``evaluation`` sentences) and keeps those float.

Patterns are whole module names of the sentence encoder
(``transformer.encoder.layer.0.output.dense``; ``*`` one segment, ``**`` any number).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from optiforge.config import Config
from optiforge.errors import ConfigError, DependencyError, ModelError
from optiforge.layers import LayerFilter, QuantizedLayerFilter, module_of_node, weighted_layers

log = logging.getLogger("optiforge")

# removed field → what replaced it, for the recipe's error message
RENAMED = {
    "float_layers": "layers.exclude",
    "smoothing_alpha": "smoothing.alpha",
    "smoothing_layers": "smoothing.layers.include",
    "fuse": "session.fuse",
}

# the graph nodes that hold a layer's weight matrix
MATRIX_OPS = ("MatMul", "Gemm", "Attention")


class SessionConfig(Config):
    """How the finished graph is built and run: ONNX Runtime's transformer fusions, the threads, and
    OpenVINO's inference precision."""

    fuse: bool = Field(True, description="ONNX Runtime transformer fusions (Attention, SkipLayerNorm, ...)")
    threads: int | None = Field(None, ge=1, description="ONNX Runtime threads (default: PyTorch's)")
    spinning: bool = Field(False, description="let ONNX Runtime threads busy-wait (helps on an idle machine only)")
    precision: Literal["f32", "bf16", "auto"] = Field(
        "f32", description="engine openvino: f32, bf16 (CPUs with bf16 units) or auto (bf16 where it has them)"
    )


class SmoothingConfig(Config):
    """SmoothQuant before export: strength and which Linear layers (layers kept in float are never smoothed)."""

    alpha: float = Field(ge=0.0, le=1.0, description="SmoothQuant strength (0.8 suits MiniLM)")
    layers: LayerFilter = Field(default_factory=LayerFilter, description="the Linear layers to smooth (all)")


class EncoderRuntimeConfig(Config):
    """How a sentence encoder is turned into a fast ONNX Runtime (or OpenVINO) graph.

    ``engine: openvino`` converts the (padding-free) encoder to OpenVINO IR and, for ``int8_static``,
    quantizes it with NNCF's transformer preset, which smooths activations itself; ``per_channel``,
    ``session.fuse`` and ``session.spinning`` are ONNX Runtime's and are ignored there. ``session.precision``
    is OpenVINO's inference precision for what is not int8: ``bf16`` on a CPU with bf16 units (AVX-512 BF16 or
    AMX; refused elsewhere, where it would be emulated), ``auto`` for bf16 where the CPU has them and f32
    elsewhere.
    """

    renamed_fields: ClassVar[dict[str, str]] = RENAMED

    engine: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime", description="whose runtime runs the graph: onnxruntime or openvino (NNCF int8_static)"
    )
    remove_padding: bool = Field(False, description="compute on real tokens only (BERT-like encoders; exact)")
    quantize: Literal["none", "int8_dynamic", "int8_static"] = "int8_dynamic"
    per_channel: bool = True
    layers: QuantizedLayerFilter = Field(
        default_factory=QuantizedLayerFilter, description="the Linear layers quantized; those left out stay float"
    )
    smoothing: SmoothingConfig | None = Field(None, description="SmoothQuant before export; none = off")
    calibration_batches: int = Field(8, ge=1, description="training batches for smoothing/static ranges")
    session: SessionConfig = Field(default_factory=SessionConfig, description="how the result's session runs")

    @model_validator(mode="after")
    def _sensitive_layers_need_int8(self) -> EncoderRuntimeConfig:
        if self.layers.float_most_sensitive and self.quantize == "none":
            raise ValueError("layers.float_most_sensitive keeps layers of an int8 graph float; quantize is 'none'")
        if self.engine == "onnxruntime" and self.session.precision != "f32":
            raise ValueError(
                f"session.precision '{self.session.precision}' is OpenVINO's inference precision; ONNX Runtime's "
                "CPU kernels run float32 and int8: choose engine openvino or session.precision f32"
            )
        if self.engine == "openvino":
            if self.quantize == "int8_dynamic":
                raise ValueError(
                    "engine 'openvino' runs quantize 'none' or 'int8_static' (NNCF calibrates activation ranges), "
                    "not 'int8_dynamic'; choose int8_static or engine onnxruntime"
                )
            if self.smoothing is not None:
                raise ValueError(
                    "smoothing is done by NNCF's transformer preset under engine 'openvino'; remove smoothing "
                    "or choose engine onnxruntime"
                )
            if self.layers != QuantizedLayerFilter():
                raise ValueError(
                    f"layers ({self.layers.model_dump(exclude_defaults=True)}) choose ONNX Runtime's quantized "
                    "nodes; engine 'openvino' quantizes every layer NNCF's transformer preset picks; remove layers "
                    "or choose engine onnxruntime"
                )
        return self


@dataclass
class OptimizeEncoderResult:
    """The fast encoder and what was done to make it."""

    model: nn.Module
    quantize: str
    precision: str = "f32"
    fused: dict[str, int] = field(default_factory=dict)
    float_layers: list[str] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)
    smoothed_layers: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "quantize": self.quantize,
            "precision": self.precision,
            "fused": dict(self.fused),
            "float_layers": list(self.float_layers),
            "float_nodes": len(self.float_nodes),
            "smoothed_layers": len(self.smoothed_layers),
        }


def float_nodes(onnx_path: str | Path, float_layers: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Names of the matrix-product nodes exported from ``float_layers`` (or from modules inside them).

    Every ``exclude`` pattern must reach a node (:func:`~optiforge.exporters.onnx.nodes_of_layers`
    refuses one that does not), so a layer meant to stay float is never silently quantized.
    The TorchScript exporter names nodes after module paths; fusion keeps MatMul names.
    """
    import onnx

    from optiforge.exporters.onnx import nodes_of_layers

    nodes_of_layers(onnx_path, exclude, MATRIX_OPS)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type in MATRIX_OPS and owning_layer(module_of_node(node.name), float_layers) is not None
    ]


def owning_layer(module: str, layers: Sequence[str]) -> str | None:
    """The layer of ``layers`` that ``module`` is or sits inside (a smoothed layer wraps its Linear as
    ``<layer>.linear``), else ``None``.

    >>> owning_layer("encoder.layer.1.output.dense.linear", ["encoder.layer.1.output.dense"])
    'encoder.layer.1.output.dense'
    >>> owning_layer("encoder.layer.10.output.dense", ["encoder.layer.1"]) is None
    True
    """
    return next((layer for layer in layers if module == layer or module.startswith(layer + ".")), None)


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
) -> nn.Module:
    """Export ``encoder`` and make it fast with ONNX Runtime; returns an :class:`OnnxSentenceEncoder`.

    ``calibration`` holds packed token batches ``(batch, 2, sequence)`` (needed
    for smoothing and for ``int8_static``); ``path`` is where the final ONNX
    file goes. :func:`optimize_encoder_with_result` also says what was done.

    >>> from optiforge.encoders import load_sentence_encoder  # doctest: +SKIP
    >>> from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder  # doctest: +SKIP
    >>> config = EncoderRuntimeConfig(smoothing={"alpha": 0.8})  # doctest: +SKIP
    >>> fast = optimize_encoder(load_sentence_encoder(), config, batches, path="minilm.onnx")  # doctest: +SKIP
    """
    return optimize_encoder_with_result(encoder, config, calibration, path=path).model


def optimize_encoder_with_result(
    encoder: nn.Module,
    config: EncoderRuntimeConfig | None = None,
    calibration: Sequence[torch.Tensor] = (),
    *,
    path: str | Path,
    evaluation: Sequence[torch.Tensor] = (),
    rankings: dict | None = None,
) -> OptimizeEncoderResult:
    """:func:`optimize_encoder`, with the fused operators and the layers kept in float and smoothed.

    ``layers.float_most_sensitive`` ranks the layers on ``evaluation`` (packed batches; default: the
    calibration batches); ``rankings``, a dict the caller keeps, holds that ranking for later calls on the
    same encoder and settings that differ only in the number of layers kept float."""
    from optiforge.encoders.onnx_export import export_sentence_encoder
    from optiforge.encoders.runtime import OnnxSentenceEncoder

    config = config or EncoderRuntimeConfig()
    if config.engine == "openvino":
        from optiforge.encoders.openvino_runtime import openvino_runtime

        model = openvino_runtime(encoder, config, calibration, path)
        return OptimizeEncoderResult(model, config.quantize, model.precision)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise DependencyError("encoder runtime: onnxruntime is not installed; pip install onnxruntime") from None
    quantized_layers = config.layers.select(encoder, (nn.Linear,), field="layers")
    kept_float = [name for name in weighted_layers(encoder, (nn.Linear,)) if name not in quantized_layers]
    smoothed_layers = _smoothed_layers(encoder, config, kept_float)
    calibration = list(calibration)[: config.calibration_batches]
    needs_calibration = config.smoothing is not None or config.quantize == "int8_static"
    if needs_calibration and not calibration:
        raise ConfigError("encoder runtime: smoothing and int8_static need calibration batches")
    if config.layers.float_most_sensitive and not (calibration or evaluation):
        raise ConfigError("encoder runtime: layers.float_most_sensitive needs evaluation (or calibration) batches")
    path = Path(path)
    work = Path(tempfile.mkdtemp(prefix="optiforge-encoder-"))
    result = OptimizeEncoderResult(model=encoder, quantize=config.quantize, smoothed_layers=smoothed_layers)
    try:
        model = encoder
        if config.smoothing is not None:
            from optiforge.encoders.smoothing import smooth_linears

            chosen = set(smoothed_layers)
            model = smooth_linears(
                encoder, calibration, alpha=config.smoothing.alpha, select=lambda name, module: name in chosen
            )
        if config.remove_padding:
            from optiforge.encoders.unpadded import remove_padding

            model = remove_padding(model)
        current = export_sentence_encoder(model, work / "float.onnx", calibration[0] if calibration else None)
        if config.session.fuse:
            transformer_config = getattr(getattr(encoder, "transformer", None), "config", None)
            if transformer_config is None:
                raise ModelError("encoder runtime: fuse needs a transformers model with a config")
            fused = work / "fused.onnx"
            result.fused = fuse_transformer(
                current, fused, transformer_config.num_attention_heads, transformer_config.hidden_size
            )
            current = fused
        if config.layers.float_most_sensitive:
            kept_float = _keep_sensitive_float(
                encoder, config, current, quantized_layers, kept_float, calibration, evaluation, work, rankings
            )
        if config.quantize != "none":
            result.float_layers = kept_float
            result.float_nodes = float_nodes(current, kept_float, config.layers.exclude)
            quantized = work / "quantized.onnx"
            quantize_graph(current, quantized, config, calibration, result.float_nodes)
            current = quantized
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(current), path.with_name(path.name + ".partial"))
        path.with_name(path.name + ".partial").replace(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.model = OnnxSentenceEncoder(path, config.session.threads, spinning=config.session.spinning)
    return result


def _keep_sensitive_float(
    encoder: nn.Module,
    config: EncoderRuntimeConfig,
    graph: Path,
    quantized_layers: dict,
    kept_float: list[str],
    calibration: list[torch.Tensor],
    evaluation: Sequence[torch.Tensor],
    work: Path,
    rankings: dict | None,
) -> list[str]:
    """``kept_float`` and the ``layers.float_most_sensitive`` layers that lose the most fidelity in int8."""
    from optiforge.encoders.runtime import OnnxSentenceEncoder
    from optiforge.encoders.sensitive_layers import graph_layers, rank_layers
    from optiforge.quantization.sensitivity import most_sensitive_float

    layers = graph_layers(graph, list(quantized_layers), MATRIX_OPS)
    count = config.layers.float_most_sensitive
    if count >= len(layers):
        raise ConfigError(
            f"encoder runtime: layers.float_most_sensitive {count} would keep every one of the {len(layers)} "
            f"layers quantized in the graph float; give at most {len(layers) - 1}"
        )

    def build(float_layers: list[str], path: Path) -> nn.Module:
        quantize_graph(graph, path, config, calibration, float_nodes(graph, float_layers, []))
        return OnnxSentenceEncoder(path, config.session.threads)

    rows = rank_layers(encoder, layers, kept_float, build, list(evaluation) or calibration, work, rankings)
    chosen = most_sensitive_float([row["layer"] for row in rows], kept_float, count)
    log.info("encoder runtime: kept float as most sensitive: %s", ", ".join(chosen[len(kept_float) :]))
    return chosen


def _smoothed_layers(encoder: nn.Module, config: EncoderRuntimeConfig, kept_float: list[str]) -> list[str]:
    """The chosen layers (all by default) less those kept in float, which need no smoothing."""
    if config.smoothing is None:
        return []
    chosen = config.smoothing.layers.select(encoder, (nn.Linear,), field="smoothing.layers")
    # the pooler does not feed the sentence embedding: smoothing it would only add work
    return [name for name in chosen if name not in kept_float and "pooler" not in name.split(".")]
