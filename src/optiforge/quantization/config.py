"""``QuantConfig``: one typed config for every quantization scheme and engine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from optiforge.config import Config

Scheme = Literal["int8_dynamic", "int8_static", "int8_weight_only", "int4_weight_only", "fp16", "bf16", "qat_int8"]
Engine = Literal["auto", "torch", "torchao", "onnxruntime"]
Observer = Literal["minmax", "moving_average", "percentile", "mse"]

SCHEMES: tuple[str, ...] = Scheme.__args__  # type: ignore[attr-defined]
ENGINES: tuple[str, ...] = Engine.__args__  # type: ignore[attr-defined]
OBSERVERS: tuple[str, ...] = Observer.__args__  # type: ignore[attr-defined]


class QuantConfig(Config):
    """How to quantize a model (the recipe stage ``quantize:`` parses into this).

    ``scheme`` says what becomes low precision, ``engine`` whose kernels run
    it (``auto`` measures the candidates and keeps the fastest that meets the
    target). ``max_metric_drop`` (task metric, e.g. 0.005 = half a point of
    accuracy) or ``min_fidelity`` (output cosine to the float model) turn on
    mixed precision: the most sensitive layers stay float until the target is met.
    """

    scheme: Scheme = "int8_static"
    engine: Engine = "auto"
    observer: Observer = Field(
        "minmax",
        description="static/QAT activation ranges: minmax, moving_average, "
        "percentile (99.99th), mse (histogram, least squared error)",
    )
    calibration_batches: int = Field(8, ge=1, description="batches of the calibration loader observed")
    per_channel: bool = Field(True, description="one weight scale per output channel")
    group_size: int = Field(32, ge=8, description="int4_weight_only: weights sharing one scale")
    exclude: list[str] = Field(default_factory=list, description="module names kept in float")
    qat_epochs: int = Field(3, ge=1, description="qat_int8: fine-tuning epochs with fake quantization")
    qat_lr: float | None = Field(None, gt=0.0, description="qat_int8: learning rate (default: a tenth of the recipe's)")
    max_metric_drop: float | None = Field(None, ge=0.0, description="mixed precision: largest metric loss allowed")
    min_fidelity: float | None = Field(None, gt=0.0, le=1.0, description="mixed precision: least output cosine")
    sensitivity: bool = Field(False, description="always write the per-layer sensitivity table and plot")

    @model_validator(mode="after")
    def _engine_fits_scheme(self) -> QuantConfig:
        from optiforge.quantization.schemes import engines_for

        if self.engine != "auto" and self.engine not in engines_for(self.scheme):
            raise ValueError(
                f"engine '{self.engine}' cannot run scheme '{self.scheme}' on this toolkit; "
                f"engines for it: {', '.join(engines_for(self.scheme))} (or auto)"
            )
        return self

    @property
    def has_target(self) -> bool:
        return self.max_metric_drop is not None or self.min_fidelity is not None
