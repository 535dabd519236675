"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020).

With a small dataset (the emoji sets have about two thousand images) the discriminator memorises the
real images within a few thousand steps and its gradient stops teaching the generator anything.
DiffAugment applies the same random, differentiable transforms to real and generated images
*before* the discriminator, so D never sees an unaugmented image and G is still pushed towards the
unaugmented distribution (the transforms are differentiable, so G's gradient flows through them).

Policies, comma separated: ``color`` (brightness, saturation, contrast), ``translation`` (shift by up
to 1/8 of the side, zero padded), ``cutout`` (a zeroed square of half the side).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str | None) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' or None -> (); unknown names raise ValueError."""
    names = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(images: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Apply each transform of ``policy`` with parameters drawn per image; images in [-1, 1]."""
    for name in policy:
        images = _TRANSFORMS[name](images)
    return images


def _random(images: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.rand(images.size(0), *shape, dtype=images.dtype, device=images.device)


def _color(images: torch.Tensor) -> torch.Tensor:
    images = images + (_random(images, 1, 1, 1) - 0.5)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * (_random(images, 1, 1, 1) * 2) + mean
    mean = images.mean(dim=[1, 2, 3], keepdim=True)
    return (images - mean) * (_random(images, 1, 1, 1) + 0.5) + mean


def _translation(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    batch, _, height, width = images.shape
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-shift_y, shift_y + 1, (batch, 1, 1), device=images.device)
    dx = torch.randint(-shift_x, shift_x + 1, (batch, 1, 1), device=images.device)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(batch, device=images.device),
        torch.arange(height, device=images.device),
        torch.arange(width, device=images.device),
        indexing="ij",
    )
    # Index into a zero-padded copy: pixels shifted in from outside are zero (mid-grey).
    grid_y = torch.clamp(grid_y + dy + 1, 0, height + 1)
    grid_x = torch.clamp(grid_x + dx + 1, 0, width + 1)
    padded = F.pad(images, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x].permute(0, 3, 1, 2).contiguous()


def _cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    batch, _, height, width = images.shape
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    offset_y = torch.randint(0, height + (1 - cut_h % 2), (batch, 1, 1), device=images.device)
    offset_x = torch.randint(0, width + (1 - cut_w % 2), (batch, 1, 1), device=images.device)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(batch, device=images.device),
        torch.arange(cut_h, device=images.device),
        torch.arange(cut_w, device=images.device),
        indexing="ij",
    )
    grid_y = torch.clamp(grid_y + offset_y - cut_h // 2, 0, height - 1)
    grid_x = torch.clamp(grid_x + offset_x - cut_w // 2, 0, width - 1)
    mask = torch.ones(batch, height, width, dtype=images.dtype, device=images.device)
    mask[grid_b, grid_y, grid_x] = 0
    return images * mask.unsqueeze(1)


_TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}
