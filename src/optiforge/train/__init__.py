"""The training engine: one loop, optimizers, schedules, checkpoints, LR finder."""

from optiforge.train.callbacks import Callback, TrainState
from optiforge.train.lr_find import LRFindResult, lr_find
from optiforge.train.loop import TrainResult, train

__all__ = ["Callback", "LRFindResult", "TrainResult", "TrainState", "lr_find", "train"]
