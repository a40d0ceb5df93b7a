"""The training engine: one loop, optimizers, schedules, checkpoints, LR finder."""

from optiforge.training.callbacks import Callback, TrainState
from optiforge.training.loop import TrainResult, train
from optiforge.training.lr_find import LRFindResult, lr_find

__all__ = ["Callback", "LRFindResult", "TrainResult", "TrainState", "lr_find", "train"]
