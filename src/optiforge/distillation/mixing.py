"""Input mixing (mixup, cutmix) for images and 1-D signals.

Consistent teaching (Beyer et al. 2022, https://arxiv.org/abs/2106.05237): the
teacher must see exactly the student's augmented inputs, so the mixing happens
once per batch in ``transform_batch`` and both models read the mixed batch.
Mixed inputs lie between the training examples, which is where a student
learns most about the teacher's function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optiforge.distillation.config import MixConfig


def _beta(concentration: float, size: int, device: torch.device) -> torch.Tensor:
    dist = torch.distributions.Beta(torch.tensor(concentration), torch.tensor(concentration))
    return dist.sample((size,)).to(device)


def _mix_targets(targets: torch.Tensor, order: torch.Tensor, keep: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Soft targets ``keep·y + (1−keep)·y[order]``; hard labels become one-hot first."""
    if targets.dim() == 1 and not targets.is_floating_point():
        targets = F.one_hot(targets, num_classes).float()
    keep = keep.view(-1, *([1] * (targets.dim() - 1))).to(targets.dtype)
    return keep * targets + (1 - keep) * targets[order]


def _cut_mask(shape: torch.Size, keep: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A per-sample mask, True where the partner's values are pasted in.

    The cut is a segment of the last axis for 1-D signals (B, L) or (B, C, L),
    a box over the last two axes for images (B, C, H, W); its size is
    ``1 − keep`` of the signal/image per sample.
    """
    batch = shape[0]
    cut = (1 - keep).clamp(0, 1)
    if len(shape) >= 4:
        height, width = shape[-2], shape[-1]
        side = cut.sqrt()
        cut_h, cut_w = (side * height).round().long(), (side * width).round().long()
        top = (torch.rand(batch, device=device) * (height - cut_h + 1)).long()
        left = (torch.rand(batch, device=device) * (width - cut_w + 1)).long()
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        box = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + cut_h).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + cut_w).view(-1, 1, 1))
        )  # (B, H, W)
        return box.view(batch, *([1] * (len(shape) - 3)), height, width)
    length = shape[-1]
    cut_len = (cut * length).round().long()
    start = (torch.rand(batch, device=device) * (length - cut_len + 1)).long()
    positions = torch.arange(length, device=device).view(1, length)
    segment = (positions >= start.view(-1, 1)) & (positions < (start + cut_len).view(-1, 1))  # (B, L)
    return segment.view(batch, *([1] * (len(shape) - 2)), length)


def mix_batch(
    inputs: torch.Tensor, targets: torch.Tensor, config: MixConfig, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with a shuffled copy of itself; return (inputs, soft targets).

    Each sample gets its own mixing weight from Beta(beta, beta); with
    ``probability`` < 1 the rest of the batch passes through unmixed.
    """
    if config.kind == "none" or inputs.shape[0] < 2 or not inputs.is_floating_point():
        return inputs, targets
    batch, device = inputs.shape[0], inputs.device
    order = torch.randperm(batch, device=device)
    keep = _beta(config.beta, batch, device)
    apply = torch.rand(batch, device=device) < config.probability
    keep = torch.where(apply, keep, torch.ones_like(keep))
    kind = config.kind
    if kind == "mixup_cutmix":  # each sample is mixed one way or the other
        use_cut = torch.rand(batch, device=device) < 0.5
    else:
        use_cut = torch.full((batch,), kind == "cutmix", device=device)
    partner = inputs[order]
    mixed_inputs = inputs
    cut_keep = keep
    if bool(use_cut.any()):
        mask = _cut_mask(inputs.shape, keep, device) & use_cut.view(-1, *([1] * (inputs.dim() - 1)))
        mixed_inputs = torch.where(mask, partner, inputs)
        # the label weight follows the area actually pasted (rounding changes it slightly)
        pasted = mask.expand_as(inputs).flatten(1).float().mean(dim=1)
        cut_keep = 1 - pasted
    if not bool(use_cut.all()):
        blend = keep.view(-1, *([1] * (inputs.dim() - 1))).to(inputs.dtype)
        blended = blend * inputs + (1 - blend) * partner
        mixed_inputs = torch.where(use_cut.view(-1, *([1] * (inputs.dim() - 1))), mixed_inputs, blended)
    label_keep = torch.where(use_cut, cut_keep, keep)
    return mixed_inputs, _mix_targets(targets, order, label_keep, num_classes)
