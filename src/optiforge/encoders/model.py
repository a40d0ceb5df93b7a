"""Built-in model ``minilm``: all-MiniLM-L6-v2 as a :class:`SentenceEncoder`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from optiforge.encoders.loading import check_folder, load_transformer, read_settings
from optiforge.encoders.module import SentenceEncoder
from optiforge.errors import ModelError
from optiforge.models.builtin import MODELS


def load_sentence_encoder(path: str | Path | None = None, max_length: int | None = None) -> SentenceEncoder:
    """Load a sentence-transformers folder (default: all-MiniLM-L6-v2 from its package) offline.

    >>> from optiforge.encoders import load_sentence_encoder
    >>> encoder = load_sentence_encoder()
    >>> encoder.embedding_dim, encoder.max_length
    (384, 256)
    """
    folder = check_folder(path)
    settings = read_settings(folder)
    if max_length is not None and not 1 <= max_length <= settings.max_length:
        raise ModelError(f"model.max_length: {max_length} is outside 1..{settings.max_length} for '{folder}'")
    transformer = load_transformer(folder)
    # eval mode, like the transformer inside: a loaded encoder is for inference until trained
    return SentenceEncoder(transformer, max_length or settings.max_length, settings.normalize, folder).eval()


@MODELS.register("minilm")
def minilm(input_shape: tuple[int, ...], num_classes: int, path: str | None = None) -> nn.Module:
    """all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7M parameters), pooled and L2-normalised.

    ``path`` loads another sentence-transformers folder with mean pooling instead.
    Pair it with ``data: {name: sentences}``, whose inputs are packed token tensors.
    """
    if len(input_shape) != 2 or input_shape[0] != 2:
        raise ModelError(
            f"model minilm takes packed token inputs (2, sequence), the data gives {tuple(input_shape)}; "
            "use data: {name: sentences}"
        )
    return load_sentence_encoder(path)
