"""Evaluation that needs no download.

    python -m generator.evaluate CHECKPOINT --data DATASET [--samples 500] [--out evaluation.json]

Standard FID and Inception Score need Inception-v3 weights that no package here ships, so the
figures are computed the standard way on an *in-domain* feature network trained here on the real
training images (a small CNN that predicts each image's label, e.g. the emoji subgroup). They are
comparable between models evaluated on the same data with the same feature network, never with
numbers in papers. Also: R-precision as in AttnGAN (an image encoder trained contrastively against
the frozen caption embeddings ranks the true caption among 100), diversity (mean pairwise feature
distance between samples of one caption) and memorisation (feature and pixel distance from each
generated image to its nearest training image). Every figure is printed next to two baselines
measured in the same run: real images against real images (a held-out half) and an untrained
generator of the same architecture. With --inception FILE (a TorchScript module returning
(pool features, logits) for 299 px images in [-1, 1]) the standard FID and IS are added.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from generator.bundle import BundleTextEncoder, is_bundle
from generator.checkpoint import WEIGHTS_FILE, read_config
from generator.data import load_rgb_image, manifest_sha256, read_manifest
from generator.matching import contrastive_fit, flip_and_shift
from generator.pipeline import StackGANPipeline, default_device

logger = logging.getLogger(__name__)
EVAL_SIZE = 64


# -- networks ----------------------------------------------------------------------------------------

class SmallConvNet(nn.Module):
    """64 px image -> 128-d feature; a head on top (classes, or a projection into text space)."""

    def __init__(self, out_dim: int, feature_dim: int = 128):
        super().__init__()
        channels = [3, 32, 64, 128, feature_dim]
        layers: list[nn.Module] = []
        for cin, cout in zip(channels, channels[1:]):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(feature_dim, out_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int, seed: int) -> SmallConvNet:
    torch.manual_seed(seed)
    net = SmallConvNet(classes)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 64):
            index = order[start:start + 64]
            loss = F.cross_entropy(net(flip_and_shift(images[index])), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


def train_image_text_encoder(images: torch.Tensor, caption_embeddings: list[torch.Tensor], epochs: int,
                             seed: int) -> SmallConvNet:
    """Image encoder into the frozen text space, by InfoNCE over matching (image, caption) pairs."""
    torch.manual_seed(seed)
    net = SmallConvNet(caption_embeddings[0].shape[-1])
    return contrastive_fit(net, images, caption_embeddings, epochs, seed)


# -- statistics ------------------------------------------------------------------------------------

def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), the trace root via symmetric eigenvalues."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 100,
                              seed: int = 0) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets."""
    rng = np.random.default_rng(seed)
    size = min(subset_size, len(a), len(b))
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), size, replace=False)]
        y = b[rng.choice(len(b), size, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        off = 1 - np.eye(size)
        values.append((kxx * off).sum() / (size * (size - 1)) + (kyy * off).sum() / (size * (size - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values))


def inception_score(logits: np.ndarray, splits: int = 10) -> float:
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    scores = []
    for part in np.array_split(probs, max(1, min(splits, len(probs)))):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores))


def r_precision(image_vectors: torch.Tensor, true_text: torch.Tensor, pool: torch.Tensor, seed: int = 0) -> float:
    """Share of images whose true caption ranks first among itself and 99 captions of other images."""
    generator = torch.Generator().manual_seed(seed)
    image_vectors = F.normalize(image_vectors, dim=-1)
    hits = 0
    for i in range(len(image_vectors)):
        others = pool[torch.randperm(len(pool), generator=generator)[:99]]
        candidates = F.normalize(torch.cat([true_text[i : i + 1], others]), dim=-1)
        hits += int((candidates @ image_vectors[i]).argmax() == 0)
    return hits / len(image_vectors)


# -- the evaluation ---------------------------------------------------------------------------------

@dataclass
class RealSet:
    images: torch.Tensor  # (N, 3, 64, 64) in [-1, 1]
    labels: torch.Tensor
    label_names: list[str]
    captions: list[list[str]]
    embeddings: list[torch.Tensor]


def load_real(folder: Path, encoder: Any, label_field: str) -> RealSet:
    items = [i for i in read_manifest(folder) if i.trainable]
    images, labels, captions = [], [], []
    for item in items:
        try:
            image = load_rgb_image(folder / item.image).resize((EVAL_SIZE, EVAL_SIZE))
        except ValueError:
            continue
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1)
        labels.append(str(item.extra.get(label_field) or item.captions[0].split()[-1]))
        captions.append(list(item.captions))
    names = sorted(set(labels))
    flat = [c for group in captions for c in group]
    matrix = encoder.encode(flat)
    embeddings, offset = [], 0
    for group in captions:
        embeddings.append(matrix[offset:offset + len(group)])
        offset += len(group)
    return RealSet(torch.stack(images), torch.tensor([names.index(x) for x in labels]), names, captions, embeddings)


def feature_networks(real: RealSet, folder: Path, encoder: Any, seed: int,
                     cache_dir: Path | None = None) -> tuple[SmallConvNet, SmallConvNet]:
    """Train (or load, cached per manifest and encoder) the two evaluation networks."""
    key = hashlib.sha256((manifest_sha256(folder) + encoder.fingerprint + f"v3-{seed}").encode()).hexdigest()[:16]
    cache = (cache_dir or folder / ".cache") / f"eval-nets-{key}.safetensors"
    classifier, aligner = SmallConvNet(len(real.label_names)), SmallConvNet(encoder.dim)
    if cache.is_file():
        tensors = load_file(str(cache))
        classifier.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("cls.")})
        aligner.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("txt.")})
        return classifier.eval(), aligner.eval()
    logger.info("training the in-domain feature network (%d labels) and the R-precision image encoder",
                len(real.label_names))
    classifier = train_classifier(real.images, real.labels, len(real.label_names), epochs=15, seed=seed)
    aligner = train_image_text_encoder(real.images, real.embeddings, epochs=25, seed=seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"cls.{k}": v for k, v in classifier.state_dict().items()}
    tensors.update({f"txt.{k}": v for k, v in aligner.state_dict().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(cache))
    return classifier, aligner


@torch.no_grad()
def describe(images: torch.Tensor, captions_idx: list[int], real: RealSet, reference: torch.Tensor,
             classifier: SmallConvNet, aligner: SmallConvNet, reference_features: np.ndarray,
             text_pool: torch.Tensor, true_text: torch.Tensor, groups: list[list[int]] | None) -> dict[str, float]:
    features = torch.cat([classifier.features(images[i:i + 256]) for i in range(0, len(images), 256)]).numpy()
    logits = torch.cat([classifier(images[i:i + 256]) for i in range(0, len(images), 256)]).numpy()
    vectors = torch.cat([aligner(images[i:i + 256]) for i in range(0, len(images), 256)])
    nearest_feature = torch.cdist(torch.from_numpy(features), torch.from_numpy(reference_features)).min(1).values
    nearest_pixel = torch.cdist(images.flatten(1), reference.flatten(1)).min(1).values / math.sqrt(images[0].numel())
    result = {
        "fid_in_domain": frechet_distance(features, reference_features),
        "kid_in_domain": kernel_inception_distance(features, reference_features),
        "is_in_domain": inception_score(logits),
        "r_precision": r_precision(vectors, true_text, text_pool),
        "nearest_train_feature_distance": float(nearest_feature.mean()),
        "nearest_train_pixel_rmse": float(nearest_pixel.mean()),
    }
    if groups:
        distances = [float(torch.pdist(torch.from_numpy(features[g])).mean()) for g in groups if len(g) > 1]
        result["diversity"] = float(np.mean(distances))
    return result


SAME_LABEL_ROW = "real, same label"


@torch.no_grad()
def same_label_reference(real: RealSet, eval_items: list[int], per_caption: int, classifier: SmallConvNet,
                         aligner: SmallConvNet, text_pool: torch.Tensor, true_text: torch.Tensor,
                         seed: int) -> dict[str, float]:
    """What a model would score that, for each caption, drew real images of the caption's label (other
    than the caption's own where there are others): R-precision of one such image per caption, and the
    diversity of ``per_caption`` of them, over the same first 100 captions as the checkpoints' diversity.

    A reference for the diversity figure: seeds of one caption that differ as much as different real
    images of one label (e.g. two different smiling faces) reach this row's diversity; more than that
    means the seeds leave the caption's label."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for index, label in enumerate(real.labels.tolist()):
        by_label.setdefault(label, []).append(index)

    def others_of(item: int) -> list[int]:
        same = by_label[int(real.labels[item])]
        return [i for i in same if i != item] or same

    stand_ins = [rng.choice(others_of(item)) for item in eval_items]
    vectors = aligner(real.images[stand_ins])
    result = {"r_precision": r_precision(vectors, true_text, text_pool)}
    distances = []
    for item in eval_items[:100]:
        pool = others_of(item)
        group = rng.sample(pool, per_caption) if len(pool) >= per_caption else pool
        if len(group) > 1:
            distances.append(float(torch.pdist(classifier.features(real.images[group])).mean()))
    if distances:
        result["diversity"] = float(np.mean(distances))
    return result


def generate_for(pipeline: StackGANPipeline, captions: list[str], per_caption: int, seed: int) -> torch.Tensor:
    """The final scale's images, resized to the evaluation size."""
    return generate_per_scale(pipeline, captions, per_caption, seed)[pipeline.config.output_size]


def generate_per_scale(pipeline: StackGANPipeline, captions: list[str], per_caption: int,
                       seed: int) -> dict[int, torch.Tensor]:
    """Every scale's images of the same seeds (scale in px -> (N, 3, 64, 64) in [-1, 1]), so the figures
    of the 64, 128 and 256 px branches of one checkpoint can be compared."""
    images: dict[int, list[torch.Tensor]] = {size: [] for size in pipeline.config.image_sizes}
    for start in range(0, len(captions), 32):
        chunk = captions[start:start + 32]
        seeds = [seed + (start + i) * per_caption + j for i in range(len(chunk)) for j in range(per_caption)]
        output = pipeline(chunk, num_images_per_caption=per_caption, seeds=seeds, return_all_scales=True)
        for size, generated in output.scales.items():
            for item in generated:
                resized = item.image.resize((EVAL_SIZE, EVAL_SIZE))
                images[size].append(torch.from_numpy(np.asarray(resized, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1)
    return {size: torch.stack(batch) for size, batch in images.items()}


def evaluate(checkpoint: Path, data: Path, samples: int = 500, per_caption: int = 4, seed: int = 0,
             label_field: str = "subgroup", device: str | None = None, inception: Path | None = None,
             cache_dir: Path | None = None) -> dict:
    """FID*, R-precision, diversity and memorisation of a checkpoint at each of its scales, next to real
    images and an untrained generator of the same architecture. ``data`` may be a training bundle:
    then its cached caption embeddings stand in for the text encoder, which is never loaded."""
    random.seed(seed)
    torch.manual_seed(seed)
    device = device or str(default_device())
    encoder: Any
    if is_bundle(data):
        encoder = BundleTextEncoder(data)
    else:
        from generator.text_encoder import TextEncoder

        encoder = TextEncoder(device=device)
    real = load_real(data, encoder, label_field)
    classifier, aligner = feature_networks(real, data, encoder, seed, cache_dir)
    order = torch.randperm(len(real.images), generator=torch.Generator().manual_seed(seed)).tolist()
    half_a, half_b = order[: len(order) // 2], order[len(order) // 2:][:samples]
    with torch.no_grad():
        reference_features = classifier.features(real.images).numpy()
        features_a = classifier.features(real.images[half_a]).numpy()
    text_pool = torch.cat([e for e in real.embeddings])
    eval_items = order[:samples]
    captions = [real.captions[i][0] for i in eval_items]
    true_text = torch.stack([real.embeddings[i][0] for i in eval_items])
    rows: dict[str, dict[str, float]] = {}

    # Baseline 1: real images of one half against the other half (the floor for FID, the ceiling for R-precision).
    b_images = real.images[half_b]
    rows["real (held-out half)"] = describe(
        b_images, half_b, real, real.images[half_a], classifier, aligner, features_a, text_pool,
        torch.stack([real.embeddings[i][0] for i in half_b]), None)

    rows[SAME_LABEL_ROW] = same_label_reference(real, eval_items, per_caption, classifier, aligner, text_pool,
                                                true_text, seed)

    # Baseline 2: the same architecture, untrained; then the checkpoint.
    from generator.calibration import calibrate_batch_norm
    from generator.models import build_generator, init_weights

    config, _ = read_config(checkpoint)
    torch.manual_seed(seed)
    untrained_model = build_generator(config)
    init_weights(untrained_model)
    calibrate_batch_norm(untrained_model, config, encoder, captions=[c[0] for c in real.captions[:4]])
    untrained = StackGANPipeline(untrained_model, config, encoder, torch.device(device))
    trained = StackGANPipeline.from_pretrained(checkpoint, device=device, text_encoder=encoder)
    groups = [list(range(i * per_caption, (i + 1) * per_caption)) for i in range(min(100, len(captions)))]
    real_row = rows["real (held-out half)"]
    per_scale: dict[str, dict[str, dict[str, float]]] = {}
    for name, pipeline in (("untrained generator", untrained), (f"checkpoint {checkpoint.name}", trained)):
        one_each = generate_per_scale(pipeline, captions, 1, seed)
        several = generate_per_scale(pipeline, captions[:100], per_caption, seed + 10_000)
        for size in config.image_sizes:
            result = describe(one_each[size], eval_items, real, real.images, classifier, aligner, reference_features,
                              text_pool, true_text, None)
            with torch.no_grad():
                several_features = classifier.features(several[size]).numpy()
            result["diversity"] = float(np.mean([torch.pdist(torch.from_numpy(several_features[g])).mean().item()
                                                 for g in groups]))
            per_scale.setdefault(str(size), {"real (held-out half)": real_row})[name] = result
        # The top-level rows are the final scale's, the output users see.
        rows[name] = per_scale[str(config.output_size)][name]
    report = {
        "checkpoint": str(checkpoint),
        "weights_sha256": hashlib.sha256((checkpoint / WEIGHTS_FILE).read_bytes()).hexdigest(),
        "data": str(data),
        "manifest_sha256": manifest_sha256(data),
        "samples": len(captions),
        "per_caption_for_diversity": per_caption,
        "feature_network": f"in-domain CNN predicting '{label_field}' ({len(real.label_names)} labels), 128-d features",
        "note": "in-domain figures: comparable between models on this data and feature network only, not with papers",
        "rows": rows,
        "scales": per_scale,
    }
    if inception is not None:
        report["standard_inception"] = standard_inception(inception, trained, captions, real, half_b, seed)
    return report


def standard_inception(path: Path, pipeline: StackGANPipeline, captions: list[str], real: RealSet,
                       reals: list[int], seed: int) -> dict[str, float]:
    """Standard FID / IS with user-provided Inception-v3 weights (TorchScript: images -> (pool, logits))."""
    model = torch.jit.load(str(path), map_location="cpu").eval()

    def run(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        pools, logits = [], []
        with torch.no_grad():
            for start in range(0, len(images), 32):
                batch = F.interpolate(images[start:start + 32], size=(299, 299), mode="bilinear", align_corners=False)
                pool, logit = model(batch)
                pools.append(pool.flatten(1))
                logits.append(logit)
        return torch.cat(pools).numpy(), torch.cat(logits).numpy()

    fake_pool, fake_logits = run(generate_for(pipeline, captions, 1, seed))
    real_pool, _ = run(real.images[reals])
    return {"fid": frechet_distance(fake_pool, real_pool), "inception_score": inception_score(fake_logits)}


def format_table(report: dict) -> str:
    columns = [("fid_in_domain", "FID*", "{:.2f}"), ("kid_in_domain", "KID*", "{:.4f}"), ("is_in_domain", "IS*", "{:.2f}"),
               ("r_precision", "R-prec", "{:.3f}"), ("diversity", "divers.", "{:.3f}"),
               ("nearest_train_feature_distance", "NN feat", "{:.3f}"), ("nearest_train_pixel_rmse", "NN pix", "{:.3f}")]
    lines = [f"{'':28}" + "".join(f"{title:>9}" for _, title, _ in columns)]

    def add(name: str, row: dict[str, float]) -> None:
        cells = "".join(f"{(fmt.format(row[key]) if key in row else '-'):>9}" for key, _, fmt in columns)
        lines.append(f"{name[:28]:28}{cells}")

    scales = report.get("scales") or {}
    if len(scales) > 1:
        # One block per scale of the same checkpoint and seeds: where quality is lost shows directly.
        add("real (held-out half)", report["rows"]["real (held-out half)"])
        if SAME_LABEL_ROW in report["rows"]:
            add(SAME_LABEL_ROW, report["rows"][SAME_LABEL_ROW])
        for size, rows in scales.items():
            for name, row in rows.items():
                if not name.startswith("real"):
                    add(f"{size:>3} px {name}", row)
    else:
        for name, row in report["rows"].items():
            add(name, row)
    lines.append("* in-domain feature network (see 'note'); R-prec: true caption first among 100 (chance 0.01);")
    lines.append("  divers.: mean pairwise feature distance of 4 samples per caption; NN: distance to nearest training image")
    if SAME_LABEL_ROW in report["rows"]:
        lines.append(f"  '{SAME_LABEL_ROW}': real images of the caption's label in place of samples (its diversity is what")
        lines.append("  seeds that differ like different real images of one label reach)")
    if "standard_inception" in report:
        lines.append(f"standard Inception-v3: FID {report['standard_inception']['fid']:.2f}, "
                     f"IS {report['standard_inception']['inception_score']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m generator.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with manifest.jsonl")
    parser.add_argument("--samples", type=int, default=500, help="captions to generate from")
    parser.add_argument("--label-field", default="subgroup", help="manifest field the feature network predicts")
    parser.add_argument("--inception", type=Path, help="TorchScript Inception-v3 file for standard FID / IS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--out", type=Path, help="JSON report (default: CHECKPOINT/evaluation.json)")
    args = parser.parse_args(argv)
    from generator.bundle import BundleError
    from generator.checkpoint import CheckpointError
    from generator.data import ManifestError

    try:
        report = evaluate(args.checkpoint, args.data, args.samples, seed=args.seed, label_field=args.label_field,
                          device=args.device, inception=args.inception)
    except (CheckpointError, ManifestError, BundleError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.checkpoint / "evaluation.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
