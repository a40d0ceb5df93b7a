"""``parallel.ddp`` reaches DistributedDataParallel, and accumulation all-reduces once per optimizer step.

Measured on 2 real Gloo processes (ddp_options_worker.py, launched by two_process_worker.py).
"""

import pytest
from ddp_options_worker import ACCUMULATION_STEPS
from parallel_launch import largest_difference
from parallel_worker import tiny_data, tiny_model, train_config

import optiforge

pytestmark = pytest.mark.distributed

# Float32 sums in a different order (local sums, then one all-reduce): differences of ~1e-7 per step.
WEIGHT_TOLERANCE = 1e-5
# 512 samples, global batch 32: 16 backward passes per process and epoch, in windows of 3 (the last of 1)
OPTIMIZER_STEPS_PER_EPOCH = 6
BACKWARDS_PER_EPOCH = 16


@pytest.fixture(scope="module")
def ranks(two_process_results):
    return [rank["ddp_options"] for rank in two_process_results]


def test_ddp_options_reach_the_wrapper(ranks):
    assert ranks[0]["default"] == {
        "bucket_bytes_cap": 25 * 1024 * 1024,
        "gradient_as_bucket_view": True,
        "static_graph": False,
    }
    assert ranks[0]["chosen"] == {
        "bucket_bytes_cap": int(1.5 * 1024 * 1024),
        "gradient_as_bucket_view": False,
        "static_graph": True,
    }


def test_accumulation_all_reduces_only_on_each_optimizer_steps_last_backward(ranks):
    epochs = train_config().epochs
    assert ranks[0]["every_backward"]["reductions"] == BACKWARDS_PER_EPOCH * epochs
    assert ranks[0]["no_sync"]["reductions"] == OPTIMIZER_STEPS_PER_EPOCH * epochs
    # a static graph is recorded on the first backward, which therefore all-reduces as well
    assert ranks[0]["static_graph"]["reductions"] == OPTIMIZER_STEPS_PER_EPOCH * epochs + 1


@pytest.mark.parametrize("run", ["no_sync", "static_graph"])
def test_skipping_the_all_reduce_between_steps_trains_the_same_weights(ranks, run):
    reference = ranks[0]["every_backward"]["weights"]
    assert largest_difference(reference, tiny_model().state_dict()) > 1e-2  # training moved the weights
    for rank in ranks:  # the replicas stay equal: the last backward of every step, partial windows too, synchronized
        assert largest_difference(rank[run]["weights"], reference) < WEIGHT_TOLERANCE


def test_data_parallel_accumulation_matches_one_process(ranks):
    config = train_config().model_copy(
        update={"gradients": optiforge.GradientConfig(accumulation_steps=ACCUMULATION_STEPS)}
    )
    single = optiforge.train(tiny_model(), tiny_data(), config, progress=False)
    assert largest_difference(ranks[0]["no_sync"]["weights"], single.model.state_dict()) < WEIGHT_TOLERANCE
