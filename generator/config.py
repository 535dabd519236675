"""The constructor arguments of a StackGAN model, saved beside its weights as config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from generator.registry import VARIANTS as VARIANT_TABLE
from generator.registry import Variant, get_variant

VARIANTS = tuple(VARIANT_TABLE)


@dataclass(frozen=True)
class StackGANConfig:
    """Everything needed to rebuild a generator (and its discriminators) from nothing.

    ``branches`` is the number of output scales: 1 to 3 for StackGAN-v2 (base, 2x, 4x base size),
    1 or 2 for StackGAN-v1 (Stage-I at base size, Stage-II at 4x base size); the variant table in
    ``generator.registry`` holds these limits.
    """

    variant: str = field(default="v2", metadata={"help": "architecture from the variant table (generator.registry)"})
    text_dim: int = field(default=384, metadata={"help": "caption embedding dimensions (the text encoder's)"})
    z_dim: int = field(default=100, metadata={"help": "noise dimensions"})
    cond_dim: int = field(default=128, metadata={"help": "conditioning-augmentation dimensions"})
    ngf: int = field(default=64, metadata={"help": "generator width"})
    ndf: int = field(default=64, metadata={"help": "discriminator width"})
    branches: int = field(default=3, metadata={"help": "output scales (v2: 1-3 for 64/128/256 px; v1: 1 Stage-I, 2 Stage-II)"})
    base_size: int = field(default=64, metadata={"help": "size of the first scale in pixels"})
    conditional: bool = field(default=True, metadata={"help": "ignore captions (z replaces the condition)",
                                                      "flag": "--unconditional"})
    num_residual: int = field(default=2, metadata={"help": "residual blocks per refining stage"})

    def __post_init__(self) -> None:
        spec = get_variant(self.variant)
        if not 1 <= self.branches <= spec.max_branches:
            raise ValueError(f"StackGAN-{self.variant} supports 1 to {spec.max_branches} branches, got {self.branches}")
        if self.base_size < 8 or not math.log2(self.base_size).is_integer():
            raise ValueError(f"base_size must be a power of two of at least 8, got {self.base_size}")
        if spec.conditional_only and not self.conditional:
            unconditional = [v.name for v in VARIANT_TABLE.values() if not v.conditional_only]
            raise ValueError(f"StackGAN-{self.variant} is text-conditional only; use variant "
                             f"{' or '.join(unconditional)} for unconditional data")
        if self.ngf < spec.min_ngf or self.ngf % 4:
            raise ValueError(f"ngf must be a multiple of 4 and at least {spec.min_ngf}, got {self.ngf}")
        for name in ("text_dim", "z_dim", "cond_dim", "ndf", "num_residual"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def spec(self) -> Variant:
        """This config's entry in the variant table."""
        return get_variant(self.variant)

    @property
    def image_sizes(self) -> list[int]:
        return self.spec.image_sizes(self.base_size, self.branches)

    @property
    def output_size(self) -> int:
        return self.image_sizes[-1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackGANConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generator config keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> StackGANConfig:
        return dataclasses.replace(self, **changes)
