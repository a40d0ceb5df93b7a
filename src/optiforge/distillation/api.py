"""``distill``: train a student to imitate a teacher, with the one training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from optiforge.config import HardwareConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.distillation.callback import DistillationCallback, DistillationStudent
from optiforge.distillation.config import DistillConfig
from optiforge.distillation.hints import FeatureRecorder, find_layer, make_adapter
from optiforge.distillation.outputs import output_tensor
from optiforge.distillation.teachers import TeacherSource, resolve_teacher
from optiforge.errors import ConfigError, ModelError
from optiforge.tasks import Task
from optiforge.training.finetune import Finetune, finetuner

# Used when the caller gives no training settings: AdamW with a one-cycle
# schedule learned fastest in our MNIST-1D and digits runs; epochs always come
# from DistillConfig.finetune.epochs.
DEFAULT_TRAIN = TrainConfig(
    optimizer=OptimizerConfig(name="adamw", lr=0.003, weight_decay=0.01),
    schedule=ScheduleConfig(name="onecycle"),
    batch_size=64,
)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _probe(model: nn.Module, inputs: torch.Tensor, role: str, recorder_layers: dict) -> tuple:
    """Run one example batch; return (outputs, recorded features) or name the failure."""
    was_training = model.training
    recorder = FeatureRecorder(recorder_layers)
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(inputs.to(_device_of(model)))
    except Exception as error:
        raise ModelError(
            f"{role}: cannot run the data's inputs of shape {tuple(inputs.shape[1:])} "
            f"({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    finally:
        model.train(was_training)
    features = dict(recorder.features)
    recorder.remove()
    return outputs, features


def prepare(
    teacher: nn.Module, student: nn.Module, data: TaskData, config: DistillConfig
) -> tuple[DistillationStudent, DistillationCallback]:
    """Check the pair fits, build hint adapters, return (module to train, callback).

    Either model may return a tensor, a transformers ``ModelOutput`` or a
    dict/tuple with the logits first: distillation reads the logits (or
    ``last_hidden_state``). Raises ConfigError when the student's output
    shape differs from the teacher's or a hint names a layer that does not
    exist, ModelError when an output holds no tensor to read.
    """
    student_layers = {
        hint.student: find_layer(student, hint.student, f"hints[{i}].student", "student")
        for i, hint in enumerate(config.hints)
    }
    teacher_layers = {
        hint.teacher: find_layer(teacher, hint.teacher, f"hints[{i}].teacher", "teacher")
        for i, hint in enumerate(config.hints)
    }
    example = data.example_input(2)
    teacher_out, teacher_features = _probe(teacher, example, "teacher", teacher_layers)
    student_out, student_features = _probe(student, example, "student", student_layers)
    teacher_out, student_out = output_tensor(teacher_out, "teacher"), output_tensor(student_out, "student")
    if student_out.shape != teacher_out.shape:
        raise ConfigError(
            f"student: its outputs have shape {tuple(student_out.shape[1:])} per example, the teacher's "
            f"{tuple(teacher_out.shape[1:])}; the student must give the teacher's output shape "
            "(the same classes, or the same embedding width)"
        )
    adapters = nn.ModuleList(
        make_adapter(student_features[hint.student].shape, teacher_features[hint.teacher].shape)
        for hint in config.hints
    ).to(_device_of(student))
    wrapped = DistillationStudent(student, adapters)
    callback = DistillationCallback(teacher, wrapped, config, data.num_classes, data.train)
    return wrapped, callback


@dataclass
class DistillResult:
    """What :func:`distill_with_result` did: the trained student, the config, the training history."""

    model: nn.Module
    config: DistillConfig
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def distill_with_result(
    teacher: TeacherSource,
    student: nn.Module,
    data: TaskData,
    config: DistillConfig | None = None,
    *,
    finetune: Finetune | None = None,
    train: TrainConfig | None = None,
    hardware: HardwareConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    task: Task | None = None,
) -> DistillResult:
    """Train ``student`` to imitate ``teacher``; return it with the training history (see :func:`distill`)."""
    config = config or DistillConfig()
    teacher_module = resolve_teacher(teacher, data)
    wrapped, callback = prepare(teacher_module, student, data, config)
    if finetune is None:
        finetune = finetuner(
            data,
            train or DEFAULT_TRAIN,
            hardware=hardware,
            checkpoint_root=checkpoint_dir,
            resume=resume,
            progress=progress,
            task=task,
        )
    result = finetune(wrapped, config.finetune, callbacks=[callback], name="distill")
    return DistillResult(result.model.student, config, result.epochs_run, result.history)


def distill(
    teacher: TeacherSource,
    student: nn.Module,
    data: TaskData,
    config: DistillConfig | None = None,
    *,
    finetune: Finetune | None = None,
    train: TrainConfig | None = None,
    hardware: HardwareConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    task: Task | None = None,
) -> nn.Module:
    """Train ``student`` to imitate ``teacher`` on ``data`` and return the student.

    ``teacher`` is a module, a ``ModelConfig`` with a checkpoint, a
    ``"package.module:function"`` factory or a callable (a TorchScript or
    ``.pt2`` file runs code when loaded: load one you made with
    ``resolve_teacher(path, data, trusted=True)`` and pass the module).
    Training runs ``config.finetune`` through ``finetune`` (a
    :class:`~optiforge.training.finetune.Finetune`) or else the training
    engine, whose unset settings come from ``train`` (default
    :data:`DEFAULT_TRAIN`); with ``checkpoint_dir`` it checkpoints into
    ``checkpoint_dir/distill``.

    >>> import optiforge
    >>> from optiforge import DistillConfig, ModelConfig
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> teacher = optiforge.build_model(ModelConfig(name="mlp", hidden=[64]), data)
    >>> _ = optiforge.train(teacher, data, optiforge.TrainConfig(epochs=2), progress=False)
    >>> student = optiforge.build_model(ModelConfig(name="mlp", hidden=[16]), data)
    >>> student = optiforge.distill(teacher, student, data, DistillConfig(finetune={"epochs": 2}), progress=False)
    >>> type(student).__name__
    'Sequential'
    """
    return distill_with_result(
        teacher,
        student,
        data,
        config,
        finetune=finetune,
        train=train,
        hardware=hardware,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        task=task,
    ).model
