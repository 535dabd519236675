"""Building blocks shared by StackGAN-v1 and StackGAN-v2: GLU, up-blocks, residual blocks and
conditioning augmentation."""

from __future__ import annotations

import torch
from torch import nn


class GLU(nn.Module):
    """Gated linear unit over the channel axis: first half times the sigmoid of the second half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.size(1)
        if channels % 2:
            raise ValueError(f"GLU needs an even number of channels, got {channels}")
        half = channels // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])


def conv3x3(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)


def glu_conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv to twice the channels, batch norm, GLU (halves them again)."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels * 2),
        nn.BatchNorm2d(out_channels * 2),
        GLU(),
    )


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """StackGAN-v2 up-block: nearest x2, 3x3 conv to 2*out (no bias), BN, GLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *glu_conv_block(in_channels, out_channels))


def relu_up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """StackGAN-v1 up-block: nearest x2, 3x3 conv, BN, ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(in_channels, out_channels),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """StackGAN-v2 residual block: conv(2c)+BN+GLU+conv(c)+BN plus the identity, no activation after."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *glu_conv_block(channels, channels),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ReluResidualBlock(nn.Module):
    """StackGAN-v1 residual block: conv+BN+ReLU+conv+BN plus the identity, ReLU after the sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.body(x))


class ConditioningAugmentation(nn.Module):
    """Maps a text embedding to a Gaussian (mu, log-variance) and samples the condition from it.

    Sampling (rather than using the embedding directly) smooths the conditioning manifold; the KL
    term against N(0, I) keeps that Gaussian from collapsing to a point.
    """

    def __init__(self, text_dim: int, cond_dim: int):
        super().__init__()
        self.cond_dim = cond_dim
        # Sentence encoders give L2-normalised embeddings (about 0.05 per dimension for 384-d);
        # without rescaling, mu differs between captions by a few hundredths against a unit-variance
        # sample and the generator learns to ignore the text. A parameter-free LayerNorm gives the
        # layer unit-scale input, as the paper's char-CNN-RNN embeddings were.
        self.norm = nn.LayerNorm(text_dim, elementwise_affine=False)
        # Linear to 4 * cond_dim, GLU-gated down to 2 * cond_dim, split into mu and log-variance.
        self.fc = nn.Linear(text_dim, cond_dim * 4)
        self.glu = GLU()

    def encode(self, text_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.glu(self.fc(self.norm(text_embedding)))
        return hidden[:, : self.cond_dim], hidden[:, self.cond_dim :]

    def forward(
        self, text_embedding: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(text_embedding)
        if noise is None:
            noise = torch.randn_like(mu)
        condition = mu + noise * torch.exp(0.5 * logvar)
        return condition, mu, logvar


def tile_condition(condition: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C) -> (B, C, H, W), the same vector at every position."""
    return condition[:, :, None, None].expand(-1, -1, height, width)
