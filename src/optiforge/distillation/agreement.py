"""How often the student's top-1 prediction equals the teacher's (held-out data)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from optiforge.data.loaders import make_loader
from optiforge.distillation.outputs import output_tensor


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def top1_agreement(student: nn.Module, teacher: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Share of examples (positions, for a language model) on which both models predict the same class."""
    modes = student.training, teacher.training
    student.eval(), teacher.eval()
    same = total = 0
    for inputs, _ in make_loader(dataset, batch_size):
        student_pred = output_tensor(student(inputs.to(_device_of(student))), "student").argmax(dim=-1)
        teacher_pred = output_tensor(teacher(inputs.to(_device_of(teacher))), "teacher").argmax(dim=-1)
        same += int((student_pred.cpu() == teacher_pred.cpu()).sum())
        total += teacher_pred.numel()  # one prediction per example, or per position of a language model
    student.train(modes[0]), teacher.train(modes[1])
    return same / max(total, 1)
