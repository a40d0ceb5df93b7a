"""FSDP with gradient accumulation reduce-scatters once per optimizer step, and trains the same weights.

Measured on 2 real Gloo processes (fsdp_accumulation_worker.py, launched by two_process_worker.py).
"""

import pytest
from fsdp_accumulation_worker import ACCUMULATION_STEPS
from parallel_launch import largest_difference
from parallel_worker import tiny_data, tiny_model, train_config

import optiforge

pytestmark = pytest.mark.distributed

# Float32 sums in a different order (local sums, then one reduce-scatter): differences of ~1e-7 per step.
WEIGHT_TOLERANCE = 1e-5
# 512 samples, global batch 32: 16 backward passes per process and epoch, in windows of 3 (the last of 1)
OPTIMIZER_STEPS_PER_EPOCH = 6
BACKWARDS_PER_EPOCH = 16
SHARDED_BLOCKS = 3  # the tiny model's three Linear layers, each sharded on its own


@pytest.fixture(scope="module")
def ranks(two_process_results):
    return [rank["fsdp_accumulation"] for rank in two_process_results]


def test_accumulation_reduce_scatters_only_on_each_optimizer_steps_last_backward(ranks):
    epochs = train_config().epochs
    for rank in ranks:
        assert rank["every_backward"]["reduce_scatters"] == SHARDED_BLOCKS * BACKWARDS_PER_EPOCH * epochs
        assert rank["skipping"]["reduce_scatters"] == SHARDED_BLOCKS * OPTIMIZER_STEPS_PER_EPOCH * epochs


def test_skipping_the_reduce_scatter_between_steps_trains_the_same_weights(ranks):
    reference = ranks[0]["every_backward"]["weights"]
    assert largest_difference(reference, tiny_model().state_dict()) > 1e-2  # training moved the weights
    for rank in ranks:
        assert largest_difference(rank["skipping"]["weights"], reference) < WEIGHT_TOLERANCE


def test_sharded_accumulation_matches_one_process(ranks):
    config = train_config().model_copy(
        update={"gradients": optiforge.GradientConfig(accumulation_steps=ACCUMULATION_STEPS)}
    )
    single = optiforge.train(tiny_model(), tiny_data(), config, progress=False)
    assert largest_difference(ranks[0]["skipping"]["weights"], single.model.state_dict()) < WEIGHT_TOLERANCE
