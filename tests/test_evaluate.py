"""Evaluation statistics against known values, and the evaluation command end to end on a tiny set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generator.evaluate import (
    SAME_LABEL_ROW,
    RealSet,
    SmallConvNet,
    format_table,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    main,
    r_precision,
    same_label_reference,
)
from tests.synthetic import make_shapes_dataset


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, means 2 apart in one dimension: FID = 4 (up to sampling noise).
    b = rng.normal(size=(4000, 3)) + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.25)
    # Same mean, scale 2 in every dimension: Tr(I + 4I - 2*2I) = 3.
    assert frechet_distance(a, rng.normal(size=(4000, 3)) * 2) == pytest.approx(3.0, abs=0.3)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    same = kernel_inception_distance(rng.normal(size=(500, 8)), rng.normal(size=(500, 8)))
    different = kernel_inception_distance(rng.normal(size=(500, 8)), rng.normal(size=(500, 8)) + 1)
    assert abs(same) < 0.05 < different


def test_inception_score_bounds():
    confident_and_varied = np.eye(10)[np.arange(1000) % 10] * 50
    assert inception_score(confident_and_varied) == pytest.approx(10, rel=0.01)
    all_the_same = np.tile(np.eye(10)[0] * 50, (1000, 1))
    assert inception_score(all_the_same) == pytest.approx(1, rel=0.01)


def test_r_precision_perfect_and_chance():
    text = torch.randn(200, 16)
    assert r_precision(text.clone(), text, text) == 1.0
    random_images = torch.randn(200, 16)
    assert r_precision(random_images, text, torch.randn(500, 16)) < 0.1


def test_the_same_label_reference_draws_only_from_the_captions_label():
    """Images of one label identical, labels different: seeds "drawn" from a caption's label do not differ
    at all, so any distance would mean images of another label were mixed in."""
    torch.manual_seed(0)
    looks = torch.rand(3, 3, 64, 64) * 2 - 1
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 2)
    images = looks[labels]
    embeddings = [torch.randn(1, 8) for _ in labels]
    real = RealSet(images, labels, ["a", "b", "c"], [["x"]] * len(labels), embeddings)
    items = list(range(len(labels)))
    true_text = torch.stack([e[0] for e in embeddings])
    row = same_label_reference(real, items, 4, SmallConvNet(3).eval(), SmallConvNet(8).eval(), true_text,
                               true_text, seed=0)
    assert row["diversity"] == pytest.approx(0.0, abs=1e-5) and 0 <= row["r_precision"] <= 1
    # Different looks within a label: the seeds now differ.
    real.images = images + 0.5 * torch.randn_like(images)
    assert same_label_reference(real, items, 4, SmallConvNet(3).eval(), SmallConvNet(8).eval(), true_text,
                                true_text, seed=0)["diversity"] > 0.01


def test_evaluate_command_end_to_end(tmp_path, tiny_checkpoint, capsys):
    data = make_shapes_dataset(tmp_path / "shapes", size=64, copies=3)
    out = tmp_path / "eval.json"
    assert main([str(tiny_checkpoint), "--data", str(data), "--samples", "24", "--label-field", "none",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"real (held-out half)", SAME_LABEL_ROW, "untrained generator",
                                   f"checkpoint {tiny_checkpoint.name}"}
    for name, row in report["rows"].items():
        assert 0 <= row["r_precision"] <= 1
        assert name == SAME_LABEL_ROW or np.isfinite(row["fid_in_domain"])
    assert "FID*" in capsys.readouterr().out and "FID*" in format_table(report)
    assert main([str(tmp_path / "nowhere"), "--data", str(data)]) == 2


def test_standard_inception_path_runs_a_user_supplied_torchscript_file(tmp_path, tiny_checkpoint):
    """The --inception code path with a real TorchScript file of the expected interface (299 px in,
    (pool features, logits) out). Real Inception-v3 weights are not shipped; the interface is what counts."""

    class PoolAndLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(),
                                                torch.nn.AdaptiveAvgPool2d(1))
            self.classify = torch.nn.Linear(8, 10)

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            assert images.shape[-1] == 299
            pool = self.features(images).flatten(1)
            return pool, self.classify(pool)

    torch.manual_seed(0)
    scripted = torch.jit.script(PoolAndLogits())
    scripted.save(str(tmp_path / "inception.pt"))
    data = make_shapes_dataset(tmp_path / "shapes", size=64, copies=3)
    out = tmp_path / "eval.json"
    assert main([str(tiny_checkpoint), "--data", str(data), "--samples", "24", "--label-field", "none",
                 "--inception", str(tmp_path / "inception.pt"), "--out", str(out)]) == 0
    standard = json.loads(out.read_text())["standard_inception"]
    assert np.isfinite(standard["fid"]) and standard["fid"] >= 0
    assert 1.0 <= standard["inception_score"] <= 10.0
