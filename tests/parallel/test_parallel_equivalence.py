"""Equivalence with one process, measured on real Gloo processes.

DDP on 2 processes with batch b each == 1 process with batch 2b; FSDP == DDP;
tensor parallel == one process; a pipeline step (GPipe, 1F1B) gives the
unsplit model's loss, gradients and outputs.
"""

import pytest
import torch
from parallel_launch import largest_difference, torchrun
from parallel_worker import tiny_data, tiny_model, train_config

import optiforge

pytestmark = pytest.mark.distributed

# Float32 sums in a different order (all-reduce vs one batch): differences of ~1e-7 per step, 32 steps.
WEIGHT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def results(two_process_results):
    return two_process_results[0]["equivalence"]


@pytest.fixture(scope="module")
def single_process():
    result = optiforge.train(tiny_model(), tiny_data(), train_config(), progress=False)
    return result


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "tensor"])
def test_two_processes_train_the_same_weights_as_one_process_with_the_global_batch(results, single_process, strategy):
    reference = single_process.model.state_dict()
    initial = tiny_model().state_dict()
    assert largest_difference(reference, initial) > 1e-2  # training moved the weights
    assert largest_difference(results[strategy]["weights"], reference) < WEIGHT_TOLERANCE


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "tensor"])
def test_reported_losses_are_over_all_processes(results, single_process, strategy):
    for epoch, expected in zip(results[strategy]["history"], single_process.history, strict=True):
        assert epoch["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
        assert epoch["val_accuracy"] == pytest.approx(expected["val_accuracy"])


def test_fsdp_matches_ddp(results):
    assert largest_difference(results["fsdp"]["weights"], results["ddp"]["weights"]) < WEIGHT_TOLERANCE


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_step_gives_the_unsplit_loss_gradients_and_outputs(results, schedule):
    model = tiny_model()
    inputs, targets = tiny_data().train.tensors
    inputs, targets = inputs[:32], targets[:32]
    loss = torch.nn.functional.cross_entropy(model(inputs), targets)
    loss.backward()
    step = results[schedule]
    assert step["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert set(step["grads"]) == {name for name, _ in model.named_parameters()}  # every stage contributed
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(step["grads"][name], parameter.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(step["outputs"], model(inputs), atol=1e-6, rtol=1e-5)


def test_tensor_parallel_attention_block_splits_heads_and_matches_the_whole_block(results):
    from parallel_models import SelfAttention

    attention = results["attention"]
    assert attention["plan"] == {"q_proj": "colwise", "k_proj": "colwise", "v_proj": "colwise", "out_proj": "rowwise"}
    torch.manual_seed(0)
    block = SelfAttention()
    tokens = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    outputs = block(tokens)
    outputs.square().sum().backward()
    torch.testing.assert_close(attention["outputs"], outputs.detach(), atol=1e-5, rtol=1e-5)
    for name, parameter in block.named_parameters():
        torch.testing.assert_close(attention["grads"][name], parameter.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_hybrid_meshes_on_four_processes_train_the_one_process_weights(tmp_path, single_process):
    out = tmp_path / "hybrid.pt"
    finished = torchrun("parallel_worker.py", str(out), nproc=4, timeout=300)
    assert finished.returncode == 0, finished.stdout[-4000:]
    results = torch.load(out, weights_only=False)
    reference = single_process.model.state_dict()
    for inner in ("shard", "tensor", "pipeline"):
        assert largest_difference(results[inner]["weights"], reference) < WEIGHT_TOLERANCE, inner
        assert results[inner]["history"][-1]["train_loss"] == pytest.approx(
            single_process.history[-1]["train_loss"], rel=1e-5
        )
