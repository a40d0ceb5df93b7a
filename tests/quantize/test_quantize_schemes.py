"""Each scheme changes what it claims: int8/int4 weights, smaller artefacts, fake quantization in QAT."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optiforge
from optiforge.data.loaders import make_loader
from optiforge.quantization import QuantConfig, load_quantized_state, quantize, quantize_with_result, save_quantized
from optiforge.quantization.artifact import pack_int4, unpack_int4
from optiforge.training.loop import TrainResult


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[128, 64]), digits)
    return optiforge.train(
        model, digits, optiforge.TrainConfig(epochs=3, optimizer={"lr": 0.1, "momentum": 0.9}), progress=False
    ).model.eval()


@pytest.fixture(scope="module")
def loaders(digits):
    return make_loader(digits.train, 64), make_loader(digits.val, 256)


def _size(model: nn.Module, path) -> int:
    return save_quantized(model, path).stat().st_size


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()


def _inputs(digits) -> torch.Tensor:
    return digits.example_input(64)


def test_int8_dynamic_torch_stores_int8_weights_and_shrinks_the_file(trained, loaders, digits, tmp_path):
    quantized = quantize(trained, QuantConfig(scheme="int8_dynamic", engine="torch"))
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    layers = [module for module in quantized.modules() if isinstance(module, DynamicLinear)]
    assert len(layers) == 3
    assert all(layer.weight().dtype == torch.qint8 for layer in layers)
    float_size = _size(trained, tmp_path / "float.pt")
    # per-channel scales (float64) and zero points (int64) weigh on a model this small
    assert _size(quantized, tmp_path / "int8.pt") < float_size / 2.5
    x = _inputs(digits)
    with torch.no_grad():
        assert _cosine(quantized(x), trained(x)) > 0.99
        assert not torch.equal(quantized(x), trained(x))  # really a different computation


def test_int8_static_torch_quantizes_activations_and_weights(trained, loaders, digits, tmp_path):
    calibration, _ = loaders
    quantized = quantize(trained, QuantConfig(scheme="int8_static", engine="torch"), calibration=calibration)
    from torch.ao.nn.quantized import Linear as QuantizedLinear

    linear = [module for module in quantized.modules() if isinstance(module, QuantizedLinear)]
    assert len(linear) == 3
    assert all(module.weight().dtype == torch.qint8 for module in linear)
    assert _size(trained, tmp_path / "f.pt") / _size(quantized, tmp_path / "q.pt") > 2.5
    x = _inputs(digits)
    with torch.no_grad():
        agreement = (quantized(x).argmax(1) == trained(x).argmax(1)).float().mean().item()
    assert agreement > 0.95


def test_observers_calibrate_different_activation_ranges(trained, loaders):
    calibration, _ = loaders
    scales = {}
    for observer in ("minmax", "moving_average", "percentile", "mse"):
        config = QuantConfig(scheme="int8_static", engine="torch", calibration={"observer": observer, "batches": 4})
        quantized = quantize(trained, config, calibration=calibration)
        scales[observer] = getattr(quantized, "1").scale  # output scale of the first hidden layer
    # percentile clips outliers and MSE searches a tighter range: both below plain min-max
    assert scales["percentile"] <= scales["minmax"]
    assert scales["mse"] < scales["minmax"]
    assert len({round(value, 8) for value in scales.values()}) >= 3


def test_int8_weight_only_torchao_keeps_int8_codes(trained, tmp_path):
    quantized = quantize(trained, QuantConfig(scheme="int8_weight_only", engine="torchao"))
    weight = quantized[1].weight
    assert weight.qdata.dtype == torch.int8
    assert _size(quantized, tmp_path / "w8.pt") < _size(trained, tmp_path / "f.pt") / 3


def test_int4_weight_only_uses_4_bit_codes_group_scales_and_a_packed_file(trained, digits, tmp_path):
    quantized = quantize(trained, QuantConfig(scheme="int4_weight_only", engine="torchao", weights={"group_size": 32}))
    weight = quantized[1].weight
    assert weight.qdata.min() >= -8 and weight.qdata.max() <= 7
    assert weight.scale.shape == (128, 64 // 32)  # one scale per group of 32 inputs
    int4_size = _size(quantized, tmp_path / "int4.pt")
    int8 = quantize(trained, QuantConfig(scheme="int8_weight_only", engine="torchao"))
    assert int4_size < 0.75 * _size(int8, tmp_path / "int8.pt")
    restored = load_quantized_state(tmp_path / "int4.pt")
    assert restored["1.weight"].dtype == torch.float32
    torch.testing.assert_close(restored["1.weight"], weight.dequantize(), atol=1e-6, rtol=0)
    x = _inputs(digits)
    with torch.no_grad():
        assert _cosine(quantized(x), trained(x)) > 0.97


def test_int4_pack_round_trip():
    codes = torch.randint(-8, 8, (5, 7), dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == 18
    assert torch.equal(unpack_int4(packed, (5, 7)), codes)


@pytest.mark.parametrize("scheme, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_casts_halve_the_file_and_keep_float32_outputs(trained, digits, tmp_path, scheme, dtype):
    quantized = quantize(trained, QuantConfig(scheme=scheme, engine="torch"))
    assert all(parameter.dtype == dtype for parameter in quantized.parameters())
    out = quantized(_inputs(digits))
    assert out.dtype == torch.float32
    assert _size(quantized, tmp_path / "h.pt") < 0.6 * _size(trained, tmp_path / "f.pt")


def test_qat_inserts_fake_quantization_trains_it_and_converts(trained, loaders, digits):
    calibration, validation = loaders
    seen = {}

    def finetune(prepared, config, callbacks=(), name="finetune", lr_scale=1.0):
        names = [type(module).__name__ for module in prepared.modules()]
        seen.update(fake_quant=sum("FakeQuantize" in kind for kind in names), epochs=config.epochs)
        seen.update(name=name, lr_scale=lr_scale)
        optimizer = torch.optim.SGD(prepared.parameters(), lr=0.01)
        prepared.train()
        for inputs, targets in calibration:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(prepared(inputs), targets).backward()
            optimizer.step()
        return TrainResult(prepared, [{"epoch": 1}], 1, False, 0.0)

    result = quantize_with_result(
        trained,
        QuantConfig(scheme="qat_int8", finetune={"epochs": 2}),
        calibration=calibration,
        validation=validation,
        finetune=finetune,
    )
    # QAT trains gently: a tenth of the recipe's rate unless finetune.lr says otherwise
    assert seen == {"fake_quant": seen["fake_quant"], "epochs": 2, "name": "qat", "lr_scale": 0.1}
    assert seen["fake_quant"] >= 4
    quantized = result.model
    kinds = {type(module).__name__ for module in quantized.modules()}
    assert not any("FakeQuantize" in kind for kind in kinds)
    from torch.ao.nn.quantized import Linear as QuantizedLinear

    assert sum(isinstance(module, QuantizedLinear) for module in quantized.modules()) == 3
    assert result.fidelity.agreement > 0.9
    assert result.history == [{"epoch": 1}]
