"""StackGAN-v2: a tree of generators (base, 2x, 4x resolution) and one discriminator per scale
with joint conditional and unconditional heads."""

from __future__ import annotations

import math

import torch
from torch import nn

from generator.config import StackGANConfig
from generator.layers import (
    GLU,
    ConditioningAugmentation,
    ResidualBlock,
    conv3x3,
    glu_conv_block,
    tile_condition,
    up_block,
)


class InitialStage(nn.Module):
    """(z, c) -> 4x4 feature map -> up-blocks to base_size; channels halve at every up-block."""

    def __init__(self, in_dim: int, ngf: int, base_size: int):
        super().__init__()
        num_ups = int(math.log2(base_size // 4))
        top_channels = ngf * 2**num_ups  # 16 * ngf for a 64 px base, as in the paper
        self.top_channels = top_channels
        self.fc = nn.Sequential(
            nn.Linear(in_dim, top_channels * 4 * 4 * 2, bias=False),
            nn.BatchNorm1d(top_channels * 4 * 4 * 2),
            GLU(),
        )
        self.upsample = nn.Sequential(
            *[up_block(top_channels // 2**i, top_channels // 2 ** (i + 1)) for i in range(num_ups)]
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = self.fc(latent).view(-1, self.top_channels, 4, 4)
        return self.upsample(hidden)  # (B, ngf, base, base)


class NextStage(nn.Module):
    """Joins the condition with the previous stage's features, refines, and doubles the resolution."""

    def __init__(self, ngf: int, cond_dim: int, num_residual: int):
        super().__init__()
        self.joint = glu_conv_block(ngf + cond_dim, ngf)
        self.residual = nn.Sequential(*[ResidualBlock(ngf) for _ in range(num_residual)])
        self.upsample = up_block(ngf, ngf // 2)

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        tiled = tile_condition(condition, features.size(2), features.size(3))
        hidden = self.joint(torch.cat([tiled, features], dim=1))
        return self.upsample(self.residual(hidden))


class ImageHead(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(features))


class StackGANv2Generator(nn.Module):
    """Returns one image per branch, each in [-1, 1], plus the CA statistics (None if unconditional)."""

    def __init__(self, config: StackGANConfig):
        super().__init__()
        self.config = config
        if config.conditional:
            self.ca = ConditioningAugmentation(config.text_dim, config.cond_dim)
            stage_cond_dim = config.cond_dim
            init_in = config.z_dim + config.cond_dim
        else:
            # Unconditional mode: z itself is tiled into every later stage in place of c.
            self.ca = None
            stage_cond_dim = config.z_dim
            init_in = config.z_dim
        self.stages = nn.ModuleList([InitialStage(init_in, config.ngf, config.base_size)])
        self.heads = nn.ModuleList([ImageHead(config.ngf)])
        channels = config.ngf
        for _ in range(1, config.branches):
            self.stages.append(NextStage(channels, stage_cond_dim, config.num_residual))
            channels //= 2
            self.heads.append(ImageHead(channels))

    def forward(
        self,
        z: torch.Tensor,
        text_embedding: torch.Tensor | None = None,
        ca_noise: torch.Tensor | None = None,
        branches: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """``branches`` stops after that many scales: training a lower branch alone skips the cost of
        the higher ones."""
        if self.ca is not None:
            if text_embedding is None:
                raise ValueError("a conditional generator needs text embeddings")
            condition, mu, logvar = self.ca(text_embedding, ca_noise)
            features = self.stages[0](torch.cat([condition, z], dim=1))
        else:
            condition, mu, logvar = z, None, None
            features = self.stages[0](z)
        images = [self.heads[0](features)]
        last = len(self.stages) if branches is None else branches
        for stage, head in zip(self.stages[1:last], self.heads[1:last]):
            features = stage(features, condition)
            images.append(head(features))
        return images, mu, logvar

    @property
    def condition_encoder(self) -> nn.Module | None:
        return self.ca

    def parameter_groups(self) -> list[tuple[str, list[nn.Module]]]:
        rows: list[tuple[str, list[nn.Module]]] = []
        if self.ca is not None:
            rows.append(("ca (conditioning augmentation)", [self.ca]))
        for i, (stage, head) in enumerate(zip(self.stages, self.heads)):
            rows.append((f"stage{i} ({self.config.image_sizes[i]} px) + image head", [stage, head]))
        return rows

    def branch_modules(self, index: int) -> list[nn.Module]:
        """The modules that belong to output scale ``index`` (the CA goes with the first scale)."""
        modules: list[nn.Module] = [self.stages[index], self.heads[index]]
        if index == 0 and self.ca is not None:
            modules.insert(0, self.ca)
        return modules


def down_block(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """4x4 stride-2 conv, optional BN, LeakyReLU(0.2): halves the resolution."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def leaky_conv3x3(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2, inplace=True))


class StackGANDiscriminator(nn.Module):
    """Discriminator for one scale: image -> 4x4 code, then a conditional and an unconditional head.

    The base encoder takes ``base_size`` down to 4x4 (no BN on the first conv); each extra octave
    adds a down-sampling block and later a 3x3 reduction so both heads always see 8*ndf channels at
    4x4 for a 64 px base, as in the authors' D_NET64/128/256.
    """

    def __init__(
        self,
        image_size: int,
        base_size: int,
        ndf: int,
        cond_dim: int,
        conditional: bool = True,
        unconditional_head: bool = True,
    ):
        super().__init__()
        if not conditional and not unconditional_head:
            raise ValueError("a discriminator needs at least one head")
        num_base_downs = int(math.log2(base_size // 4))
        extra_octaves = int(math.log2(image_size // base_size))
        layers: list[nn.Module] = [down_block(3, ndf, batch_norm=False)]
        channels = ndf
        for _ in range(num_base_downs - 1):
            layers.append(down_block(channels, channels * 2))
            channels *= 2
        code_channels = channels
        for _ in range(extra_octaves):
            layers.append(down_block(channels, channels * 2))
            channels *= 2
        for _ in range(extra_octaves):
            layers.append(leaky_conv3x3(channels, channels // 2))
            channels //= 2
        self.encode = nn.Sequential(*layers)
        self.code_channels = code_channels
        self.cond_head = None
        if conditional:
            self.cond_head = nn.Sequential(
                leaky_conv3x3(code_channels + cond_dim, code_channels),
                nn.Conv2d(code_channels, 1, kernel_size=4, stride=4),
            )
        self.uncond_head = nn.Conv2d(code_channels, 1, kernel_size=4, stride=4) if unconditional_head else None

    def forward(
        self, images: torch.Tensor, condition: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns (conditional logits, unconditional logits), each (B,) or None."""
        code = self.encode(images)  # (B, code_channels, 4, 4)
        cond_logits = None
        if self.cond_head is not None:
            if condition is None:
                raise ValueError("the conditional head needs a condition")
            joint = torch.cat([code, tile_condition(condition, code.size(2), code.size(3))], dim=1)
            cond_logits = self.cond_head(joint).view(-1)
        uncond_logits = self.uncond_head(code).view(-1) if self.uncond_head is not None else None
        return cond_logits, uncond_logits


def build_v2_discriminators(config: StackGANConfig) -> nn.ModuleList:
    return nn.ModuleList(
        StackGANDiscriminator(size, config.base_size, config.ndf, config.cond_dim, conditional=config.conditional)
        for size in config.image_sizes
    )
