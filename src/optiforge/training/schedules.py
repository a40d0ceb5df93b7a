"""Learning-rate schedules from ``torch.optim.lr_scheduler`` with linear warm-up.

Schedules are stepped once per optimizer step (epochs are converted to steps),
so warm-up and decay are smooth even with few epochs. ``plateau`` is stepped
once per epoch on the validation metric, after warm-up.
"""

from __future__ import annotations

from torch.optim import Optimizer, lr_scheduler

from optiforge.config import ScheduleConfig


class Schedule:
    """A per-step scheduler (warm-up then the main curve) and an optional plateau one."""

    def __init__(self, optimizer: Optimizer, config: ScheduleConfig, epochs: int, steps_per_epoch: int) -> None:
        self.config = config
        total = max(1, epochs * steps_per_epoch)
        warmup = min(total - 1, int(round(config.warmup_epochs * steps_per_epoch)))
        main_steps = max(1, total - warmup)
        base_lr = optimizer.param_groups[0]["lr"]
        main = self._main(optimizer, config, main_steps, steps_per_epoch, base_lr)
        self.plateau = None
        if config.name == "plateau":
            self.plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=config.gamma, patience=config.patience, min_lr=config.min_lr
            )
        if warmup > 0:
            start = lr_scheduler.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
            self.step_scheduler = lr_scheduler.SequentialLR(optimizer, [start, main], milestones=[warmup])
        else:
            self.step_scheduler = main
        self.warmup_steps = warmup
        self.steps = 0

    @staticmethod
    def _main(optimizer: Optimizer, config: ScheduleConfig, steps: int, steps_per_epoch: int, base_lr: float):
        name = config.name
        if name == "step":
            return lr_scheduler.StepLR(optimizer, step_size=config.step_epochs * steps_per_epoch, gamma=config.gamma)
        if name == "multistep":
            milestones = [m * steps_per_epoch for m in config.milestones]
            return lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.gamma)
        if name == "exponential":
            return lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma ** (1.0 / steps_per_epoch))
        if name == "cosine":
            return lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=config.min_lr)
        if name == "onecycle":
            # one-cycle has its own warm-up phase (Smith & Topin 2017, arXiv:1708.07120)
            return lr_scheduler.OneCycleLR(optimizer, max_lr=base_lr, total_steps=steps + 1)
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)

    def step(self) -> None:
        self.steps += 1
        self.step_scheduler.step()

    def epoch_end(self, metric: float | None) -> None:
        if self.plateau is not None and metric is not None and self.steps >= self.warmup_steps:
            self.plateau.step(metric)

    def state_dict(self) -> dict:
        state = {"step": self.step_scheduler.state_dict(), "steps": self.steps}
        if self.plateau is not None:
            state["plateau"] = self.plateau.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_scheduler.load_state_dict(state["step"])
        self.steps = state["steps"]
        if self.plateau is not None and "plateau" in state:
            self.plateau.load_state_dict(state["plateau"])
