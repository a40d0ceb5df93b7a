"""Sentence encoders: all-MiniLM-L6-v2 loaded offline, measured by fidelity, exported and sped up.

Heavy libraries (transformers, onnx, onnxruntime) are imported inside the
functions that need them, so importing this package stays cheap.
"""

from optiforge.encoders import onnx_export as _onnx_export  # noqa: F401  registers the onnx export of encoders
from optiforge.encoders import openvino_export as _openvino_export  # noqa: F401  registers the openvino export
from optiforge.encoders import sentence_transformers_export as _st_export  # noqa: F401  registers its folder export
from optiforge.encoders.fidelity import EmbeddingTask, fidelity, mean_cosine, neighbour_overlap
from optiforge.encoders.model import load_sentence_encoder
from optiforge.encoders.module import SentenceEncoder, mean_pool, pack, unpack
from optiforge.encoders.sentences import documentation_sentences, read_sentences

__all__ = [
    "EmbeddingTask",
    "SentenceEncoder",
    "documentation_sentences",
    "fidelity",
    "load_sentence_encoder",
    "mean_cosine",
    "mean_pool",
    "neighbour_overlap",
    "pack",
    "read_sentences",
    "unpack",
]
