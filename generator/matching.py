"""Image-caption matching: a contrastive image encoder into the frozen caption space, and the matching
loss that uses one to pull generated images towards their captions.

The adversarial loss alone teaches text conditioning slowly: the discriminator must first learn what
a "blue heart" looks like before it can punish a generator that draws a yellow one. AttnGAN's DAMSM
loss short-cuts this with an image encoder trained beforehand on the real images to agree with the
caption embeddings; the generator is then also rewarded when its image and its caption agree under
that encoder. This is the sentence-level part of DAMSM, with the frozen caption embeddings of our
text encoder in place of a jointly trained RNN.

The encoder used for training (``MatchingImageEncoder``) is deliberately not the one
``generator.evaluate`` uses for R-precision (a different architecture, normalisation and seed), so
the evaluation is not the same network the generator was optimised against.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)
MATCHING_SIZE = 64
TEMPERATURE = 0.1


class MatchingImageEncoder(nn.Module):
    """64 px image -> vector in the caption space; two convolutions per stage, group norm."""

    def __init__(self, text_dim: int, width: int = 32):
        super().__init__()
        channels = [3, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for cin, cout in zip(channels, channels[1:]):
            layers += [
                nn.Conv2d(cin, cout, 4, 2, 1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2, inplace=True),
            ]
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels[-1], text_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != MATCHING_SIZE:
            images = F.interpolate(images, size=(MATCHING_SIZE, MATCHING_SIZE), mode="bilinear", antialias=True,
                                   align_corners=False)
        return self.head(self.trunk(images))


def flip_and_shift(batch: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
    """A random horizontal flip and a circular shift of up to 4 pixels (the whole batch alike)."""
    rng = rng or random.Random(random.getrandbits(32))
    if rng.random() < 0.5:
        batch = batch.flip(-1)
    shift = rng.randint(-4, 4), rng.randint(-4, 4)
    return torch.roll(batch, shifts=shift, dims=(2, 3))


def contrastive_fit(net: nn.Module, images: torch.Tensor, caption_embeddings: list[torch.Tensor], epochs: int,
                    seed: int, temperature: float = 0.07, batch_size: int = 64) -> nn.Module:
    """Train ``net`` (image -> text-space vector) by symmetric InfoNCE over matching (image, caption) pairs.

    ``caption_embeddings[i]`` holds the embeddings of image i's captions; each step draws one of them.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2:
                continue
            text = torch.stack([caption_embeddings[i][rng.randrange(len(caption_embeddings[i]))] for i in index])
            loss = symmetric_info_nce(net(flip_and_shift(images[index], rng)), text, temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


def symmetric_info_nce(image_vectors: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of each image against the batch's captions and of each caption against the images."""
    logits = F.normalize(image_vectors, dim=-1) @ F.normalize(text, dim=-1).T / temperature
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def matching_loss(encoder: nn.Module, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The generator's matching loss: its images must pick out their own captions within the batch."""
    return symmetric_info_nce(encoder(images), text, TEMPERATURE)


def load_or_fit_encoder(images: torch.Tensor, caption_embeddings: list[torch.Tensor], cache_key: str,
                        cache_dir: Path | None, seed: int, epochs: int = 20) -> tuple[MatchingImageEncoder, str]:
    """The frozen matching encoder for a dataset, trained once and cached by ``cache_key``.

    ``images``: (N, 3, 64, 64) real training images in [-1, 1]. Returns the encoder (eval mode, no
    gradients) and the SHA-256 of its weights, for the lineage.
    """
    from safetensors.torch import load_file, save_file

    text_dim = caption_embeddings[0].shape[-1]
    encoder = MatchingImageEncoder(text_dim)
    key = hashlib.sha256(f"{cache_key}-matching-v1-{seed}-{epochs}".encode()).hexdigest()[:16]
    path = cache_dir / f"matching-encoder-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        encoder.load_state_dict(load_file(str(path)))
    else:
        logger.info("training the matching encoder on %d images (%d epochs)", len(images), epochs)
        contrastive_fit(encoder, images, caption_embeddings, epochs, seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path))
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return encoder.eval().requires_grad_(False), digest.hexdigest()


def fit_matching_encoder(dataset: Any, embeddings: dict[str, torch.Tensor], encoder_fingerprint: str,
                         cache_dir: Path | None, seed: int, epochs: int = 20) -> tuple[MatchingImageEncoder, str]:
    """The frozen image-caption encoder of a run's matching loss, trained on the run's real images
    (``dataset``: a CaptionedImageDataset) at 64 px and cached per manifest, encoder and item list."""
    from generator.data import manifest_sha256

    images = torch.cat([
        F.interpolate(torch.stack(dataset.pixels[i:i + 128]).float().div(127.5).sub(1), size=(64, 64),
                      mode="bilinear", antialias=True, align_corners=False)
        for i in range(0, len(dataset.pixels), 128)
    ])
    per_item = [torch.stack([embeddings[c] for c in item.captions]) for item in dataset.items]
    key = manifest_sha256(dataset.folder) + encoder_fingerprint + ",".join(i.image for i in dataset.items)
    return load_or_fit_encoder(images, per_item, key, cache_dir, seed=seed, epochs=epochs)
