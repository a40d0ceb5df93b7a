"""Where the data and the model come from."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from optiforge.config.base import OpenConfig


class DataConfig(OpenConfig):
    """Where the data comes from. Extra fields go to the dataset builder."""

    name: str | None = "digits"
    factory: str | None = Field(None, description="'package.module:function' returning datasets")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    workers: int = Field(0, ge=0, le=256)
    seed: int = 0
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="classification: share of each training target spread over all classes"
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.factory is not None and self.name not in (None, "digits"):
            raise ValueError("give either 'name' or 'factory', not both")
        return self


class ModelConfig(OpenConfig):
    """Which model to build: exactly one source field. Extra fields go to the model's builder.

    ``name`` (a registered builder), ``factory`` (``package.module:function``), ``torchvision`` or ``timm``
    (an architecture by name, random weights), ``huggingface`` (a local folder or a package holding one),
    ``onnx`` (an ``.onnx`` file) or ``exported`` (a ``torch.export`` ``.pt2`` file).

    >>> ModelConfig(torchvision="resnet18").source
    ('torchvision', 'resnet18')
    >>> ModelConfig(name="mlp", onnx="model.onnx")
    Traceback (most recent call last):
    optiforge.errors.ConfigError: ModelConfig: give one model source, not 2: name='mlp', onnx='model.onnx'
    """

    sources: ClassVar[tuple[str, ...]] = ("name", "factory", "torchvision", "timm", "huggingface", "onnx", "exported")

    name: str | None = "mlp"
    factory: str | None = Field(None, description="'package.module:function' returning an nn.Module")
    torchvision: str | None = Field(None, description="a torchvision.models architecture, e.g. resnet18")
    timm: str | None = Field(None, description="a timm architecture, e.g. convnext_atto")
    huggingface: str | None = Field(None, description="a local Hugging Face model folder, or a package holding one")
    task: Literal["sequence_classification", "token_classification", "embedding", "causal_lm"] | None = Field(
        None, description="huggingface: what the model returns (default: sequence_classification)"
    )
    onnx: str | None = Field(None, description="an .onnx file, converted to PyTorch")
    exported: str | None = Field(None, description="a torch.export program (.pt2)")
    weights: str | None = Field(None, description="torchvision: a local state-dict file (never downloaded)")
    checkpoint: str | None = Field(None, description="state dict to load into the built model")

    @model_validator(mode="before")
    @classmethod
    def _name_yields(cls, data: Any) -> Any:
        # ``name`` has a default; another source given without ``name`` replaces it
        if isinstance(data, dict) and "name" not in data:
            if any(data.get(source) is not None for source in cls.sources if source != "name"):
                data = {**data, "name": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        given = [(source, getattr(self, source)) for source in self.sources if getattr(self, source) is not None]
        if len(given) != 1:
            listed = ", ".join(f"{source}={value!r}" for source, value in given) or "none given"
            raise ValueError(
                f"give one model source, not {len(given)}: {listed}"
                if given
                else f"give one model source ({', '.join(self.sources)}); none given"
            )
        if self.task is not None and self.huggingface is None:
            raise ValueError(f"'task' is for huggingface models, not {given[0][0]}={given[0][1]!r}")
        if self.weights is not None and self.torchvision is None:
            raise ValueError(
                f"'weights' is for torchvision models, not {given[0][0]}={given[0][1]!r}; use 'checkpoint'"
            )
        return self

    @property
    def source(self) -> tuple[str, str]:
        """``(field, value)`` of the one source this config names."""
        return next((source, getattr(self, source)) for source in self.sources if getattr(self, source) is not None)
