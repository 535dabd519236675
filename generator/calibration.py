"""Batch-norm statistics for a network that has not been trained (or not in eval mode)."""

from __future__ import annotations

from typing import Any

import torch

from generator.config import StackGANConfig

CALIBRATION_CAPTIONS = ("a red apple", "a blue bird", "a yellow flower", "a green tree")


@torch.no_grad()
def calibrate_batch_norm(generator: torch.nn.Module, config: StackGANConfig, encoder: Any, batches: int = 4,
                         captions: list[str] | None = None) -> None:
    """Set batch-norm running statistics from real forward passes (cumulative average).

    A fresh network's running statistics (mean 0, variance 1) do not match its activations, so in
    eval mode it draws flat grey images; calibrated, it draws the varied noise an untrained
    generator really produces. ``captions`` default to four fixed ones; an encoder that only knows
    some captions (a training bundle's) is given those.
    """
    for module in generator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    generator.train()
    chosen = list(captions or CALIBRATION_CAPTIONS)
    chosen = (chosen * (16 // len(chosen) + 1))[:16]
    text = encoder.encode(chosen) if config.conditional else None
    for _ in range(batches):
        generator(torch.randn(len(chosen), config.z_dim), text)
    for module in generator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    generator.eval()
