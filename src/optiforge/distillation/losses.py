"""Distillation losses, each a plain function of tensors.

``student`` and ``teacher`` are outputs of the same inputs; the teacher's are
treated as constants (callers pass them detached or computed under no_grad).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) between temperature-softened distributions, times T².

    Hinton et al. 2015 (https://arxiv.org/abs/1503.02531): the gradients of the
    softened loss shrink as 1/T², so the T² factor keeps the soft term on the
    same scale as the hard-label loss whatever the temperature.
    """
    # a language model's (B, T, V) logits hold one distribution per position: (B·T, V), averaged per position
    student_logits, teacher_logits = student_logits.flatten(0, -2), teacher_logits.flatten(0, -2)
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    # (B, C) → per-sample sums, averaged over the batch ("batchmean", the true KL)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


def logit_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between raw logits (Ba & Caruana 2014)."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity per sample (features flattened), averaged over the batch."""
    similarity = F.cosine_similarity(student.float().flatten(1), teacher.float().flatten(1), dim=1)
    return (1.0 - similarity).mean()


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """MSE or cosine distance between (pooled) embeddings or intermediate features."""
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    if kind == "cosine":
        return cosine_loss(student, teacher)
    raise ValueError(f"unknown embedding loss '{kind}'")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average token states (B, T, H) → (B, H), ignoring padding (sentence-transformers' pooling)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


def output_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """The distillation term on model outputs for ``DistillConfig.loss``."""
    if kind == "kl":
        return soft_target_loss(student, teacher, temperature)
    if kind == "mse":
        return logit_mse_loss(student, teacher)
    return embedding_loss(student, teacher, kind)
