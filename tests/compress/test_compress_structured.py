"""Structured pruning: layers really shrink, outputs equal a masked reference, errors name the layer."""

import copy

import pytest
import torch
from torch import nn

from optiforge.compress import PruneConfig, prune
from optiforge.errors import ConfigError, ModelError


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))


def _kept_rows(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Indices of the original rows that survive (rows are compared on the columns both have)."""
    kept = []
    for row in pruned:
        matches = [
            i
            for i in range(original.shape[0])
            if i not in kept
            and torch.equal(original[i, : row.numel()] if original.shape[1] == row.numel() else original[i], row)
        ]
        kept.append(matches[0] if matches else -1)
    return kept


def test_neurons_are_removed_and_outputs_equal_the_masked_reference():
    model = _mlp()
    reference = copy.deepcopy(model)
    inputs = torch.randn(16, 20)
    prune(model, PruneConfig(method="structured", sparsity=0.5, scope="layer"), example_inputs=torch.randn(2, 20))
    assert (model[1].out_features, model[3].out_features, model[5].out_features) == (20, 15, 5)
    kept = _kept_rows(reference[1].weight.detach(), model[1].weight.detach())
    assert -1 not in kept
    # the masked reference: zero the removed neurons (and the next layer's columns from them)
    with torch.no_grad():
        removed = [i for i in range(40) if i not in kept]
        reference[1].weight[removed] = 0
        reference[1].bias[removed] = 0
        kept2 = _kept_rows(reference[3].weight.detach()[:, kept], model[3].weight.detach())
        removed2 = [i for i in range(30) if i not in kept2]
        reference[3].weight[removed2] = 0
        reference[3].bias[removed2] = 0
    assert torch.allclose(model(inputs), reference(inputs), atol=1e-5)


def test_cnn_with_batchnorm_and_flatten_shrinks_consistently():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 16, 5, stride=2, padding=2),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Conv1d(16, 32, 5, stride=2, padding=2),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 10, 10),
    )
    params_before = sum(p.numel() for p in model.parameters())
    prune(model, PruneConfig(method="structured", sparsity=0.5, scope="layer"), example_inputs=torch.randn(2, 1, 40))
    assert model[0].out_channels == 8 and model[1].num_features == 8 and model[3].in_channels == 8
    assert model[3].out_channels == 16 and model[7].in_features == 16 * 10 and model[7].out_features == 10
    assert sum(p.numel() for p in model.parameters()) < 0.4 * params_before
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_residual_add_keeps_both_branches_the_same_width():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(8, 32)
            self.branch = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
            self.head = nn.Linear(32, 3)

        def forward(self, x):
            h = self.stem(x)
            return self.head(h + self.branch(h))

    torch.manual_seed(0)
    model = Residual()
    prune(model, PruneConfig(method="structured", sparsity=0.5, scope="layer"), example_inputs=torch.randn(2, 8))
    assert model.stem.out_features == model.branch[2].out_features < 32
    assert model.branch[0].out_features == 32 and model.head.out_features == 3
    assert model(torch.randn(4, 8)).shape == (4, 3)


def test_taylor_importance_and_iterative_steps():
    import optiforge

    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32, 32]), data)
    calls = []

    def finetune(model, config, callbacks=(), name="finetune", lr_scale=1.0):
        calls.append((name, config.epochs, model[1].out_features))
        return optiforge.TrainResult(model, [{"epoch": 1}], config.epochs)

    prune(
        model,
        PruneConfig(
            method="structured",
            sparsity=0.5,
            scope="layer",
            finetune={"epochs": 3},
            structured={"importance": "taylor", "iterative_steps": 3},
        ),
        data,
        finetune=finetune,
    )
    assert model[1].out_features == 16
    assert [call[:2] for call in calls] == [("finetune-1", 1), ("finetune-2", 1), ("finetune-3", 1)]
    assert calls[0][2] > calls[1][2] > calls[2][2] == 16  # channels shrink step by step


def test_structured_needs_inputs_to_trace():
    with pytest.raises(ConfigError, match="example_inputs"):
        prune(_mlp(), PruneConfig(method="structured"))


class Scaled(nn.Module):
    """A per-channel parameter used in forward that the dependency graph cannot see."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.gain = nn.Parameter(torch.ones(16))
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.fc(x) * self.gain.view(1, 16))


@pytest.mark.filterwarnings("ignore:Unwrapped parameters")
def test_an_architecture_the_graph_cannot_handle_names_the_layer():
    with pytest.raises(ModelError, match="'head'|'fc'|gain"):
        prune(Scaled(), PruneConfig(method="structured", sparsity=0.5, scope="layer"), example_inputs=torch.randn(2, 8))


def _tiny_bert():
    pytest.importorskip("transformers")
    import factories

    return factories.tiny_bert(pooling=False)


def test_bert_heads_and_feed_forward_neurons_are_removed_hidden_width_kept():
    model = _tiny_bert()
    inputs = {"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    prune(
        model,
        PruneConfig(method="structured", sparsity=0.5, scope="layer", structured={"prune_heads": True}),
        example_inputs=inputs,
    )
    for layer in model.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 2 and attention.query.out_features == 16
        assert layer.intermediate.dense.out_features == 32
        assert layer.output.dense.out_features == 32 and layer.attention.output.dense.out_features == 32
    output = model(**inputs).last_hidden_state
    assert output.shape == (2, 8, 32) and torch.isfinite(output).all()


def test_round_to_keeps_channel_counts_multiples_and_cnn2d_pools_follow():
    import optiforge

    data = optiforge.build_data(optiforge.DataConfig(name="digits", image=True))
    model = optiforge.build_model(optiforge.ModelConfig(name="cnn2d", channels=[16, 32], hidden=64), data)
    prune(model, PruneConfig(method="structured", sparsity=0.6, scope="layer", structured={"round_to": 4}), data)
    convs = [layer for layer in model if isinstance(layer, nn.Conv2d)]
    assert [conv.out_channels % 4 for conv in convs] == [0, 0]
    assert convs[0].out_channels < 16 and convs[1].out_channels < 32
    assert model(data.example_input(3)).shape == (3, 10)


def test_an_analysis_past_its_cpu_budget_refuses_and_leaves_the_model_as_it_was(monkeypatch):
    import optiforge.compress.structured as structured

    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    monkeypatch.setattr(structured, "ANALYSIS_BUDGET_SECONDS", 0.0)  # spent before the analysis starts
    with pytest.raises(ModelError, match=r"cannot prune Sequential: .* ran past 0 s of CPU time"):
        prune(model, PruneConfig(method="structured", sparsity=0.5), example_inputs=torch.randn(2, 20))
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in before.items())
    # the budget is handed back: a later call with the default budget prunes
    monkeypatch.undo()
    pruned = prune(model, PruneConfig(method="structured", sparsity=0.5), example_inputs=torch.randn(2, 20))
    assert pruned[1].out_features < 40
