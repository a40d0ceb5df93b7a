"""Bad input gets an error that names the option; unsupported layers are named in a warning."""

from __future__ import annotations

import logging
from collections import OrderedDict

import pytest
import torch
from torch import nn

import optiforge
from optiforge.errors import ConfigError, DataError, DependencyError, RecipeError
from optiforge.quantization import QuantConfig, quantize, quantize_with_result, schemes


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))


def test_unknown_scheme_is_refused_by_name_in_a_recipe():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.quantize\.scheme.*int8_static"):
        optiforge.load_recipe({"stages": [{"quantize": {"scheme": "int3"}}]})


def test_engine_that_cannot_run_the_scheme_is_refused():
    with pytest.raises(ConfigError, match="engine 'torchao' cannot run scheme 'int8_static'"):
        QuantConfig(scheme="int8_static", engine="torchao")


def test_missing_engine_package_names_the_option(model, monkeypatch):
    monkeypatch.setattr(schemes, "installed", lambda engine: engine != "torchao")
    with pytest.raises(DependencyError, match="quantize.engine: 'torchao'.*pip install torchao"):
        quantize(model, QuantConfig(scheme="int8_weight_only", engine="torchao"))


def test_empty_calibration_loader(model):
    with pytest.raises(DataError, match="calibration loader yielded no batches"):
        quantize(model, QuantConfig(scheme="int8_static", engine="torch"), calibration=[])


def test_missing_calibration_loader_names_the_argument(model):
    with pytest.raises(ConfigError, match="'calibration' is required"):
        quantize(model, QuantConfig(scheme="int8_static", engine="torch"))


def test_mismatched_calibration_batches(model):
    with pytest.raises(DataError, match=r"calibration batches \(inputs \(4, 1, 99\)\) do not fit the model"):
        quantize(model, QuantConfig(scheme="int8_static", engine="torch"), calibration=[torch.randn(4, 1, 99)])


def test_qat_without_a_training_function(model):
    with pytest.raises(ConfigError, match="qat_int8' needs finetune"):
        quantize(model, QuantConfig(scheme="qat_int8"), calibration=[torch.randn(4, 1, 8)])


def test_observer_onnxruntime_lacks(model, tmp_path):
    with pytest.raises(ConfigError, match="observer: 'mse' is not offered by ONNX Runtime"):
        quantize(
            model,
            QuantConfig(scheme="int8_static", engine="onnxruntime", calibration={"observer": "mse"}),
            calibration=[torch.randn(4, 1, 8)],
            output_dir=tmp_path,
        )


def test_misspelt_excluded_layer_is_refused_naming_the_closest_layer():
    named = nn.Sequential(OrderedDict(encoder=nn.Linear(8, 16), relu=nn.ReLU(), head=nn.Linear(16, 3)))
    with pytest.raises(
        ConfigError, match=r"quantize.layers.exclude: no layer matches 'haed' \(did you mean 'head'\?\)"
    ):
        quantize(named, QuantConfig(scheme="int8_dynamic", engine="torch", layers={"exclude": ["haed"]}))


def test_layers_an_engine_cannot_quantize_stay_float_with_a_warning(model, caplog):
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        result = quantize_with_result(model, QuantConfig(scheme="int8_dynamic", engine="torch"))
    assert "left in float because the engine cannot quantize them: 0" in caplog.text
    assert type(result.model[0]) is nn.Conv1d
    assert result.unsupported_layers == ["0"]


def test_untraceable_model_gets_advice():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow defeats FX tracing
                return self.linear(x)
            return -self.linear(x)

    with pytest.raises(optiforge.ModelError, match="cannot trace.*engine: onnxruntime"):
        quantize(Branchy(), QuantConfig(scheme="int8_static", engine="torch"), calibration=[torch.randn(2, 4)])


def test_auto_without_any_data_to_measure_on(model):
    with pytest.raises(ConfigError, match="'auto' measures every engine on real inputs"):
        quantize(model, QuantConfig(scheme="int8_dynamic", engine="auto"))


def test_metric_target_needs_labels(model):
    with pytest.raises(ConfigError, match="target.max_metric_drop needs validation batches with labels"):
        quantize(
            model,
            QuantConfig(scheme="int8_dynamic", engine="torch", target={"max_metric_drop": 0.01}),
            validation=[torch.randn(4, 1, 8)],
        )


def test_the_callers_model_keeps_its_mode(model):
    model.train()
    quantize(model, QuantConfig(scheme="int8_dynamic", engine="torch"))
    assert model.training


def test_every_renamed_field_points_at_a_field_of_the_config():
    from optiforge.quantization.config import RENAMED

    for old, new in RENAMED.items():
        assert old not in QuantConfig.model_fields
        outer, inner = new.split(".")
        assert inner in QuantConfig.model_fields[outer].annotation.model_fields, new
