"""The table of generator architectures. A new variant is one module (its generator class and
discriminator builder) plus one entry here; nothing else in the package tests a variant's name.

Every generator class in the table takes a ``StackGANConfig`` and provides:

- ``forward(z, text_embedding=None, ca_noise=None) -> (images per scale, mu, logvar)``
- ``branch_modules(index)``: the modules that belong to output scale ``index`` (frozen together)
- ``condition_encoder``: the conditioning augmentation whose statistics the discriminators see
- ``parameter_groups()``: (name, module) rows for ``python -m generator params``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from generator.config import StackGANConfig


@dataclass(frozen=True)
class Variant:
    """One architecture and the defaults that differ between architectures."""

    name: str
    title: str
    # "module:attribute", imported on first use so that reading a config does not import torch.
    generator_class: str
    discriminator_builder: str
    # Output size of each branch as a multiple of base_size; the length is the most branches allowed.
    scale_factors: tuple[int, ...]
    # Branches a new model of this variant gets when none are asked for.
    default_branches: int
    min_ngf: int
    conditional_only: bool
    # True: every scale trains at once (a tree); False: only the newest stage trains, those below stay frozen.
    trains_all_scales: bool
    # Halve the learning rates every N epochs by default (0 = constant).
    lr_decay_epochs: int
    # Whether the colour-consistency regulariser between adjacent scales applies.
    colour_consistency: bool

    @property
    def max_branches(self) -> int:
        return len(self.scale_factors)

    def image_sizes(self, base_size: int, branches: int) -> list[int]:
        return [base_size * factor for factor in self.scale_factors[:branches]]

    def default_trained_scales(self, branches: int) -> list[int]:
        return list(range(branches)) if self.trains_all_scales else [branches - 1]

    def build_generator(self, config: StackGANConfig) -> nn.Module:
        return _load(self.generator_class)(config)

    def build_discriminators(self, config: StackGANConfig) -> nn.ModuleList:
        return _load(self.discriminator_builder)(config)


def _load(reference: str) -> Callable:
    import importlib

    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(
            name="v2", title="StackGAN-v2 (a tree of generators, one discriminator per scale)",
            generator_class="generator.stackgan_v2:StackGANv2Generator",
            discriminator_builder="generator.stackgan_v2:build_v2_discriminators",
            scale_factors=(1, 2, 4), default_branches=3, min_ngf=4, conditional_only=False,
            trains_all_scales=True, lr_decay_epochs=0, colour_consistency=True,
        ),
        Variant(
            name="v1", title="StackGAN-v1 (Stage-I sketch, Stage-II at 4x over a frozen Stage-I)",
            generator_class="generator.stackgan_v1:StackGANv1Generator",
            discriminator_builder="generator.stackgan_v1:build_v1_discriminators",
            scale_factors=(1, 4), default_branches=1, min_ngf=16, conditional_only=True,
            trains_all_scales=False, lr_decay_epochs=20, colour_consistency=False,
        ),
    )
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {name!r}") from None
