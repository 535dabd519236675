"""The constructor arguments of a StackGAN model, saved beside its weights as config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

VARIANTS = ("v1", "v2")


@dataclass(frozen=True)
class StackGANConfig:
    """Everything needed to rebuild a generator (and its discriminators) from nothing.

    ``branches`` is the number of output scales: 1 to 3 for StackGAN-v2 (base, 2x, 4x base size),
    1 or 2 for StackGAN-v1 (Stage-I at base size, Stage-II at 4x base size).
    """

    variant: str = "v2"
    text_dim: int = 384
    z_dim: int = 100
    cond_dim: int = 128
    ngf: int = 64
    ndf: int = 64
    branches: int = 3
    base_size: int = 64
    conditional: bool = True
    num_residual: int = 2

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        max_branches = 3 if self.variant == "v2" else 2
        if not 1 <= self.branches <= max_branches:
            raise ValueError(f"StackGAN-{self.variant} supports 1 to {max_branches} branches, got {self.branches}")
        if self.base_size < 8 or not math.log2(self.base_size).is_integer():
            raise ValueError(f"base_size must be a power of two of at least 8, got {self.base_size}")
        if self.variant == "v1" and not self.conditional:
            raise ValueError("StackGAN-v1 is text-conditional only; use variant v2 for unconditional data")
        min_ngf = 4 if self.variant == "v2" else 16
        if self.ngf < min_ngf or self.ngf % 4:
            raise ValueError(f"ngf must be a multiple of 4 and at least {min_ngf}, got {self.ngf}")
        for name in ("text_dim", "z_dim", "cond_dim", "ndf", "num_residual"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def image_sizes(self) -> list[int]:
        if self.variant == "v2":
            return [self.base_size * 2**i for i in range(self.branches)]
        return [self.base_size, self.base_size * 4][: self.branches]

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
