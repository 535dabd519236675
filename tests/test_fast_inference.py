"""The optimised generator (generator.fast_inference) computes the eager model's images, and the
pipeline's cross-request batching gives each request what it would get alone. Tiny widths, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from generator import StackGANPipeline, fast_inference
from generator.config import StackGANConfig
from generator.fast_inference import (
    ConstantConditionJoin,
    InferenceOptions,
    OptimisationError,
    PhaseUpsampleConv,
    optimize_generator,
    use_half_precision,
)
from generator.layers import GLU
from generator.models import build_generator, init_weights
from generator.pipeline import GenerationJob, default_device

TOLERANCE = 1e-4  # max abs difference on images in [-1, 1]; float32 rounding is ~1e-6

CONFIGS = {
    "v2 conditional": StackGANConfig(ngf=8, ndf=4, base_size=16, branches=3),
    "v2 unconditional": StackGANConfig(ngf=8, ndf=4, base_size=16, branches=2, conditional=False),
    "v1": StackGANConfig(variant="v1", ngf=16, ndf=4, base_size=16, branches=2),
}


def trained_looking(config: StackGANConfig) -> nn.Module:
    """A generator whose batch norms hold non-trivial running statistics, as a trained one does,
    so that folding them is really tested."""
    torch.manual_seed(0)
    model = build_generator(config)
    init_weights(model)
    rng = torch.Generator().manual_seed(1)
    for layer in model.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=rng) * 0.3)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=rng) + 0.5)
            layer.bias.data.copy_(torch.randn(layer.num_features, generator=rng) * 0.1)
    return model.eval()


def inputs_for(config: StackGANConfig, batch: int = 3):
    rng = torch.Generator().manual_seed(2)
    z = torch.randn(batch, config.z_dim, generator=rng)
    text = F.normalize(torch.randn(batch, config.text_dim, generator=rng), dim=1) if config.conditional else None
    noise = torch.randn(batch, config.cond_dim, generator=rng)
    return z, text, noise


def images(model: nn.Module, inputs) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = model(*inputs)[0]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def flops(model: nn.Module, inputs) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(*inputs)
    return counter.get_total_flops()


STEPS = {
    "batch norm": InferenceOptions.none().replace(fold_batch_norm=True),
    "phase up-sampling": InferenceOptions.none().replace(phase_upsampling=True),
    "phase after folding": InferenceOptions.none().replace(fold_batch_norm=True, phase_upsampling=True),
    "constant condition": InferenceOptions.none().replace(fold_constant_condition=True),
    "fused GLU": InferenceOptions.none().replace(fuse_glu=True),
    "channels-last": InferenceOptions.none().replace(channels_last=True),
    "all": InferenceOptions(),
}


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("step", STEPS)
def test_each_rewrite_gives_the_eager_images_at_every_scale(config_name, step):
    config = CONFIGS[config_name]
    model = trained_looking(config)
    inputs = inputs_for(config)
    optimised, _ = optimize_generator(model, STEPS[step])
    expected, actual = images(model, inputs), images(optimised, inputs)
    assert [e.shape for e in expected] == [a.shape for a in actual]
    for e, a in zip(expected, actual):
        assert (e - a).abs().max().item() < TOLERANCE
    assert any((e.std() > 0.01).item() for e in expected)  # the images are not flat: the comparison means something


@pytest.mark.parametrize("config_name", CONFIGS)
def test_the_rewrites_find_their_layers_and_cut_the_operations(config_name):
    config = CONFIGS[config_name]
    model = trained_looking(config)
    inputs = inputs_for(config)
    optimised, report = optimize_generator(model)
    batch_norms_in_sequentials = sum(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in model.modules())
    upsamplers = sum(isinstance(m, nn.Upsample) for m in model.modules())
    assert report.folded_batch_norms == batch_norms_in_sequentials
    assert report.phase_upsamplers == upsamplers
    assert report.folded_conditions == (config.branches - 1 if config.variant == "v2" else 0)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.Upsample) for m in optimised.modules())
    assert flops(optimised, inputs) < 0.8 * flops(model, inputs)
    # The original module is left as it was.
    assert sum(isinstance(m, nn.Upsample) for m in model.modules()) == upsamplers


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (5, 7), (8, 8)])
@pytest.mark.parametrize("activation", [None, "glu", "relu"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_phase_upsampling_equals_nearest_then_3x3(height, width, activation, channels_last):
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=True)
    act = {"glu": GLU(), "relu": nn.ReLU(), None: None}[activation]
    reference = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv, *([act] if act else []))
    phase = PhaseUpsampleConv(conv, act)
    phase.channels_last = channels_last
    x = torch.randn(2, 6, height, width)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert (reference(x) - phase(x)).abs().max().item() < 1e-5
    assert phase.weight.shape[-2:] == (2, 2)  # four taps per output pixel, not nine


@pytest.mark.parametrize("height,width", [(1, 1), (2, 5), (3, 3), (9, 4)])
def test_constant_condition_join_equals_convolving_the_tiled_condition(height, width):
    torch.manual_seed(4)
    conv = nn.Conv2d(10 + 6, 12, 3, padding=1, bias=False)
    join = ConstantConditionJoin(conv, condition_channels=10)
    condition, features = torch.randn(3, 10), torch.randn(3, 6, height, width)
    tiled = condition[:, :, None, None].expand(-1, -1, height, width)
    with torch.no_grad():
        assert (conv(torch.cat([tiled, features], dim=1)) - join(condition, features)).abs().max().item() < 1e-5


def test_a_rewrite_that_changes_the_images_is_refused_at_load(monkeypatch):
    config = CONFIGS["v2 conditional"]
    model = trained_looking(config)
    # A phase kernel with two phases swapped: the kind of slip the load-time check exists for.
    right = fast_inference.phase_kernels
    monkeypatch.setattr(fast_inference, "phase_kernels", lambda w: right(w)[[1, 0, 2, 3]])
    with pytest.raises(OptimisationError, match="differs from the eager one"):
        optimize_generator(model, example_inputs=inputs_for(config))


def test_training_mode_and_half_precision_on_a_cpu_are_refused():
    model = build_generator(CONFIGS["v2 conditional"])
    with pytest.raises(OptimisationError, match="eval-mode"):
        optimize_generator(model.train())
    with pytest.raises(OptimisationError, match="CUDA only"):
        optimize_generator(model.eval(), InferenceOptions(half_precision=True))


def test_device_selection_half_precision_on_cuda_only(monkeypatch):
    assert use_half_precision(InferenceOptions(), torch.device("cuda")) is True
    assert use_half_precision(InferenceOptions(), torch.device("cpu")) is False
    assert use_half_precision(InferenceOptions(half_precision=False), torch.device("cuda")) is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device().type == "cpu"


def pixels(generated) -> np.ndarray:
    return np.asarray(generated.image, dtype=np.int16)


def test_optimised_pipeline_draws_the_eager_pipelines_images(tiny_checkpoint, text_encoder):
    eager = StackGANPipeline.from_pretrained(tiny_checkpoint, device="cpu", text_encoder=text_encoder)
    fast = StackGANPipeline.from_pretrained(tiny_checkpoint, device="cpu", text_encoder=text_encoder, inference=True)
    assert fast.optimisation is not None and fast.optimisation.phase_upsamplers > 0
    seeds = [11, 12, 13, 14]
    expected = eager(["a red apple", "a blue bird"], 2, seeds=seeds).images
    actual = fast(["a red apple", "a blue bird"], 2, seeds=seeds).images
    for e, a in zip(expected, actual, strict=True):
        assert (e.caption, e.seed) == (a.caption, a.seed)
        assert np.abs(pixels(e) - pixels(a)).max() <= 1  # one 8-bit level: float rounding at a .5 boundary


def test_requests_batched_together_get_what_each_would_get_alone(tiny_checkpoint, text_encoder):
    pipe = StackGANPipeline.from_pretrained(tiny_checkpoint, device="cpu", text_encoder=text_encoder, inference=True)
    jobs = [GenerationJob("a red apple", [1]), GenerationJob("a smiling sun", [2, 3]), GenerationJob("a blue bird", [4, 5, 6])]
    batched = pipe.generate_jobs(jobs, batch_size=4)  # chunks of 4 cut across the requests
    assert [[(g.caption, g.seed, g.caption_index, g.sample_index) for g in per] for per in batched] == [
        [("a red apple", 1, 0, 0)], [("a smiling sun", 2, 1, 0), ("a smiling sun", 3, 1, 1)],
        [("a blue bird", 4, 2, 0), ("a blue bird", 5, 2, 1), ("a blue bird", 6, 2, 2)]]
    for job, per in zip(jobs, batched):
        alone = pipe.generate_jobs([job], batch_size=1)[0]
        for a, b in zip(alone, per, strict=True):
            assert np.abs(pixels(a) - pixels(b)).max() <= 1
    # Different seeds give different images: the comparison above would catch a mix-up.
    assert np.abs(pixels(batched[2][0]) - pixels(batched[2][1])).max() > 10


@pytest.mark.parametrize("jobs,message", [
    ([GenerationJob("a cat", [])], "no seeds"),
    ([GenerationJob("  ", [1])], "empty"),
    ([GenerationJob("a cat", [1])], "batch_size"),
])
def test_bad_batches_raise_clear_errors(tiny_checkpoint, text_encoder, jobs, message):
    pipe = StackGANPipeline.from_pretrained(tiny_checkpoint, device="cpu", text_encoder=text_encoder)
    with pytest.raises(ValueError, match=message):
        pipe.generate_jobs(jobs, batch_size=0 if message == "batch_size" else 4)
