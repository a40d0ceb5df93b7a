"""Knowledge distillation: a small student learns to imitate a large teacher.

``distill(teacher, student, data, DistillConfig(...))`` trains the student
with the one training loop and a :class:`DistillationCallback` (soft targets,
logit MSE, hints, embedding losses, input mixing seen by both models);
``students.shrink(model, width=0.5)`` builds a smaller student of the same family.
"""

from optiforge.distillation import students
from optiforge.distillation.api import DEFAULT_TRAIN, DistillResult, distill, distill_with_result, prepare
from optiforge.distillation.callback import DistillationCallback, DistillationStudent
from optiforge.distillation.config import DistillConfig, DistillLossConfig, HintConfig, MixConfig
from optiforge.distillation.teachers import resolve_teacher

__all__ = [
    "DEFAULT_TRAIN",
    "DistillConfig",
    "DistillLossConfig",
    "DistillResult",
    "DistillationCallback",
    "DistillationStudent",
    "HintConfig",
    "MixConfig",
    "distill",
    "distill_with_result",
    "prepare",
    "resolve_teacher",
    "students",
]
