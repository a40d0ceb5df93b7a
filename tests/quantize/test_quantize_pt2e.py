"""PT2E int8 (torchao's X86InductorQuantizer): static, dynamic, QAT, the ``.pt2`` program, ``engine: auto``.

Fidelity is checked on the converted reference graph (``model.model``), which computes the same quantized
arithmetic as the int8 kernels inductor compiles it into; one slow test compiles and compares the two.
Tolerances: a trained MNIST-1D CNN keeps >= 0.97 of its top-1 predictions and output cosine >= 0.99 under
int8 with per-tensor activations (the float model's own validation accuracy is about 0.9, so a few
borderline samples may flip; more than 3% would mean a wrong scale, not rounding).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig

import pytest
import torch
from torch import nn

import optiforge
from optiforge.data.loaders import make_loader
from optiforge.quantization import QuantConfig, quantize_with_result, save_quantized
from optiforge.quantization.pt2e_engine import Conv1dAs2d, PT2EModel, conv1d_as_conv2d
from optiforge.quantization.schemes import candidates
from optiforge.training.loop import TrainResult


@pytest.fixture(scope="module")
def mnist1d():
    return optiforge.build_data(optiforge.DataConfig(name="mnist1d"))


@pytest.fixture(scope="module")
def cnn(mnist1d):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="cnn1d", channels=[8, 16], kernel_size=5), mnist1d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model.train()
    for _ in range(2):  # a few hundred steps of a small CNN: trained enough that predictions mean something
        for inputs, targets in make_loader(mnist1d.train, 128, shuffle=True, seed=0):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def calibration(mnist1d):
    return make_loader(mnist1d.train, 64, shuffle=True, seed=0)


@pytest.fixture(scope="module")
def static_int8(cnn, calibration):
    """The CNN quantized once to static int8 by PT2E: several tests look at the same result."""
    return quantize_with_result(cnn, QuantConfig(scheme="int8_static", engine="pt2e"), calibration=calibration)


def _held_tensors(graph: nn.Module) -> list[torch.Tensor]:
    return [*graph.buffers(), *(value for value in vars(graph).values() if torch.is_tensor(value))]


def _test_inputs(data) -> torch.Tensor:
    return next(iter(make_loader(data.test, 512)))[0]


def _agreement_and_cosine(quantized: nn.Module, model: nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        expected, actual = model(inputs), quantized(inputs)
    agreement = (expected.argmax(1) == actual.argmax(1)).float().mean().item()
    return agreement, nn.functional.cosine_similarity(expected, actual).mean().item()


def test_conv1d_runs_as_conv2d_with_the_same_outputs(cnn, mnist1d):
    rewritten = conv1d_as_conv2d(cnn).eval()
    assert sum(isinstance(module, Conv1dAs2d) for module in rewritten.modules()) == 2
    assert not any(type(module) is nn.BatchNorm1d for module in rewritten.modules())  # folded into the block
    inputs = mnist1d.example_input(32)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(inputs), cnn(inputs), atol=1e-5, rtol=1e-4)


def test_static_int8_keeps_the_float_predictions(cnn, static_int8, mnist1d):
    result = static_int8
    assert isinstance(result.model, PT2EModel) and result.engine == "pt2e"
    graph = result.model.model
    int8_weights = [tensor for tensor in _held_tensors(graph) if tensor.dtype == torch.int8 and tensor.dim() > 1]
    assert len(int8_weights) == 3  # two convolutions and the classifier hold int8 weights
    agreement, cosine = _agreement_and_cosine(graph, cnn, _test_inputs(mnist1d))
    assert agreement >= 0.97 and cosine >= 0.99
    assert cosine < 0.999999  # really a different computation


def test_dynamic_int8_quantizes_linear_layers_and_leaves_convolutions_float(cnn, calibration, mnist1d):
    result = quantize_with_result(cnn, QuantConfig(scheme="int8_dynamic", engine="pt2e"), calibration=calibration)
    convolutions = [name for name, module in cnn.named_modules() if isinstance(module, nn.Conv1d)]
    assert result.unsupported_layers == convolutions
    agreement, cosine = _agreement_and_cosine(result.model.model, cnn, _test_inputs(mnist1d))
    assert agreement >= 0.97 and cosine >= 0.99


@pytest.mark.slow  # torchao's QAT prepare and convert match Conv+BatchNorm patterns by tracing: minutes on 2 cores
def test_qat_trains_the_fake_quantized_graph_and_converts(cnn, calibration, mnist1d):
    seen = {}

    def finetune(prepared, config, callbacks=(), name="finetune", lr_scale=1.0):
        seen["fake_quantizers"] = sum("FakeQuantize" in type(module).__name__ for module in prepared.modules())
        before = {key: value.clone() for key, value in prepared.state_dict().items() if value.is_floating_point()}
        optimizer = torch.optim.SGD(prepared.parameters(), lr=0.001)
        prepared.train()  # BatchNorm statistics and fake-quantization ranges update
        for step, (inputs, targets) in enumerate(calibration):
            optimizer.zero_grad()
            nn.functional.cross_entropy(prepared(inputs), targets).backward()
            optimizer.step()
            if step == 8:
                break
        after = prepared.state_dict()
        seen["changed"] = sum(not torch.equal(before[key], after[key]) for key in before)
        return TrainResult(prepared, [{"epoch": 1}], 1, False, 0.0)

    result = quantize_with_result(
        cnn,
        QuantConfig(scheme="qat_int8", engine="pt2e", finetune={"epochs": 1}),
        calibration=calibration,
        finetune=finetune,
    )
    assert seen["fake_quantizers"] >= 4 and seen["changed"] > 0
    assert len(result.history) == 1
    graph = result.model.model
    assert not any("FakeQuantize" in type(module).__name__ for module in graph.modules())
    inputs, targets = next(iter(make_loader(mnist1d.test, 512)))
    with torch.no_grad():
        float_accuracy = (cnn(inputs).argmax(1) == targets).float().mean().item()
        accuracy = (graph(inputs).argmax(1) == targets).float().mean().item()
    # nine fine-tuning steps move a briefly trained CNN's borderline predictions: compare accuracy, not agreement
    assert accuracy >= float_accuracy - 0.05


def test_the_pt2_program_loads_in_a_process_with_torch_alone(static_int8, mnist1d, tmp_path):
    result = static_int8
    path = save_quantized(result.model, tmp_path / "model-int8_static.pt")
    assert path.suffix == ".pt2"
    inputs = mnist1d.example_input(7)  # a batch size the program was not captured with
    with torch.no_grad():
        expected = result.model.model(inputs)
    torch.save({"inputs": inputs, "expected": expected}, tmp_path / "check.pt")
    site_packages = sysconfig.get_paths()["purelib"]
    # -I -S: no environment, no user site, no .pth files (an editable optiforge install adds one)
    code = (
        "import sys, importlib.util\n"
        f"sys.path.append({site_packages!r})\n"
        "assert importlib.util.find_spec('optiforge') is None\n"
        "import torch\n"
        "import torch.ao.quantization.fx._decomposed  # registers torch's quantize/dequantize ops\n"
        f"program = torch.export.load({str(path)!r}).module()\n"
        f"check = torch.load({str(tmp_path / 'check.pt')!r})\n"
        "print((program(check['inputs']) - check['expected']).abs().max().item())\n"
    )
    finished = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert float(finished.stdout.strip().splitlines()[-1]) < 1e-5


@pytest.mark.parametrize("flags, measured", [({"avx512_vnni", "amx_int8"}, True), ({"avx512_vnni"}, False)])
def test_engine_auto_measures_pt2e_where_amx_int8_makes_it_pay(monkeypatch, flags, measured):
    from optiforge.quantization import schemes

    monkeypatch.setattr(schemes, "cpu_flags", lambda: frozenset(flags))
    assert ("pt2e" in candidates("int8_static")) == measured
    assert ("pt2e" in candidates("int8_dynamic")) == measured
    assert candidates("qat_int8") == ["torch"]  # auto fine-tunes once; QAT through PT2E is asked for by name
    with pytest.raises(optiforge.ConfigError, match="engine 'pt2e' cannot run scheme 'int4_weight_only'"):
        QuantConfig(scheme="int4_weight_only", engine="pt2e")


def test_a_model_export_cannot_capture_is_refused_with_the_engines_to_try(calibration):
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(40, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.flatten(1)
            return self.linear(flat) if flat.sum() > 0 else -self.linear(flat)  # data-dependent branch

    with pytest.raises(optiforge.OptiforgeError, match="torch.export cannot capture DataDependent.*engine: torch"):
        quantize_with_result(DataDependent(), QuantConfig(scheme="int8_static", engine="pt2e"), calibration=calibration)


@pytest.mark.slow
def test_compiled_int8_matches_the_reference_graph(static_int8, mnist1d):
    result = static_int8
    inputs = mnist1d.example_input(64)
    with torch.no_grad():
        compiled, reference = result.model(inputs), result.model.model(inputs)
    assert result.model.fallback is None
    # inductor's int8 kernels requantize between layers as the reference graph does; rounding differs slightly
    assert nn.functional.cosine_similarity(compiled, reference).min().item() > 0.999
