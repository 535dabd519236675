"""Checkpoints, the inference pipeline, the dataset format and the trainer."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from generator import CheckpointError, StackGANPipeline
from generator.checkpoint import WEIGHTS_FILE, save_pretrained
from generator.config import StackGANConfig
from generator.data import CaptionedImageDataset, ManifestError, read_manifest, write_manifest
from generator.models import build_generator
from generator.train import Trainer, TrainingOptions, build_parser
from tests.synthetic import make_shapes_dataset


def images_equal(a, b):
    return all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b, strict=True))


def test_pipeline_turns_captions_into_images_with_metadata(tiny_checkpoint, text_encoder):
    pipe = StackGANPipeline.from_pretrained(tiny_checkpoint, device="cpu", text_encoder=text_encoder)
    out = pipe(["a red apple", "a blue bird"], num_images_per_caption=2, generator=torch.Generator().manual_seed(3),
               return_all_scales=True)
    assert [(g.caption, g.sample_index, g.size) for g in out.images] == [
        ("a red apple", 0, 64), ("a red apple", 1, 64), ("a blue bird", 0, 64), ("a blue bird", 1, 64)]
    assert all(isinstance(g.image, Image.Image) and g.image.size == (64, 64) for g in out.images)
    assert sorted(out.scales) == [16, 32, 64] and all(len(v) == 4 for v in out.scales.values())
    assert len({g.seed for g in out.images}) == 4


def test_pipeline_is_deterministic_under_a_seed(tiny_checkpoint, text_encoder):
    pipe = StackGANPipeline.from_pretrained(tiny_checkpoint, device="cpu", text_encoder=text_encoder)
    first = pipe(["a red apple"], 3, generator=torch.Generator().manual_seed(7)).images
    again = pipe(["a red apple"], 3, generator=torch.Generator().manual_seed(7)).images
    other = pipe(["a red apple"], 3, generator=torch.Generator().manual_seed(8)).images
    assert images_equal(first, again)
    assert not images_equal(first, other)
    # Each image is reproducible from its own seed alone, whatever batch it was in.
    alone = pipe(["a red apple"], 1, seeds=[first[2].seed]).images[0]
    assert np.array_equal(np.asarray(alone.image), np.asarray(first[2].image))


def test_save_and_load_round_trip_gives_identical_images(tmp_path, text_encoder):
    config = StackGANConfig(ngf=8, ndf=4, base_size=16, branches=2)
    torch.manual_seed(1)
    model = build_generator(config).eval()
    save_pretrained(tmp_path / "ck", config, model.state_dict(), text_encoder.describe())
    in_memory = StackGANPipeline(model, config, text_encoder, torch.device("cpu"))
    loaded = StackGANPipeline.from_pretrained(tmp_path / "ck", device="cpu", text_encoder=text_encoder)
    assert images_equal(in_memory(["a cat"], 2, seeds=[1, 2]).images, loaded(["a cat"], 2, seeds=[1, 2]).images)


def test_pipeline_runs_in_a_fresh_process(tiny_checkpoint, tmp_path):
    script = (
        "import sys; from generator import StackGANPipeline\n"
        f"p = StackGANPipeline.from_pretrained({str(tiny_checkpoint)!r}, device='cpu')\n"
        f"p(['a smiling sun'], seeds=[5]).images[0].image.save({str(tmp_path / 'out.png')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert Image.open(tmp_path / "out.png").size == (64, 64)


@pytest.mark.parametrize("captions", [[], "a string, not a list", [""], ["ok", 3], ["   "]])
def test_bad_caption_lists_raise_a_clear_error(tiny_checkpoint, text_encoder, captions):
    pipe = StackGANPipeline.from_pretrained(tiny_checkpoint, device="cpu", text_encoder=text_encoder)
    with pytest.raises(ValueError, match="caption"):
        pipe(captions)


def test_missing_corrupt_or_mismatched_checkpoints_are_refused(tmp_path, tiny_checkpoint, text_encoder):
    with pytest.raises(CheckpointError, match="does not exist"):
        StackGANPipeline.from_pretrained(tmp_path / "nowhere", text_encoder=text_encoder)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    (corrupt / WEIGHTS_FILE).write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        StackGANPipeline.from_pretrained(corrupt, text_encoder=text_encoder)
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["generator"]["ngf"] = 16
    (mismatched / "config.json").write_text(json.dumps(config))
    (mismatched / WEIGHTS_FILE).write_bytes((tiny_checkpoint / WEIGHTS_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="do not match config.json: .*shape mismatches"):
        StackGANPipeline.from_pretrained(mismatched, text_encoder=text_encoder)
    (mismatched / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        StackGANPipeline.from_pretrained(mismatched, text_encoder=text_encoder)


def test_manifest_errors_name_every_bad_line(tmp_path):
    good = {"image": "a.png", "captions": ["x"], "license": "CC0-1.0", "source": "s", "attribution": "",
            "training_permission": "allowed"}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "captions": []}), json.dumps({**good, "license": "a b"}),
             json.dumps({**good, "image": "../etc/passwd"}), json.dumps({**good, "training_permission": "maybe"}),
             json.dumps({k: v for k, v in good.items() if k != "source"})]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path)
    text = str(info.value)
    for expected in ("line 2: not valid JSON", "line 3: 'captions'", "line 4: 'license'", "line 5: 'image' must stay",
                     "line 6: 'training_permission'", "line 7: missing field(s): source"):
        assert expected in text
    assert "line 1" not in text


def test_dataset_skips_and_reports_unusable_items(tmp_path):
    make_shapes_dataset(tmp_path, size=32, copies=1)
    items = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    items[0]["training_permission"] = "not allowed"
    items[1]["image"] = "images/missing.png"
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG broken")
    items[2]["image"] = "images/broken.png"
    write_manifest(tmp_path, items)
    dataset = CaptionedImageDataset(tmp_path, [16, 32], {c: torch.zeros(4) for i in items for c in i["captions"]})
    reasons = {s.line: s.reason for s in dataset.report.skipped}
    assert reasons[1] == "training not allowed by the rights holder"
    assert reasons[2].startswith("unreadable image (image file is missing")
    assert reasons[3].startswith("unreadable image (Pillow cannot read")
    assert len(dataset) == len(items) - 3
    sample = dataset[0]
    assert [tuple(t.shape) for t in sample["images"]] == [(3, 16, 16), (3, 32, 32)]
    assert sample["embedding"].shape == sample["wrong_embedding"].shape == (4,)


def test_trainer_help_documents_every_option():
    parser = build_parser()
    help_text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
            assert action.option_strings[0] in help_text


def mean_distance_to_own_class(trainer: Trainer, captions_to_images: dict[str, torch.Tensor]) -> float:
    """Mean L2 distance (per pixel, [-1, 1] scale) from EMA samples to the nearest real image of their caption."""
    distances = []
    with torch.no_grad():
        for caption, reals in captions_to_images.items():
            text = trainer.encoder.encode([caption]).expand(4, -1)
            z = torch.stack([torch.randn(100, generator=torch.Generator().manual_seed(s)) for s in range(4)])
            fake = trainer.ema(z, text, torch.zeros(4, trainer.config.cond_dim))[0][-1]
            d = torch.cdist(fake.flatten(1), reals.flatten(1)) / fake[0].numel() ** 0.5
            distances.append(d.min(dim=1).values.mean().item())
    return float(np.mean(distances))


def test_a_few_hundred_steps_bring_samples_closer_to_the_training_images(tmp_path, text_encoder):
    """Measured over three seeds: the median run brings samples clearly closer to their captions' images."""
    data = make_shapes_dataset(tmp_path / "shapes", size=32, copies=2)
    ratios = []
    for seed in (2, 1, 0):  # seed 0 last: its run is resumed and grown below
        output = tmp_path / ("run" if seed == 0 else f"run-{seed}")
        options = TrainingOptions(data=data, output=output, steps=400, batch_size=8, seed=seed, device="cpu",
                                  config=StackGANConfig(ngf=8, ndf=8, base_size=16, branches=2),
                                  sample_every=0, checkpoint_every=150, log_every=10, progress=False)
        trainer = Trainer(options)
        by_caption: dict[str, list[torch.Tensor]] = {}
        for i, item in enumerate(trainer.dataset.items):
            full = trainer.dataset.pixels[i].float().div(127.5).sub(1).unsqueeze(0)
            image = torch.nn.functional.interpolate(full, size=(32, 32), mode="bilinear", antialias=True)[0]
            by_caption.setdefault(item.captions[0], []).append(image)
        targets = {c: torch.stack(v) for c, v in by_caption.items()}
        before = mean_distance_to_own_class(trainer, targets)
        trainer.run()
        ratios.append(mean_distance_to_own_class(trainer, targets) / before)
    print("distance to the training images after / before, per seed:", [round(r, 3) for r in ratios])
    assert statistics.median(ratios) < 0.85, ratios
    log = [json.loads(line) for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 400
    assert log[0]["loss_d16"] != log[-1]["loss_d16"] and log[0]["loss_g"] != log[-1]["loss_g"]
    for name in ("config.json", "generator.safetensors", "lineage.json", "training_state.json", "samples.png"):
        assert (tmp_path / "run" / name).is_file()
    lineage = json.loads((tmp_path / "run" / "lineage.json").read_text())
    assert lineage["datasets"][0]["licences"] == {"CC0-1.0": 16} and lineage["phases"][-1]["steps"] == 400

    # Resuming continues from the saved step; fine-tuning can grow a branch.
    resumed = Trainer(TrainingOptions(**{**options.__dict__, "steps": 410}))
    assert resumed.step == 400
    resumed.run()
    grown = Trainer(TrainingOptions(**{**options.__dict__, "steps": 5, "output": tmp_path / "grown",
                                       "init_from": tmp_path / "run",
                                       "config": options.config.replace(branches=3)}))
    assert torch.equal(grown.generator.stages[0].fc[0].weight, resumed.ema.stages[0].fc[0].weight)
    grown.run()
    pipe = StackGANPipeline.from_pretrained(tmp_path / "grown", device="cpu", text_encoder=text_encoder)
    assert pipe(["a red circle"], seeds=[1]).images[0].image.size == (64, 64)


def test_grid_command_draws_held_out_captions_and_refuses_training_ones(tiny_checkpoint, tmp_path):
    from generator.__main__ import main as generator_main

    data = make_shapes_dataset(tmp_path / "shapes", size=16, copies=1)
    out = tmp_path / "grid.png"
    # "a red circle" is one of the set's own captions (any spacing or case): not held out, refused.
    assert generator_main(["grid", str(tiny_checkpoint), "--data", str(data), "--caption", "A red  circle",
                           "--out", str(out)]) == 2
    assert not out.exists()
    assert generator_main(["grid", str(tiny_checkpoint), "--data", str(data), "--caption", "a violet star at dusk",
                           "--caption", "two small squares", "--seeds", "3", "--out", str(out)]) == 0
    size = 64  # the tiny checkpoint's final scale
    with Image.open(out) as grid:
        assert grid.size == (3 * size, 2 * size)
        cells = np.asarray(grid.convert("RGB"), dtype=np.int16)
    # Different seeds give different images: the columns are not copies of one another.
    assert np.abs(cells[:size, :size] - cells[:size, size:2 * size]).max() > 0
