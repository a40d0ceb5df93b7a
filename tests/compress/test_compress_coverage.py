"""Every weight a verb can cover is covered or named; failures leave the caller's model as it was."""

from __future__ import annotations

import tempfile

import pytest
import torch
from torch import nn

import optiforge
from optiforge.compress import (
    FactorizeConfig,
    PruneConfig,
    ShareConfig,
    factorize_with_result,
    load_packed,
    prune_with_result,
    share_with_result,
    weight_sparsity,
    write_packed,
)
from optiforge.errors import ModelError
from optiforge.models.builtin import count_parameters


class TiedLanguageModel(nn.Module):
    """An embedding whose matrix the output layer shares (GPT-2's lm_head and wte)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.recurrent = nn.LSTM(16, 16, batch_first=True)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.position = nn.Parameter(torch.randn(6, 16))
        self.output = nn.Linear(16, 50, bias=False)
        self.output.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens) + self.position
        hidden = self.recurrent(hidden)[0]
        hidden = self.attention(hidden, hidden, hidden, need_weights=False)[0]
        return self.output(hidden)


def _tokens() -> torch.Tensor:
    return torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))


def test_magnitude_pruning_covers_rnn_attention_and_tied_weights_once():
    torch.manual_seed(0)
    model = TiedLanguageModel()
    result = prune_with_result(model, PruneConfig(sparsity=0.5, scope="layer"), example_inputs=_tokens())
    assert result.layers == ["embed", "output", "recurrent", "attention", "attention.out_proj"]
    for tensor in [model.embed.weight, model.recurrent.weight_hh_l0, model.attention.in_proj_weight]:
        assert 0.3 < float((tensor == 0).float().mean()) < 0.7
    assert model.output.weight is model.embed.weight  # still tied, pruned once
    assert result.weight_sparsity == pytest.approx(0.5, abs=0.01)
    assert result.info()["layers_skipped"] == ["position (a raw parameter of TiedLanguageModel, not a layer weight)"]


def test_a_tied_tensor_an_excluded_layer_shares_is_left_whole_and_named():
    torch.manual_seed(0)
    model = TiedLanguageModel()
    result = prune_with_result(model, PruneConfig(sparsity=0.5, layers={"exclude": ["output"]}))
    assert "embed" not in result.layers and int((model.embed.weight == 0).sum()) == 0
    assert "tied to output.weight" in result.reasons["embed"]


def test_sharing_covers_recurrent_weights():
    torch.manual_seed(0)
    model = TiedLanguageModel()
    share_with_result(model, ShareConfig(clusters=4), example_inputs=_tokens())
    assert torch.unique(model.recurrent.weight_ih_l0).numel() <= 4


def test_weight_sparsity_is_over_every_covered_weight():
    model = TiedLanguageModel()
    with torch.no_grad():
        model.embed.weight.zero_()
    covered = 50 * 16 + sum(p.numel() for n, p in model.recurrent.named_parameters() if n.startswith("weight"))
    covered += 16 * 48 + 16 * 16  # in_proj_weight and out_proj
    assert weight_sparsity(model) == pytest.approx(50 * 16 / covered)


def test_factorize_leaves_attention_out_proj_whole_and_the_result_runs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.Linear(64, 64))
    attention = TiedLanguageModel()
    attention.extra = model
    result = factorize_with_result(attention, FactorizeConfig(rank_ratio=0.25), example_inputs=_tokens())
    assert "attention.out_proj" in result.reasons and "attention.out_proj" not in result.layers
    assert attention(_tokens()).shape == (2, 6, 50)


def test_dynamic_int8_refuses_a_model_without_linear_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ModelError, match="int8_dynamic' quantizes Linear layers.*int8_static"):
        optiforge.quantize(model, optiforge.QuantConfig(scheme="int8_dynamic", engine="torch"))


def test_dynamic_int8_leaves_attention_out_proj_float_and_runs():
    from optiforge.quantization import quantize_with_result

    model = TiedLanguageModel()
    result = quantize_with_result(model, optiforge.QuantConfig(scheme="int8_dynamic", engine="torch"))
    assert "attention.out_proj" in result.unsupported_layers
    assert result.model(_tokens()).shape == (2, 6, 50)


def test_int8_models_count_their_packed_weights():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    quantized = optiforge.quantize(model, optiforge.QuantConfig(scheme="int8_dynamic", engine="torch"))
    assert count_parameters(quantized)[0] == count_parameters(model)[0] == 16 * 32 + 32 + 32 * 4 + 4


def test_quantize_without_output_dir_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    loader = [torch.randn(8, 16) for _ in range(2)]
    quantized = optiforge.quantize(model, optiforge.QuantConfig(scheme="int8_static", engine="onnxruntime"), loader)
    assert list(tmp_path.iterdir()) == []
    assert quantized(torch.randn(3, 16)).shape == (3, 4)
    with pytest.raises(ModelError, match="format 'onnx'"):
        write_packed(quantized, tmp_path / "model.ofpk")


def test_a_loaded_lstm_runs(tmp_path):
    torch.manual_seed(0)
    model = TiedLanguageModel()
    loaded = load_packed(write_packed(model, tmp_path / "model.ofpk"), TiedLanguageModel())
    assert torch.equal(loaded(_tokens()), model(_tokens()))


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.gain = nn.Parameter(torch.ones(16))
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(x) * self.gain.view(1, 16))


@pytest.mark.filterwarnings("ignore:Unwrapped parameters")
def test_structured_pruning_that_fails_names_the_raw_parameter_and_gives_the_model_back():
    pytest.importorskip("torch_pruning")
    model = Scaled()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ModelError, match="'gain'"):
        prune_with_result(model, PruneConfig(method="structured", sparsity=0.5), example_inputs=torch.randn(2, 8))
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in before.items())
    assert model(torch.randn(2, 8)).shape == (2, 2)
