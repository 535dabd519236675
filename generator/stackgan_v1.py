"""StackGAN-v1: Stage-I draws a low-resolution sketch from the text; Stage-II encodes that sketch,
re-reads the text, and paints a 4x larger image. Stage-I is frozen while Stage-II trains."""

from __future__ import annotations

import math

import torch
from torch import nn

from generator.config import StackGANConfig
from generator.layers import (
    ConditioningAugmentation,
    ReluResidualBlock,
    conv3x3,
    relu_up_block,
    tile_condition,
)
from generator.stackgan_v2 import StackGANDiscriminator


class StageOneGenerator(nn.Module):
    """(z, c) -> 4x4 x (ngf * 8) -> ReLU up-blocks to base_size -> image."""

    def __init__(self, config: StackGANConfig):
        super().__init__()
        self.ca = ConditioningAugmentation(config.text_dim, config.cond_dim)
        num_ups = int(math.log2(config.base_size // 4))
        self.top_channels = config.ngf * 8
        self.fc = nn.Sequential(
            nn.Linear(config.z_dim + config.cond_dim, self.top_channels * 16, bias=False),
            nn.BatchNorm1d(self.top_channels * 16),
            nn.ReLU(inplace=True),
        )
        channels = [max(self.top_channels // 2**i, 8) for i in range(num_ups + 1)]
        self.upsample = nn.Sequential(*[relu_up_block(channels[i], channels[i + 1]) for i in range(num_ups)])
        self.head = nn.Sequential(conv3x3(channels[-1], 3), nn.Tanh())

    def forward(
        self, z: torch.Tensor, text_embedding: torch.Tensor, ca_noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        condition, mu, logvar = self.ca(text_embedding, ca_noise)
        hidden = self.fc(torch.cat([condition, z], dim=1)).view(-1, self.top_channels, 4, 4)
        return self.head(self.upsample(hidden)), mu, logvar


class StageTwoGenerator(nn.Module):
    """Stage-I image (base px) -> base/4 features, joined with a fresh condition, residual blocks,
    four up-blocks -> 4 * base px."""

    def __init__(self, config: StackGANConfig):
        super().__init__()
        ngf = config.ngf
        self.ca = ConditioningAugmentation(config.text_dim, config.cond_dim)
        self.encode = nn.Sequential(
            conv3x3(3, ngf),
            nn.ReLU(inplace=True),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(inplace=True),
        )
        self.joint = nn.Sequential(
            conv3x3(config.cond_dim + ngf * 4, ngf * 4),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(inplace=True),
        )
        self.residual = nn.Sequential(*[ReluResidualBlock(ngf * 4) for _ in range(config.num_residual)])
        self.upsample = nn.Sequential(
            relu_up_block(ngf * 4, ngf * 2),
            relu_up_block(ngf * 2, ngf),
            relu_up_block(ngf, ngf // 2),
            relu_up_block(ngf // 2, ngf // 4),
        )
        self.head = nn.Sequential(conv3x3(ngf // 4, 3), nn.Tanh())

    def forward(
        self, stage_one_image: torch.Tensor, text_embedding: torch.Tensor, ca_noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        condition, mu, logvar = self.ca(text_embedding, ca_noise)
        features = self.encode(stage_one_image)  # (B, 4 ngf, base/4, base/4)
        tiled = tile_condition(condition, features.size(2), features.size(3))
        hidden = self.residual(self.joint(torch.cat([tiled, features], dim=1)))
        return self.head(self.upsample(hidden)), mu, logvar


class StackGANv1Generator(nn.Module):
    """Stage-I, and Stage-II when the config has two branches.

    Returns the images of every stage and the CA statistics of the last stage (the one that trains).
    """

    def __init__(self, config: StackGANConfig):
        super().__init__()
        self.config = config
        self.stage_one = StageOneGenerator(config)
        self.stage_two = StageTwoGenerator(config) if config.branches == 2 else None
        if self.stage_two is not None:
            self.stage_one.requires_grad_(False)

    def train(self, mode: bool = True) -> StackGANv1Generator:
        super().train(mode)
        if self.stage_two is not None:
            # Stage-II training keeps Stage-I fixed, batch-norm statistics included.
            self.stage_one.eval()
        return self

    def forward(
        self,
        z: torch.Tensor,
        text_embedding: torch.Tensor | None = None,
        ca_noise: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        if text_embedding is None:
            raise ValueError("StackGAN-v1 needs text embeddings")
        sketch, mu, logvar = self.stage_one(z, text_embedding, ca_noise)
        if self.stage_two is None:
            return [sketch], mu, logvar
        # Stage-II has its own CA; it reuses the same noise so that one seed fixes both stages.
        refined, mu, logvar = self.stage_two(sketch.detach(), text_embedding, ca_noise)
        return [sketch, refined], mu, logvar

    @property
    def condition_encoder(self) -> nn.Module:
        """The CA of the stage that trains (Stage-II when present): its statistics condition the discriminator."""
        return self.stage_two.ca if self.stage_two is not None else self.stage_one.ca

    def branch_modules(self, index: int) -> list[nn.Module]:
        return [self.stage_one if index == 0 else self.stage_two]

    def parameter_groups(self) -> list[tuple[str, list[nn.Module]]]:
        return [(name, [child]) for name, child in self.named_children()]


def build_v1_discriminators(config: StackGANConfig) -> nn.ModuleList:
    """Matching-aware discriminators (conditional head only), one per stage."""
    return nn.ModuleList(
        StackGANDiscriminator(size, config.base_size, config.ndf, config.cond_dim, unconditional_head=False)
        for size in config.image_sizes
    )
