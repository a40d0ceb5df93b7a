"""``lr: auto``: the range test on a copy of the model picks the learning rate.

The range test (:mod:`optiforge.training.lr_find`) raises the rate from
``START_LR`` to ``END_LR`` over ``STEPS`` mini-batches of the batch size the
run will use, so no batch-size rescaling is needed afterwards. A model whose
loss does not fall anywhere in that range cannot be given a rate; that is the
user's to fix (frozen weights, a dead output layer, wrong targets).

The rate is the range test's suggestion, the rate at the lowest smoothed loss
divided by ten, for a rate that has to stay stable all run. Under a one-cycle
schedule it is the peak instead, a third of the rate at the lowest loss: the
cycle spends most steps well below its peak, and super-convergence (Smith &
Topin 2017, arXiv:1708.07120) takes the peak near the largest rate at which
the loss still falls. On MNIST-1D's cnn1d models a 10-epoch cycle peaking at
a third reached 96% in 6-7 epochs on 2 seeds of 3; peaking at a fifth or a
tenth it reached 96% on none (a constant tenth: every seed, in 9-16 epochs).
"""

from __future__ import annotations

import copy

from torch import nn

from optiforge.config import HardwareConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import TrainingError
from optiforge.training.lr_find import lr_find

START_LR = 1e-5
END_LR = 10.0
STEPS = 100
ONE_CYCLE_PEAK_BELOW_MINIMUM = 3.0  # one-cycle's peak: the rate at the lowest loss divided by this
MIN_FALL = 0.02  # a relative fall of the smoothed loss below this is noise, not learning


def choose_lr(model: nn.Module, data: TaskData, config: TrainConfig, hardware: HardwareConfig) -> tuple[float, str]:
    """The suggested rate and a sentence saying how it was found."""
    found = lr_find(
        copy.deepcopy(model), data, config, hardware=hardware, start_lr=START_LR, end_lr=END_LR, steps=STEPS
    )
    first, lowest = found.losses[0], min(found.losses)
    if not lowest < first * (1 - MIN_FALL):
        raise TrainingError(
            f"train.optimizer.lr: auto: the loss never fell during the range test ({START_LR:g} to "
            f"{END_LR:g} over {len(found.losses)} steps of batch {config.batch_size}; from {first:.4g}, lowest "
            f"{lowest:.4g}); check that the model's weights are trainable and the targets match the outputs, "
            "or give a number for train.optimizer.lr"
        )
    lowest_at = found.learning_rates[found.losses.index(lowest)]
    tested = f"range test {START_LR:g} to {END_LR:g} over {len(found.losses)} steps of batch {config.batch_size}"
    if config.schedule.name == "onecycle":
        chosen = max(START_LR, lowest_at / ONE_CYCLE_PEAK_BELOW_MINIMUM)
        return (
            chosen,
            f"{tested}: lowest smoothed loss at {lowest_at:.3g}, one-cycle peaks at a third of it, {chosen:.3g}",
        )
    return (
        found.suggested_lr,
        f"{tested}: lowest smoothed loss at {lowest_at:.3g}, a tenth of it is {found.suggested_lr:.3g}",
    )
