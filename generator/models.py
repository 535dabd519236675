"""Builds the generator and discriminators that a config describes, and counts their parameters."""

from __future__ import annotations

from torch import nn

from generator.config import StackGANConfig
from generator.stackgan_v1 import StackGANv1Generator, build_v1_discriminators  # noqa: F401 (re-exported)
from generator.stackgan_v2 import StackGANv2Generator, build_v2_discriminators  # noqa: F401 (re-exported)


def build_generator(config: StackGANConfig) -> nn.Module:
    return config.spec.build_generator(config)


def build_discriminators(config: StackGANConfig) -> nn.ModuleList:
    return config.spec.build_discriminators(config)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_weights(module: nn.Module) -> None:
    """The authors' initialisation: orthogonal conv and linear weights, N(1, 0.02) BN scales."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(layer.weight, 1.0)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
