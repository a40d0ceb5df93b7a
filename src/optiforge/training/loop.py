"""The one training loop, read top to bottom.

Techniques act through named hooks (:mod:`optiforge.training.callbacks`);
parallelism through a :class:`~optiforge.parallel.Strategy`. A checkpoint is
written atomically after every epoch; with ``resume`` a killed run continues
from the last complete one and ends with the same weights as an uninterrupted
run (data order and RNG states are part of the checkpoint).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from optiforge.config import HardwareConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError, TrainingError
from optiforge.files import atomic_save
from optiforge.hardware import Precision, compile_model, resolve_device, set_threads
from optiforge.parallel import SingleProcess, Strategy
from optiforge.tasks import Task, task_for
from optiforge.training.callbacks import Callback, TrainState
from optiforge.training.checkpoint import (
    load_checkpoint,
    restore_training_state,
    resuming,
    rng_state,
    seed_everything,
    set_rng_state,
)
from optiforge.training.choices import resolve_choices
from optiforge.training.optimizers import build_optimizer, is_full_batch
from optiforge.training.precision_check import warn_if_bf16_is_slow
from optiforge.training.progress import progress_bar
from optiforge.training.schedules import Schedule
from optiforge.training.stop_at import StopAt
from optiforge.training.tensor_batches import make_batches
from optiforge.training.weight_average import WeightAverage

log = logging.getLogger("optiforge")

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainResult:
    """The trained model (unwrapped, on its device) and per-epoch history.

    ``choices`` says what training decided for itself and why (``lr: auto``,
    ``batch_size: auto``, ``stop_at``); ``config`` is the configuration as
    trained, with numbers in place of ``auto``.
    """

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    choices: dict = field(default_factory=dict)
    config: TrainConfig | None = None


def _improved(task: Task, value: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if task.higher_is_better else value < best - min_delta


def train(
    model: nn.Module,
    data: TaskData,
    config: TrainConfig = TrainConfig(),
    *,
    hardware: HardwareConfig = HardwareConfig(),
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    strategy: Strategy | None = None,
    task: Task | None = None,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` on ``data`` and return it with its history.

    >>> import optiforge
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), data)
    >>> result = optiforge.train(model, data, optiforge.TrainConfig(epochs=5), progress=False)
    >>> result.history[-1]["val_accuracy"] > result.history[0]["val_accuracy"] + 0.3
    True
    """
    started = time.perf_counter()
    strategy = strategy or SingleProcess()
    task = task or task_for(data.task, model)
    adds_loss = any(type(callback).compute_loss is not Callback.compute_loss for callback in callbacks)
    if strategy.runs_own_step and adds_loss:
        raise TrainingError(
            f"{description}: parallel.strategy '{strategy.name}' runs forward and backward inside its schedule, so a "
            "technique that adds a loss term (e.g. distillation) cannot train under it; use ddp or fsdp"
        )
    device = resolve_device(hardware.device)
    set_threads(hardware.threads)
    seed_everything(config.seed)
    model.to(device)
    precision = Precision(hardware.precision, device)
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    saved = load_checkpoint(checkpoint_path) if resume and checkpoint_path and checkpoint_path.is_file() else None

    single_process = isinstance(strategy, SingleProcess)
    if config.optimizer.weight_average is not None and not single_process:
        raise ConfigError(
            f"train.optimizer.weight_average: averages the weights of one process; parallel.strategy '{strategy.name}' "
            "splits or replicates them; remove train.optimizer.weight_average or train in one process"
        )
    config, choices = resolve_choices(
        model, data, config, hardware, single_process=single_process, saved=saved.get("choices") if saved else None
    )
    if saved is None:
        warn_if_bf16_is_slow(model, data, task, precision)
    seed_everything(config.seed)  # measuring drew random numbers; start where a run without measurements starts
    stop_at = StopAt(config.stop_at, task, len(data.val) > 0) if config.stop_at else None
    loss_function = task.training_loss(data.label_smoothing)

    batch_size = len(data.train) if is_full_batch(config.optimizer) else strategy.per_process_batch(config.batch_size)
    sampler = strategy.train_sampler(data.train, config.seed)
    # without a sampler or workers a tensor dataset is sliced on the device; otherwise a DataLoader
    on_device = hardware.data_on_device
    train_loader = make_batches(
        data.train,
        batch_size,
        device,
        on_device=on_device,
        shuffle=True,
        seed=config.seed,
        sampler=sampler,
        workers=data.workers,
    )
    val_sampler = strategy.eval_sampler(data.val)
    val_loader = (
        make_batches(data.val, 512, device, on_device=on_device, sampler=val_sampler) if len(data.val) else None
    )
    steps_per_epoch = math.ceil(len(train_loader) / config.gradients.accumulation_steps)
    every = config.validation.every_epochs
    # a fraction of an epoch: stop_at is also checked every this many optimizer steps within an epoch
    check_every_steps = max(1, round(every * steps_per_epoch)) if every < 1 and val_loader is not None else None

    # Wrap before building the optimizer: sharding strategies replace the parameters.
    forward_model = strategy.wrap(compile_model(model, hardware, data.example_input(2).to(device)), device)
    optimizer = build_optimizer(model, config.optimizer)
    schedule = Schedule(optimizer, config.schedule, config.epochs, steps_per_epoch)
    state = TrainState(forward_model, optimizer, device, config.epochs, steps_per_epoch)
    average = WeightAverage(model, config.optimizer.weight_average.decay) if config.optimizer.weight_average else None
    evaluated_model = average.model if average else forward_model  # what validation scores and training returns
    best_metric: float | None = None
    best_weights: dict | None = None
    epochs_without_improvement = 0

    def validate() -> dict[str, float]:
        return task.evaluate(evaluated_model, val_loader, device, precision.autocast, strategy.reduce_sums)

    def save_checkpoint(finished: bool) -> None:
        if checkpoint_path is None:
            return
        # Every process takes part: a sharded or split model is gathered or saved in shards.
        model_state, optimizer_state = strategy.checkpoint_state(model, optimizer, checkpoint_path.parent, state.epoch)
        if not strategy.is_main:
            return
        atomic_save(
            {
                "epoch": state.epoch,
                "step": state.step,
                "finished": finished,
                "model": model_state,
                "optimizer": optimizer_state,
                "schedule": schedule.state_dict(),
                "scaler": precision.scaler.state_dict(),
                "rng": rng_state(),
                "history": state.history,
                "best_metric": best_metric,
                "best_weights": best_weights,
                "epochs_without_improvement": epochs_without_improvement,
                "callbacks": [callback.state_dict() for callback in callbacks],
                "choices": choices,
                "weight_average": average.state_dict() if average else None,
            },
            checkpoint_path,
        )

    finished = False
    if saved is not None:
        restore_training_state(strategy, model, optimizer, saved, checkpoint_path)
        with resuming(checkpoint_path):
            schedule.load_state_dict(saved["schedule"])
            precision.scaler.load_state_dict(saved["scaler"])
            set_rng_state(saved["rng"])
            state.epoch, state.step, state.history = saved["epoch"], saved["step"], list(saved["history"])
            best_metric, best_weights = saved["best_metric"], saved["best_weights"]
            epochs_without_improvement = saved["epochs_without_improvement"]
            for callback, callback_state in zip(callbacks, saved["callbacks"], strict=False):
                callback.load_state_dict(callback_state)
            finished = saved["finished"]
            if average is not None and saved.get("weight_average") is not None:
                average.load_state_dict(saved["weight_average"])
        log.info("resumed %s from %s after epoch %d", description, checkpoint_path, state.epoch)

    for callback in callbacks:
        callback.on_train_start(state)
    with progress_bar(progress and strategy.is_main) as bar:
        epoch_bar = bar.add_task(description, total=config.epochs, completed=state.epoch, info="")
        step_bar = bar.add_task("  steps", total=len(train_loader), info="")
        while not finished and state.epoch < config.epochs and not state.stop:
            if hasattr(train_loader.sampler, "set_epoch"):
                train_loader.sampler.set_epoch(state.epoch)
            for callback in callbacks:
                callback.on_epoch_start(state)
            forward_model.train()
            loss_sum, batches = 0.0, 0
            reached_mid_epoch: dict[str, float] | None = None
            bar.reset(step_bar, total=len(train_loader))
            for index, (inputs, targets) in enumerate(train_loader):
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                for callback in callbacks:
                    inputs, targets = callback.transform_batch(state, inputs, targets)
                steps_now = (index + 1) % config.gradients.accumulation_steps == 0 or index + 1 == len(train_loader)
                # Accumulating, gradients are summed locally; processes exchange them on a step's last backward.
                with strategy.synchronizing(forward_model, synchronize=steps_now):
                    if strategy.runs_own_step:
                        # A pipeline schedule interleaves forward and backward over microbatches.
                        for callback in callbacks:
                            callback.before_backward(state)
                        loss = strategy.forward_backward(
                            forward_model, inputs, targets, loss_function, config.gradients.accumulation_steps
                        )
                    else:
                        with precision.autocast():
                            outputs = forward_model(inputs)
                            loss = loss_function(outputs.float(), targets)
                            for callback in callbacks:
                                loss = callback.compute_loss(state, inputs, targets, outputs, loss)
                    loss_value = loss.item()  # a CPU-GPU sync point, needed for the NaN check and the bar
                    if not math.isfinite(loss_value):
                        if checkpoint_path is None:
                            kept = "no checkpoint is kept (no checkpoint folder)"
                        elif checkpoint_path.is_file():
                            kept = f"last good checkpoint kept: '{checkpoint_path}'"
                        else:
                            kept = "no checkpoint was written yet (one is saved after each epoch)"
                        raise TrainingError(
                            f"{description}: the loss became {loss_value} at epoch {state.epoch + 1}, "
                            f"step {index + 1}; training stopped, {kept}. Try a lower learning rate or "
                            "gradient clipping (train.gradients.clip_norm)."
                        )
                    loss_sum, batches = loss_sum + loss_value, batches + 1
                    if not strategy.runs_own_step:
                        for callback in callbacks:
                            callback.before_backward(state)
                        precision.scaler.scale(loss / config.gradients.accumulation_steps).backward()
                for callback in callbacks:
                    callback.after_backward(state)
                if steps_now:
                    if config.gradients.clip_norm is not None:
                        precision.scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.gradients.clip_norm)
                    for callback in callbacks:
                        callback.before_optimizer_step(state)
                    precision.scaler.step(optimizer)
                    precision.scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    schedule.step()
                    if average is not None:
                        average.update()
                    for callback in callbacks:
                        callback.after_optimizer_step(state)
                bar.update(step_bar, advance=1, info=f"loss {loss_value:.4f} lr {optimizer.param_groups[0]['lr']:.2e}")
                if (
                    steps_now
                    and check_every_steps is not None
                    and stop_at is not None
                    and state.step % check_every_steps == 0
                    and index + 1 < len(train_loader)
                ):
                    metrics = validate()
                    if stop_at.reached({f"val_{key}": value for key, value in metrics.items()}):
                        reached_mid_epoch = metrics
                        break

            totals = strategy.reduce_sums({"loss": loss_sum, "batches": float(batches)})  # over all data shares
            record = {
                "epoch": state.epoch + 1,
                "train_loss": totals["loss"] / max(totals["batches"], 1),
                "lr": optimizer.param_groups[0]["lr"],
                "step": state.step,
            }
            last = state.epoch + 1 == config.epochs
            if reached_mid_epoch is not None or (
                val_loader is not None and ((state.epoch + 1) % config.validation.every_epochs == 0 or last)
            ):
                metrics = reached_mid_epoch or validate()
                record.update({f"val_{key}": value for key, value in metrics.items()})
                for callback in callbacks:
                    callback.on_eval(state, metrics)
            state.history.append(record)
            state.epoch += 1
            metric = record.get(f"val_{task.primary_metric}")
            schedule.epoch_end(metric)
            if config.validation.early_stopping is not None and metric is not None:
                if _improved(task, metric, best_metric, config.validation.early_stopping.min_delta):
                    best_metric, epochs_without_improvement = metric, 0
                    best_weights = copy.deepcopy((average.model if average else strategy.unwrap(model)).state_dict())
                else:
                    epochs_without_improvement += 1
                    if epochs_without_improvement >= config.validation.early_stopping.patience:
                        log.info(
                            "%s: early stop after epoch %d (best val %s %.4f)",
                            description,
                            state.epoch,
                            task.primary_metric,
                            best_metric,
                        )
                        state.stop = True
            if stop_at is not None and stop_at.reached(record):
                log.info(
                    "%s: %s reached in epoch %d (step %d)", description, stop_at.describe(), state.epoch, state.step
                )
                state.stop = True
            for callback in callbacks:
                callback.on_epoch_end(state)
            save_checkpoint(finished=state.epoch >= config.epochs or state.stop)
            shown = f"loss {record['train_loss']:.4f}" + (
                f" val {task.primary_metric} {metric:.4f}" if metric is not None else ""
            )
            bar.update(epoch_bar, advance=1, info=shown)
            log.debug("%s epoch %d: %s", description, state.epoch, record)

    trained = strategy.unwrap(model)
    if best_weights is not None:
        trained.load_state_dict(best_weights)
    elif average is not None:
        trained.load_state_dict(average.model.state_dict())
    for callback in callbacks:
        callback.on_train_end(state)
    stopped = bool(state.stop) or bool(
        best_metric is not None
        and epochs_without_improvement
        >= (config.validation.early_stopping.patience if config.validation.early_stopping else math.inf)
    )
    if stop_at is not None:
        choices = {**choices, **stop_at.summary(state.history)}
        stopped = stopped or choices["stop_at_epoch"] is not None
    return TrainResult(trained, state.history, state.epoch, stopped, time.perf_counter() - started, choices, config)
