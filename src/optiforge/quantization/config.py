"""``QuantConfig``: one typed config for every quantization scheme and engine."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from optiforge.config import Config, FinetuneConfig
from optiforge.layers import QuantizedLayerFilter

Scheme = Literal["int8_dynamic", "int8_static", "int8_weight_only", "int4_weight_only", "fp16", "bf16", "qat_int8"]
Engine = Literal["auto", "torch", "pt2e", "torchao", "onnxruntime", "openvino"]
Observer = Literal["minmax", "moving_average", "percentile", "mse"]

SCHEMES: tuple[str, ...] = Scheme.__args__  # type: ignore[attr-defined]
ENGINES: tuple[str, ...] = Engine.__args__  # type: ignore[attr-defined]
# schemes that change every layer at once (casts) or retrain it (QAT): no per-layer sensitivity
WHOLE_MODEL_SCHEMES = ("fp16", "bf16", "qat_int8")
OBSERVERS: tuple[str, ...] = Observer.__args__  # type: ignore[attr-defined]

# fields of earlier versions → where they live now (the recipe error for a removed field names its replacement)
RENAMED = {
    "exclude": "layers.exclude",
    "observer": "calibration.observer",
    "calibration_batches": "calibration.batches",
    "per_channel": "weights.per_channel",
    "group_size": "weights.group_size",
    "qat_epochs": "finetune.epochs",
    "qat_lr": "finetune.lr",
    "max_metric_drop": "target.max_metric_drop",
    "min_fidelity": "target.min_fidelity",
    "openvino": "calibration.openvino",
}


class OpenVinoOptions(Config):
    """How NNCF quantizes for the ``openvino`` engine (``int8_static``); other engines refuse these when set."""

    preset: Literal["performance", "mixed"] | None = Field(
        None,
        description="performance: symmetric activations (fastest kernels); mixed: asymmetric activations; "
        "unset: NNCF's choice (performance, mixed for transformers)",
    )
    bias_correction: Literal["fast", "full", "none"] = Field(
        "fast",
        description="fast: one pass; full: layer by layer on the quantized model (slower to build); none: off",
    )

    @property
    def is_default(self) -> bool:
        return self == OpenVinoOptions()


class CalibrationConfig(Config):
    """Activation ranges (and, under NNCF, biases) for static int8 and QAT."""

    batches: int = Field(8, ge=1, description="batches of the calibration loader observed")
    observer: Observer = Field(
        "minmax",
        description="minmax, moving_average, percentile (99.99th), mse (histogram, least squared error)",
    )
    openvino: OpenVinoOptions = Field(
        default_factory=OpenVinoOptions, description="how NNCF calibrates (engine openvino)"
    )


class WeightConfig(Config):
    """How weights are scaled."""

    per_channel: bool = Field(True, description="one weight scale per output channel")
    group_size: int = Field(32, ge=8, description="int4_weight_only: weights sharing one scale")


class TargetConfig(Config):
    """What the quantized model must keep; unset: no target (``engine: auto`` asks output cosine >= 0.99)."""

    max_metric_drop: float | None = Field(None, ge=0.0, description="largest task-metric loss allowed, e.g. 0.005")
    min_fidelity: float | None = Field(None, gt=0.0, le=1.0, description="least output cosine to the float model")

    @property
    def is_set(self) -> bool:
        return self.max_metric_drop is not None or self.min_fidelity is not None


class QuantConfig(Config):
    """How to quantize a model (the recipe stage ``quantize:`` parses into this).

    ``scheme`` says what becomes low precision, ``engine`` whose kernels run
    it (``auto`` measures the candidates and keeps the fastest that meets the
    target). ``layers.exclude`` (names or patterns) stays float, and so do the
    ``layers.float_most_sensitive`` layers whose quantization alone costs the
    most fidelity on the validation data. A ``target``
    (``max_metric_drop`` on the task metric, or ``min_fidelity``, the output
    cosine to the float model) turns on mixed precision: the most sensitive
    layers stay float until the target is met; when nothing meets it, the
    float model ships unchanged. ``finetune`` trains ``qat_int8`` (3 epochs at
    a tenth of the recipe's learning rate unless ``finetune.lr`` is set).
    """

    renamed_fields: ClassVar[dict[str, str]] = RENAMED
    scheme: Scheme = "int8_static"
    engine: Engine = "auto"
    layers: QuantizedLayerFilter = Field(
        default_factory=QuantizedLayerFilter, description="which Linear/Conv layers become int8 (the rest stay float)"
    )
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    weights: WeightConfig = Field(default_factory=WeightConfig)
    finetune: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(epochs=3), description="qat_int8 training")
    target: TargetConfig = Field(default_factory=TargetConfig)
    sensitivity: bool = Field(False, description="always write the per-layer sensitivity table and plot")

    @model_validator(mode="after")
    def _engine_fits_scheme(self) -> QuantConfig:
        from optiforge.quantization.schemes import engines_for

        if self.engine != "auto" and self.engine not in engines_for(self.scheme):
            raise ValueError(
                f"engine '{self.engine}' cannot run scheme '{self.scheme}' on this toolkit; "
                f"engines for it: {', '.join(engines_for(self.scheme))} (or auto)"
            )
        if self.layers.float_most_sensitive and self.scheme in WHOLE_MODEL_SCHEMES:
            raise ValueError(
                f"layers.float_most_sensitive keeps layers of an int8 model float; scheme '{self.scheme}' "
                "converts the whole model (give 0 or an int8/int4 scheme other than qat_int8)"
            )
        openvino = self.calibration.openvino
        if self.engine not in ("auto", "openvino") and not openvino.is_default:
            raise ValueError(
                f"calibration.openvino ({openvino.model_dump(exclude_defaults=True)}) sets how NNCF quantizes, "
                f"which engine '{self.engine}' does not use; set engine: openvino (or auto), or remove it"
            )
        if self.scheme != "int8_static" and not openvino.is_default:
            raise ValueError(
                f"calibration.openvino.preset and .bias_correction apply to scheme 'int8_static', not '{self.scheme}'"
            )
        return self

    @property
    def has_target(self) -> bool:
        return self.target.is_set
