"""Hugging Face models from a local folder, as modules that take one tensor and return one tensor.

The training loop, ``measure`` and the exporters call ``model(inputs)`` and
expect a tensor back; a transformers model takes keyword arguments and returns
a ``ModelOutput``. :class:`HuggingFaceModel` bridges the two: its input is
token ids ``(batch, sequence)`` (the attention mask is derived from the pad
token) or packed ``(batch, 2, sequence)`` ids and mask, as optiforge's text
datasets give them; its output is the tensor the task needs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from optiforge.errors import ConfigError, DependencyError, ModelError
from optiforge.imports import quiet_optional_imports

log = logging.getLogger("optiforge")

# task → transformers' auto class and what the wrapped model returns
TASK_CLASSES = {
    "sequence_classification": "AutoModelForSequenceClassification",  # logits (batch, labels)
    "token_classification": "AutoModelForTokenClassification",  # logits (batch, sequence, labels)
    "embedding": "AutoModel",  # mean-pooled last hidden state (batch, hidden)
    "causal_lm": "AutoModelForCausalLM",  # logits (batch, sequence, vocabulary)
}
# the tasks whose result does not change when padding columns no sequence uses are dropped
_TRIMMABLE = ("sequence_classification", "embedding")


def _is_tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class HuggingFaceModel(nn.Module):
    """A transformers model behind a one-tensor forward that returns the tensor its ``task`` needs.

    >>> import torch
    >>> class Tiny(torch.nn.Module):  # stands in for a transformers model
    ...     def __init__(self):
    ...         super().__init__(); self.embed = torch.nn.Embedding(10, 3)
    ...     def forward(self, input_ids, attention_mask, return_dict):
    ...         return type("Output", (), {"logits": self.embed(input_ids).sum(dim=1)})()
    >>> model = HuggingFaceModel(Tiny(), "sequence_classification", pad_token_id=0)
    >>> model(torch.tensor([[2, 5, 7, 0]])).shape
    torch.Size([1, 3])
    """

    def __init__(self, model: nn.Module, task: str, pad_token_id: int | None = None, normalize: bool = False) -> None:
        super().__init__()
        if task not in TASK_CLASSES:
            raise ConfigError(f"model.task: unknown '{task}'; allowed: {', '.join(TASK_CLASSES)}")
        self.model = model
        self.task = task
        self.normalize = normalize
        config = getattr(model, "config", None)
        self.pad_token_id = pad_token_id if pad_token_id is not None else getattr(config, "pad_token_id", None)
        if task == "causal_lm" and config is not None:
            config.use_cache = False  # the KV cache (DynamicCache) is an output ONNX export cannot trace

    def split_inputs(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` from ids ``(batch, sequence)`` or packed ``(batch, 2, sequence)``."""
        if inputs.dim() == 3 and inputs.shape[1] == 2:
            input_ids, attention_mask = inputs[:, 0].long(), inputs[:, 1].long()
            if self.task in _TRIMMABLE and not _is_tracing() and attention_mask.numel():
                length = max(1, int(attention_mask.sum(dim=1).max()))
                input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
            return input_ids, attention_mask
        if inputs.dim() == 2:
            input_ids = inputs.long()
            if self.pad_token_id is None:
                return input_ids, torch.ones_like(input_ids)
            return input_ids, (input_ids != self.pad_token_id).long()
        raise ModelError(
            f"model ({self.task}): expected token ids (batch, sequence) or packed ids and mask (batch, 2, sequence), "
            f"got shape {tuple(inputs.shape)}"
        )

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            input_ids, attention_mask = self.split_inputs(inputs)
        else:
            input_ids = inputs.long()
        keywords = {"input_ids": input_ids, "attention_mask": attention_mask, "return_dict": True}
        if self.task == "causal_lm":
            keywords["use_cache"] = False
        output = self.model(**keywords)
        if self.task != "embedding":
            return output.logits
        mask = attention_mask.unsqueeze(-1).to(output.last_hidden_state.dtype)  # (B, T, 1)
        pooled = (output.last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def extra_repr(self) -> str:
        return f"task={self.task}, pad_token_id={self.pad_token_id}, normalize={self.normalize}"


def _transformers(where: str):
    # the files are local: never reach for the network, even when a file is missing
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        with quiet_optional_imports():
            import transformers
    except ImportError:
        raise DependencyError(
            f"{where}: Hugging Face models need the package 'transformers': pip install 'optiforge[hf]'"
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def model_folder(location: str, where: str) -> Path:
    """The folder holding ``config.json``: ``location`` itself, or an installed package's folder (or its ``model``)."""
    folder = Path(location).expanduser()
    if not folder.is_dir():
        spec = importlib.util.find_spec(location) if location.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"{where}: '{location}' is neither a folder nor an installed package")
        folder = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (folder, folder / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelError(f"{where}: '{folder}' holds no Hugging Face model (no config.json in it or in its 'model' folder)")


def huggingface_model(
    location: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    where: str,
    task: str | None = None,
    data_task: str = "classification",
    normalize: bool = False,
) -> nn.Module:
    """Load a local Hugging Face model for ``task`` (default: ``embedding`` for embedding data, else classification).

    ``normalize`` L2-normalises embeddings. A classification head sized for other labels than the
    data's classes is replaced by a new one, with a warning.
    """
    folder = model_folder(location, f"{where}.huggingface")
    task = task or ("embedding" if data_task == "embedding" else "sequence_classification")
    transformers = _transformers(f"{where}.huggingface")
    auto_class = getattr(transformers, TASK_CLASSES[task])
    keywords: dict = {"local_files_only": True}
    if task in ("sequence_classification", "token_classification") and data_task == "classification":
        labels = int(transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True).num_labels)
        if labels != num_classes:
            log.warning("%s: the model's head has %d labels; a new head is made for %d", where, labels, num_classes)
            keywords.update(num_labels=num_classes, ignore_mismatched_sizes=True)
    try:
        with quiet_optional_imports():
            model = auto_class.from_pretrained(str(folder), **keywords)
    except Exception as error:  # noqa: BLE001  transformers' refusal names the file or the class
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "torchvision" in reason:  # transformers imports torchvision when it is installed, even for text
            raise DependencyError(
                f"{where}.huggingface: loading '{folder}' imports torchvision, which fails ({reason}); install a "
                f"torchvision built for torch {torch.__version__}: pip install 'optiforge[vision]'"
            ) from None
        raise ModelError(f"{where}.huggingface: cannot load '{folder}' for {task}: {reason}") from None
    return HuggingFaceModel(model, task, normalize=normalize).eval()
