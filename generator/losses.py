"""Losses of StackGAN++: KL of conditioning augmentation, the joint conditional-unconditional (JCU)
adversarial losses, the matching-aware v1 losses, and the colour-consistency regulariser."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), averaged over elements (as in the authors' code)."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(
    real: tuple[torch.Tensor | None, torch.Tensor | None],
    wrong: tuple[torch.Tensor | None, torch.Tensor | None],
    fake: tuple[torch.Tensor | None, torch.Tensor | None],
    uncond_weight: float = 1.0,
) -> torch.Tensor:
    """JCU loss for one scale, given (conditional, unconditional) logits of three batches.

    real: real images with their captions (cond real, uncond real); wrong: real images with
    mismatched captions (cond fake, uncond real); fake: generated images (cond fake, uncond fake).
    Heads that are absent (None) contribute nothing, so v1's matching-aware loss is the same call.
    """
    (real_cond, real_uncond), (wrong_cond, wrong_uncond), (fake_cond, fake_uncond) = real, wrong, fake
    loss = torch.zeros((), device=(real_cond if real_cond is not None else real_uncond).device)
    if real_cond is not None:
        loss = loss + _bce(real_cond, 1.0) + _bce(wrong_cond, 0.0) + _bce(fake_cond, 0.0)
    if real_uncond is not None and uncond_weight > 0:
        terms = _bce(real_uncond, 1.0) + _bce(fake_uncond, 0.0)
        if wrong_uncond is not None:
            terms = terms + _bce(wrong_uncond, 1.0)
        loss = loss + uncond_weight * terms
    return loss


def generator_adversarial_loss(
    fake: tuple[torch.Tensor | None, torch.Tensor | None], uncond_weight: float = 1.0
) -> torch.Tensor:
    """G wants both heads to call its images real."""
    fake_cond, fake_uncond = fake
    loss = torch.zeros((), device=(fake_cond if fake_cond is not None else fake_uncond).device)
    if fake_cond is not None:
        loss = loss + _bce(fake_cond, 1.0)
    if fake_uncond is not None and uncond_weight > 0:
        loss = loss + uncond_weight * _bce(fake_uncond, 1.0)
    return loss


def mean_and_covariance(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean colour (B, 3) and 3x3 colour covariance (B, 3, 3) over pixels."""
    batch, channels, height, width = images.shape
    pixels = images.reshape(batch, channels, height * width)
    mean = pixels.mean(dim=2)
    centred = pixels - mean[:, :, None]
    covariance = torch.bmm(centred, centred.transpose(1, 2)) / (height * width)
    return mean, covariance


def colour_consistency_loss(lower: torch.Tensor, higher: torch.Tensor, weight_mean: float) -> torch.Tensor:
    """lambda1 * MSE(mean) + 5 * lambda1 * MSE(covariance) between adjacent scales.

    The lower scale is detached: it is the reference the higher scale must agree with.
    """
    mean_low, cov_low = mean_and_covariance(lower.detach())
    mean_high, cov_high = mean_and_covariance(higher)
    return weight_mean * F.mse_loss(mean_high, mean_low) + 5 * weight_mean * F.mse_loss(cov_high, cov_low)


def mode_seeking_loss(images_a: torch.Tensor, images_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019): two latents with one caption should give images
    that differ in proportion to the latents. Minimising 1 / (image distance / latent distance)
    pushes the generator away from collapsing every seed of a caption onto one picture."""
    image_distance = (images_a - images_b).abs().mean(dim=(1, 2, 3))
    latent_distance = (z_a - z_b).abs().mean(dim=1)
    return (1 / (image_distance / latent_distance + eps)).mean()
