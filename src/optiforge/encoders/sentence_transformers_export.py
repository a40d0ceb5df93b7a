"""``export: [sentence_transformers]``: a model folder that sentence-transformers' ONNX and OpenVINO backends load.

``SentenceTransformer(folder, backend="onnx")`` reads ``onnx/model.onnx`` and
``backend="openvino"`` reads ``openvino/openvino_model.xml`` (through
Hugging Face Optimum); either runs the graph as the folder's ``Transformer``
module, whose output is the token embeddings (``last_hidden_state``), then
applies the folder's own ``Pooling`` and ``Normalize`` modules. So the
graphs here stop at the token embeddings, unlike ``export: [onnx]`` of an
encoder (which pools and normalises inside the graph), and every other file
(``modules.json``, ``1_Pooling/``, tokenizer and configs) is copied from the
folder the encoder was loaded from. The encoder's PyTorch changes (smoothing,
``remove_padding``) travel with its graphs; padded positions of a
padding-free encoder hold copies of real tokens, which pooling ignores.
"""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.encoders.module import SentenceEncoder, unpack
from optiforge.encoders.onnx_export import eager_attention, example_inputs
from optiforge.errors import ModelError
from optiforge.exporters.base import register_exporter

ONNX_FILE = Path("onnx") / "model.onnx"  # optimum.onnxruntime.ONNX_WEIGHTS_NAME in the backend's "onnx" subfolder
OPENVINO_FILE = Path("openvino") / "openvino_model.xml"  # optimum.intel.openvino.OV_XML_FILE_NAME
OPENVINO_INT8_FILE = Path("openvino") / "openvino_model_qint8_quantized.xml"  # sentence-transformers' own int8 name
OUTPUT_NAME = "last_hidden_state"
SKIPPED = {"model.safetensors", "pytorch_model.bin", "onnx", "openvino", ".gitattributes"}


class _TokenEmbeddings(nn.Module):
    """The transformer alone: ids, mask (and token types where it takes them) → token embeddings."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _TokenEmbeddingsWithTypes(_TokenEmbeddings):
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


def _graph_module(encoder: SentenceEncoder) -> tuple[nn.Module, list[str]]:
    takes_types = "token_type_ids" in inspect.signature(encoder.transformer.forward).parameters
    if takes_types:
        return _TokenEmbeddingsWithTypes(encoder.transformer).eval(), ["input_ids", "attention_mask", "token_type_ids"]
    return _TokenEmbeddings(encoder.transformer).eval(), ["input_ids", "attention_mask"]


def _example(example: Any, names: list[str]) -> tuple[torch.Tensor, ...]:
    if isinstance(example, torch.Tensor) and example.dim() == 3 and example.shape[0] >= 2:
        input_ids, attention_mask = unpack(example)
    else:
        input_ids, attention_mask = example_inputs(example)
    inputs = [input_ids.long(), attention_mask.long()]
    if "token_type_ids" in names:
        inputs.append(torch.zeros_like(inputs[0]))
    return tuple(inputs)


def _copy_folder(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in SKIPPED:
            continue
        target = destination / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(item, target)


def export_sentence_transformers(
    encoder: nn.Module,
    folder: str | Path,
    example: Any = None,
    *,
    formats: Sequence[str] = ("onnx", "openvino"),
    openvino_int8_calibration: Sequence[Any] = (),
) -> Path:
    """Write a sentence-transformers model folder for ``encoder`` at ``folder``.

    ``formats``: which backends' graphs to write (``onnx``, ``openvino``).
    ``openvino_int8_calibration`` (packed sentence batches) adds an NNCF int8
    graph, ``openvino/openvino_model_qint8_quantized.xml``, which the OpenVINO
    backend loads with ``model_kwargs={"file_name": "openvino_model_qint8_quantized.xml"}``.
    """
    if not isinstance(encoder, SentenceEncoder):
        raise ModelError(
            f"export sentence_transformers: needs a PyTorch sentence encoder (model: {{name: minilm}}), "
            f"got {type(encoder).__name__}; export the encoder before any stage that leaves PyTorch"
        )
    if encoder.folder is None or not (Path(encoder.folder) / "modules.json").is_file():
        raise ModelError(
            "export sentence_transformers: the encoder was not loaded from a sentence-transformers folder "
            f"(folder: {encoder.folder!r}, no modules.json), so there are no pooling modules or tokenizer to copy"
        )
    unknown = sorted(set(formats) - {"onnx", "openvino"})
    if unknown:
        raise ModelError(f"export sentence_transformers: formats {unknown} are not offered; choose onnx, openvino")
    folder = Path(folder)
    _copy_folder(Path(encoder.folder), folder)
    graph, names = _graph_module(encoder)
    inputs = _example(example, names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {OUTPUT_NAME: {0: "batch", 1: "sequence"}}
    if "onnx" in formats:
        from optiforge.exporters.onnx import export_onnx

        with torch.no_grad(), eager_attention(encoder):
            export_onnx(
                graph, folder / ONNX_FILE, inputs, input_names=names, output_names=[OUTPUT_NAME], dynamic_axes=axes
            )
    if "openvino" in formats or openvino_int8_calibration:
        from optiforge.encoders.openvino_export import conversion_extensions
        from optiforge.exporters.openvino import convert, save_ir

        converted = convert(graph, inputs, [OUTPUT_NAME], conversion_extensions(), False, names)
        save_ir(converted, folder / OPENVINO_FILE)
        if openvino_int8_calibration:
            from optiforge.quantization.openvino_engine import quantize_ir

            feeds = []
            for batch in openvino_int8_calibration:
                ids, mask = unpack(batch) if torch.is_tensor(batch) and batch.dim() == 3 else batch
                feed = {"input_ids": ids.long(), "attention_mask": mask.long()}
                feeds.append(feed | ({"token_type_ids": torch.zeros_like(ids).long()} if len(names) == 3 else {}))
            quantized = quantize_ir(converted, "int8_static", calibration=feeds, transformer=True)
            save_ir(quantized, folder / OPENVINO_INT8_FILE)
    return folder


@register_exporter("sentence_transformers", "-sentence-transformers")
def _export_format(model: nn.Module, path: Path, example_input: Any = None) -> Path:
    """A folder sentence-transformers loads with ``backend="onnx"`` or ``backend="openvino"``."""
    return export_sentence_transformers(model, path, example_input)
