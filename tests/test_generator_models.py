"""StackGAN-v1/v2 networks and losses: shapes, hand-worked loss values, CA statistics."""

from __future__ import annotations

import math

import pytest
import torch

from generator.config import StackGANConfig
from generator.layers import GLU, ConditioningAugmentation, ResidualBlock, up_block
from generator.losses import (
    colour_consistency_loss,
    discriminator_loss,
    generator_adversarial_loss,
    kl_divergence,
    mean_and_covariance,
)
from generator.models import build_discriminators, build_generator, count_parameters


@pytest.mark.parametrize(
    ("config", "sizes"),
    [
        (StackGANConfig(ngf=8, ndf=4, base_size=16, branches=1, text_dim=12), [16]),
        (StackGANConfig(ngf=8, ndf=4, base_size=16, branches=2, text_dim=12), [16, 32]),
        (StackGANConfig(ngf=8, ndf=4, base_size=16, branches=3, text_dim=12), [16, 32, 64]),
        (StackGANConfig(ngf=8, ndf=4, base_size=32, branches=3, text_dim=12), [32, 64, 128]),
        (StackGANConfig(ngf=8, ndf=4, base_size=16, branches=3, text_dim=12, conditional=False), [16, 32, 64]),
        (StackGANConfig(variant="v1", ngf=16, ndf=4, base_size=16, branches=1, text_dim=12), [16]),
        (StackGANConfig(variant="v1", ngf=16, ndf=4, base_size=16, branches=2, text_dim=12), [16, 64]),
    ],
)
def test_every_variant_and_scale_has_the_right_shapes(config, sizes):
    generator = build_generator(config)
    discriminators = build_discriminators(config)
    z = torch.randn(3, config.z_dim)
    text = torch.randn(3, config.text_dim) if config.conditional else None
    images, mu, logvar = generator(z, text)
    assert [tuple(img.shape) for img in images] == [(3, 3, s, s) for s in sizes]
    assert all(img.min() >= -1 and img.max() <= 1 for img in images)
    if config.conditional:
        assert mu.shape == logvar.shape == (3, config.cond_dim)
    else:
        assert mu is None
    for disc, img in zip(discriminators, images):
        cond_logits, uncond_logits = disc(img, mu if config.conditional else None)
        if config.conditional:
            assert cond_logits.shape == (3,)
        if config.variant == "v2":
            assert uncond_logits.shape == (3,)
        else:
            assert uncond_logits is None  # v1's matching-aware discriminator has one head


def test_default_v2_parameter_count_matches_the_paper_architecture():
    # Paper configuration: ngf 64, z 100, cond 128, 1024-d text embedding: about 21 M parameters.
    paper = build_generator(StackGANConfig(text_dim=1024))
    assert 20.5e6 < count_parameters(paper) < 21.5e6
    # The first stage's linear layer: (z + c) x (4 * 4 * 16 ngf * 2), no bias, as the authors have.
    assert paper.stages[0].fc[0].weight.shape == (4 * 4 * 64 * 16 * 2, 100 + 128)


def test_glu_upblock_residual_block():
    x = torch.tensor([[[[1.0]], [[2.0]], [[0.0]], [[100.0]]]])  # 4 channels
    out = GLU()(x)
    assert torch.allclose(out.flatten(), torch.tensor([0.5, 2.0]), atol=1e-4)
    assert up_block(4, 6)(torch.randn(2, 4, 5, 5)).shape == (2, 6, 10, 10)
    block = ResidualBlock(4)
    torch.nn.init.zeros_(block.body[-1].weight)  # zero last BN scale: the block is then the identity
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(block(x), x)


def test_kl_divergence_against_a_hand_worked_value():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # element 1: -0.5 (1 + 0 - 1 - 1) = 0.5; element 2: -0.5 (1 + ln2 - 0 - 2) = 0.5 (1 - ln2)
    expected = (0.5 + 0.5 * (1 - math.log(2.0))) / 2
    assert kl_divergence(mu, logvar).item() == pytest.approx(expected, abs=1e-6)
    assert kl_divergence(torch.zeros(4, 8), torch.zeros(4, 8)).item() == pytest.approx(0.0)


def test_jcu_discriminator_loss_against_hand_worked_values():
    def t(v):
        return torch.tensor([v])

    real, wrong, fake = (t(2.0), t(1.0)), (t(-1.0), t(0.0)), (t(0.5), t(-2.0))
    cond = math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log1p(math.exp(0.5))
    uncond = math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(-2))
    assert discriminator_loss(real, wrong, fake, uncond_weight=0.5).item() == pytest.approx(cond + 0.5 * uncond, abs=1e-5)
    assert discriminator_loss(real, wrong, fake, uncond_weight=0.0).item() == pytest.approx(cond, abs=1e-5)
    # The matching-aware v1 loss: the same call with no unconditional head.
    v1 = discriminator_loss((t(2.0), None), (t(-1.0), None), (t(0.5), None))
    assert v1.item() == pytest.approx(cond, abs=1e-5)
    g = generator_adversarial_loss((t(0.0), t(0.0)), uncond_weight=1.0)
    assert g.item() == pytest.approx(2 * math.log(2), abs=1e-6)


def test_colour_consistency_loss_against_a_hand_worked_value():
    lower = torch.zeros(1, 3, 2, 2)
    higher = torch.zeros(1, 3, 2, 2)
    higher[0, 0] = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # mean 0, variance 1
    higher[0, 1] = 0.5  # mean 0.5, variance 0
    mean, cov = mean_and_covariance(higher)
    assert torch.allclose(mean, torch.tensor([[0.0, 0.5, 0.0]]))
    assert torch.allclose(cov[0], torch.diag(torch.tensor([1.0, 0.0, 0.0])))
    # lambda1 * MSE(means) + 5 lambda1 * MSE(covariances) = 2 * (0.25 / 3) + 10 * (1 / 9)
    assert colour_consistency_loss(lower, higher, 2.0).item() == pytest.approx(2 * 0.25 / 3 + 10 / 9, abs=1e-6)
    # The lower scale is the reference: no gradient flows into it.
    lower.requires_grad_(True)
    higher.requires_grad_(True)
    colour_consistency_loss(lower, higher, 1.0).backward()
    assert lower.grad is None and higher.grad is not None


def test_conditioning_augmentation_samples_from_its_gaussian():
    torch.manual_seed(0)
    ca = ConditioningAugmentation(text_dim=6, cond_dim=4)
    embedding = torch.randn(1, 6).expand(20000, 6)
    condition, mu, logvar = ca(embedding)
    std = torch.exp(0.5 * logvar[0])
    assert torch.allclose(condition.mean(0), mu[0], atol=4 * std.max().item() / math.sqrt(20000) + 1e-3)
    assert torch.allclose(condition.std(0), std, rtol=0.05)
    fixed, _, _ = ca(embedding[:2], noise=torch.zeros(2, 4))
    assert torch.allclose(fixed, mu[:2])  # zero noise gives the mean


def test_v1_stage_one_is_frozen_while_stage_two_trains():
    generator = build_generator(StackGANConfig(variant="v1", ngf=16, ndf=4, base_size=16, branches=2, text_dim=12))
    generator.train()
    assert not any(p.requires_grad for p in generator.stage_one.parameters())
    assert not generator.stage_one.training and generator.stage_two.training
    images, mu, logvar = generator(torch.randn(2, 100), torch.randn(2, 12))
    images[-1].mean().backward()
    assert all(p.grad is None for p in generator.stage_one.parameters())


def test_invalid_configs_are_refused_with_a_message():
    with pytest.raises(ValueError, match="branches"):
        StackGANConfig(branches=4)
    with pytest.raises(ValueError, match="unconditional"):
        StackGANConfig(variant="v1", branches=1, conditional=False)
    with pytest.raises(ValueError, match="unknown generator config keys: colour"):
        StackGANConfig.from_dict({"colour": 1})
