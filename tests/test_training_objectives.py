"""DiffAugment and the image-caption matching loss, and the trainer that uses them."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch

from generator.augment import diff_augment, parse_policy
from generator.config import StackGANConfig
from generator.data import load_rgb_image, read_manifest
from generator.matching import MatchingImageEncoder, contrastive_fit, load_or_fit_encoder, matching_loss, symmetric_info_nce
from generator.train import Trainer, TrainingOptions, main
from lineage import read_lineage
from tests.synthetic import make_shapes_dataset


def test_policies_parse_and_unknown_names_are_refused():
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("") == parse_policy(None) == ()
    with pytest.raises(ValueError, match="unknown augmentation blur"):
        parse_policy("color,blur")


def test_each_augmentation_keeps_the_shape_changes_the_pixels_and_passes_gradients():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    assert torch.equal(diff_augment(images, ()), images)
    for name in ("color", "translation", "cutout"):
        source = images.clone().requires_grad_(True)
        out = diff_augment(source, (name,))
        assert out.shape == images.shape
        assert not torch.allclose(out, images), name
        out.square().sum().backward()
        assert source.grad is not None and source.grad.abs().sum() > 0, name


def test_cutout_zeroes_at_most_a_quarter_and_translation_shifts_whole_images():
    torch.manual_seed(1)
    ones = torch.ones(16, 3, 32, 32)
    zeroed = (diff_augment(ones, ("cutout",)) == 0).float().mean(dim=(1, 2, 3))
    assert (zeroed > 0).all() and (zeroed <= 0.25 + 1e-6).all()
    # A single bright pixel moves by at most 1/8 of the side and keeps its value.
    dot = torch.zeros(64, 1, 32, 32)
    dot[:, :, 16, 16] = 1
    moved = diff_augment(dot, ("translation",))
    positions = moved.flatten(1).argmax(dim=1)
    rows, cols = positions // 32, positions % 32
    assert moved.flatten(1).amax(dim=1).eq(1).all()
    assert ((rows - 16).abs() <= 4).all() and ((cols - 16).abs() <= 4).all()
    assert len(set(positions.tolist())) > 5


def test_info_nce_prefers_matching_pairs():
    torch.manual_seed(0)
    text = torch.randn(8, 16)
    matched = symmetric_info_nce(text * 3, text, temperature=0.1)
    shuffled = symmetric_info_nce(text[torch.randperm(8)] * 3, text, temperature=0.1)
    assert matched < 0.1 < shuffled


@pytest.fixture(scope="module")
def shapes(tmp_path_factory, text_encoder):
    folder = make_shapes_dataset(tmp_path_factory.mktemp("shapes"), size=32, copies=2)
    items = read_manifest(folder)
    images = torch.stack([
        torch.from_numpy(np.asarray(load_rgb_image(folder / i.image), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
        for i in items
    ])
    embeddings = [text_encoder.encode(list(i.captions)) for i in items]
    return folder, images, embeddings


def caption_accuracy(encoder, images: torch.Tensor, embeddings: list[torch.Tensor]) -> float:
    """Share of images whose own first caption scores highest among every item's first caption."""
    firsts = torch.stack([e[0] for e in embeddings])
    with torch.no_grad():
        scores = torch.nn.functional.normalize(encoder(images), dim=-1) @ torch.nn.functional.normalize(firsts, dim=-1).T
    # Items that share a caption (copies) count as correct when any copy's caption wins.
    best = scores.argmax(dim=1)
    return float(torch.tensor([torch.equal(firsts[b], firsts[i]) for i, b in enumerate(best.tolist())]).float().mean())


def test_contrastive_training_teaches_the_encoder_to_pick_the_right_caption(shapes):
    """Measured over three seeds (one trajectory depends on the thread count's summation order): the
    median accuracy is several times chance (1 in 8) and clearly above the untrained encoder's."""
    _, images, embeddings = shapes
    results = []
    for seed in range(3):
        torch.manual_seed(seed)
        encoder = MatchingImageEncoder(embeddings[0].shape[-1], width=16)
        before = caption_accuracy(encoder.eval(), images, embeddings)
        contrastive_fit(encoder, images, embeddings, epochs=120, seed=seed, batch_size=8)
        results.append((before, caption_accuracy(encoder, images, embeddings)))
    print("caption accuracy before -> after, per seed:", results)
    assert statistics.median(after for _, after in results) >= 0.4, results
    assert statistics.median(after - before for before, after in results) >= 0.25, results


def test_the_encoder_is_cached_by_key_and_identified_by_its_weights(shapes, tmp_path):
    _, images, embeddings = shapes
    first, digest = load_or_fit_encoder(images, embeddings, "key-a", tmp_path, seed=0, epochs=1)
    assert len(list(tmp_path.glob("matching-encoder-*.safetensors"))) == 1
    again, digest_again = load_or_fit_encoder(images, embeddings, "key-a", tmp_path, seed=0, epochs=1)
    assert digest_again == digest and not any(p.requires_grad for p in again.parameters())
    _, other = load_or_fit_encoder(images, embeddings, "key-b", tmp_path, seed=1, epochs=1)
    assert other != digest


def test_matching_loss_teaches_the_generator_to_follow_its_captions(shapes, tmp_path):
    """Short runs with the matching loss make samples agree better with their own captions: the median
    drop of the matching loss of fixed samples over three seeds is clear (measured with these 80 steps
    and 20 epochs of the matcher, five seeds: drops 1.02-3.47 against the 0.2 asked)."""
    folder, _, _ = shapes
    drops = []
    for seed in range(3):
        options = TrainingOptions(data=folder, output=tmp_path / f"run-{seed}", steps=80, batch_size=8, seed=seed,
                                  device="cpu", config=StackGANConfig(ngf=8, ndf=8, base_size=16, branches=2),
                                  matching_weight=5.0, matching_epochs=20, diff_augment="color,translation,cutout",
                                  sample_every=0, checkpoint_every=0, log_every=10, progress=False)
        trainer = Trainer(options)
        captions = [item.captions[0] for item in trainer.dataset.items]
        text = trainer.encoder.encode(captions)
        z = torch.randn(len(captions), 100, generator=torch.Generator().manual_seed(7))

        def sample_matching_loss(trainer=trainer, text=text, z=z) -> float:
            with torch.no_grad():
                fakes = trainer.ema(z, text, torch.zeros(len(text), trainer.config.cond_dim))[0][-1]
                return matching_loss(trainer.matcher, fakes, text).item()

        before = sample_matching_loss()
        trainer.run()
        drops.append(before - sample_matching_loss())
    print("drop of the matching loss of fixed samples, per seed:", [round(d, 3) for d in drops])
    assert statistics.median(drops) > 0.2, drops
    log = [json.loads(line) for line in (tmp_path / "run-0" / "losses.jsonl").read_text().splitlines()]
    assert all("matching" in row for row in log)
    phase = read_lineage(tmp_path / "run-0").phases[-1]
    assert phase.options["diff_augment"] == ["color", "translation", "cutout"]
    assert phase.options["matching_loss"]["weight"] == 5.0 and len(phase.options["matching_loss"]["encoder_sha256"]) == 64


def test_bad_objective_options_are_refused_with_a_message(tmp_path, capsys):
    data = make_shapes_dataset(tmp_path / "shapes", size=16, copies=1)
    code = main(["--data", str(data), "--output", str(tmp_path / "run"), "--steps", "1", "--diff-augment", "colour"])
    assert code == 2 and "unknown augmentation colour" in capsys.readouterr().err
    code = main(["--data", str(data), "--output", str(tmp_path / "run"), "--steps", "1", "--matching-weight", "-1"])
    assert code == 2 and "cannot be negative" in capsys.readouterr().err


def test_a_fine_tuned_checkpoint_carries_the_datasets_and_phases_it_descends_from(tmp_path):
    base_data = make_shapes_dataset(tmp_path / "base", size=16, copies=1)
    customer_data = make_shapes_dataset(tmp_path / "customer", size=16, copies=2)
    common = dict(steps=2, batch_size=4, device="cpu", config=StackGANConfig(ngf=8, ndf=8, base_size=16, branches=1),
                  sample_every=0, checkpoint_every=0, progress=False)
    Trainer(TrainingOptions(data=base_data, output=tmp_path / "base-run", **common)).run()
    Trainer(TrainingOptions(data=customer_data, output=tmp_path / "tuned", init_from=tmp_path / "base-run",
                            **common)).run()
    lineage = json.loads((tmp_path / "tuned" / "lineage.json").read_text())
    assert [d["name"] for d in lineage["datasets"]] == ["base", "customer"]
    assert [d["items_used"] for d in lineage["datasets"]] == [8, 16]
    phases = lineage["phases"]
    assert [(p["run"], p["dataset"]) for p in phases] == [("base-run", "base"), ("tuned", "customer")]
    assert phases[1]["init_from"] == str(tmp_path / "base-run")
