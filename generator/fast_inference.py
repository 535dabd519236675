"""Inference-only rewrites of a loaded, eval-mode StackGAN generator that compute the same images
with fewer operations and better memory layout.

The rewrites walk the module tree; they never need the model classes to change:

- **batch norm folded** into the convolution or linear layer before it (eval-mode BN is an affine
  map per channel, so it becomes the layer's weight scale and bias: one pass over memory less);
- **phase up-sampling**: "nearest x2, then 3x3 convolution" becomes four 2x2 convolutions on the
  low-resolution input, one per output phase (4 taps instead of 9 per output pixel), with the
  following pointwise activation (GLU, ReLU, ...) applied before the phases are interleaved;
- **constant condition folded**: a stage that tiles the condition vector over the feature map and
  convolves the concatenation spends most of that convolution on a spatially constant input. Its
  share is one vector per sample in the interior plus border corrections (3x3 distinct regions),
  so only the feature channels go through the full convolution;
- **fused GLU**: the gated linear unit as one kernel (torch's glu) instead of sigmoid then multiply;
- **channels-last** memory layout (faster convolutions on oneDNN and cuDNN);
- optional **torch.compile**, done at load/warm-up time, never on a user's request;
- **half precision on CUDA only** (bf16 on the project's CPUs was many times slower).

``check_equivalence`` runs the eager and optimised modules side by side; ``optimize_generator``
calls it once at load time so a model whose structure the rewrites misread is refused, not served.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# Pointwise activations that may run on each output phase before interleaving (they see one pixel's
# channels at a time, so applying them before or after the interleave gives the same numbers).
_PIXELWISE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


class OptimisationError(RuntimeError):
    """The optimised generator does not reproduce the eager one within tolerance."""


@dataclass(frozen=True)
class InferenceOptions:
    """Which rewrites to apply. Every field can be switched off to measure its share."""

    fold_batch_norm: bool = True
    phase_upsampling: bool = True
    fold_constant_condition: bool = True
    fuse_glu: bool = True
    channels_last: bool = True
    compile: bool = False
    half_precision: bool | None = None
    """None: half precision on CUDA, float32 elsewhere. True on a CPU is refused."""

    def replace(self, **changes) -> InferenceOptions:
        return replace(self, **changes)

    @classmethod
    def none(cls) -> InferenceOptions:
        """The plain eager model (every rewrite off)."""
        return cls(fold_batch_norm=False, phase_upsampling=False, fold_constant_condition=False, fuse_glu=False,
                   channels_last=False, compile=False, half_precision=False)


# ---------------------------------------------------------------------------------------------
# Batch-norm folding


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise OptimisationError(f"{bn} keeps no running statistics; it cannot be folded")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing bn(conv(x)) in one pass (eval mode). Computed in float64 for accuracy."""
    scale, shift = _bn_scale_shift(bn)
    fused = copy.deepcopy(conv)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = (conv.bias.double() * scale if conv.bias is not None else 0) + shift
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return fused


def fold_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    scale, shift = _bn_scale_shift(bn)
    fused = copy.deepcopy(linear)
    weight = linear.weight.double() * scale.view(-1, 1)
    bias = (linear.bias.double() * scale if linear.bias is not None else 0) + shift
    fused.weight = nn.Parameter(weight.to(linear.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(bias.to(linear.weight.dtype), requires_grad=False)
    return fused


def _foldable(first: nn.Module, second: nn.Module) -> bool:
    if isinstance(first, nn.Conv2d) and type(second) is nn.BatchNorm2d:
        return first.out_channels == second.num_features and second.track_running_stats
    if isinstance(first, nn.Linear) and type(second) is nn.BatchNorm1d:
        return first.out_features == second.num_features and second.track_running_stats
    return False


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every BN that directly follows a conv/linear layer inside an nn.Sequential. In place;
    returns how many were folded. A BN elsewhere (after an addition, say) is left as it is."""
    folded = 0
    for sequential in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        layers = list(sequential)
        rebuilt: list[nn.Module] = []
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _foldable(layers[i], layers[i + 1]):
                layer, bn = layers[i], layers[i + 1]
                rebuilt.append(fold_conv_bn(layer, bn) if isinstance(layer, nn.Conv2d) else fold_linear_bn(layer, bn))
                folded += 1
                i += 2
            else:
                rebuilt.append(layers[i])
                i += 1
        _replace_contents(sequential, rebuilt)
    return folded


def _replace_contents(sequential: nn.Sequential, layers: list[nn.Module]) -> None:
    # Keep the same Sequential object (its parent holds it by attribute) but renumber its children.
    for name in list(sequential._modules):
        del sequential._modules[name]
    for index, layer in enumerate(layers):
        sequential.add_module(str(index), layer)


# ---------------------------------------------------------------------------------------------
# Phase up-sampling


def _is_nearest_x2(layer: nn.Module) -> bool:
    if not isinstance(layer, nn.Upsample) or layer.mode != "nearest" or layer.size is not None:
        return False
    factor = layer.scale_factor
    factors = factor if isinstance(factor, tuple) else (factor, factor)
    return all(float(f) == 2.0 for f in factors)


def _is_plain_3x3(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def _is_glu_like(layer: nn.Module) -> bool:
    # The project's GLU (generator.layers.GLU: first half times the sigmoid of the second, over
    # channels) is matched by name, not by import; nn.GLU over dim 1 is the same thing.
    return type(layer).__name__ in ("GLU", "FusedGLU") or (isinstance(layer, nn.GLU) and layer.dim == 1)


def _pixelwise(layer: nn.Module) -> bool:
    return isinstance(layer, _PIXELWISE_ACTIVATIONS) or _is_glu_like(layer)


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) kernel of "nearest x2 then 3x3 conv" -> (4, O, I, 2, 2): one 2x2 kernel per
    output phase (row parity a, column parity b), order a*2+b, applied to the input padded by one.

    Output row 2i+a reads up-sampled rows 2i+a-1..2i+a+1, i.e. input rows i-1, i, i (a=0) or
    i, i, i+1 (a=1): the three kernel rows collapse to two, [w0, w1+w2] or [w0+w1, w2].
    """
    rows = [torch.stack([weight[:, :, 0], weight[:, :, 1] + weight[:, :, 2]], dim=2),
            torch.stack([weight[:, :, 0] + weight[:, :, 1], weight[:, :, 2]], dim=2)]
    kernels = []
    for a in (0, 1):
        r = rows[a]  # (O, I, 2, 3)
        cols = [torch.stack([r[..., 0], r[..., 1] + r[..., 2]], dim=-1), torch.stack([r[..., 0] + r[..., 1], r[..., 2]], dim=-1)]
        kernels.extend(cols)
    return torch.stack(kernels)


class PhaseUpsampleConv(nn.Module):
    """nearest x2 -> 3x3 conv (-> pixelwise activation), computed on the low-resolution input.

    One convolution with 4*O output channels (the four 2x2 phase kernels side by side) runs on the
    input padded by one pixel; phase (a, b) is that output shifted by (a, b). The activation runs
    once on all four phases at low resolution (for a GLU the channels are ordered [values of the
    four phases, gates of the four phases], so its halves still pair up), then the phases are
    interleaved into the full-resolution result.
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None = None):
        super().__init__()
        out_channels = conv.out_channels
        gated = activation is not None and _is_glu_like(activation)
        if gated and out_channels % 2:
            raise OptimisationError(f"a GLU after a {out_channels}-channel convolution cannot pair its halves")
        with torch.no_grad():
            kernels = phase_kernels(conv.weight.double()).to(conv.weight.dtype)  # (4, O, I, 2, 2)
            bias = conv.bias.detach().expand(4, -1) if conv.bias is not None else None  # (4, O)
            if gated:
                half = out_channels // 2
                kernels = torch.cat([kernels[:, :half].flatten(0, 1), kernels[:, half:].flatten(0, 1)])
                bias = torch.cat([bias[:, :half].flatten(), bias[:, half:].flatten()]) if bias is not None else None
            else:
                kernels = kernels.flatten(0, 1)
                bias = bias.flatten() if bias is not None else None
        self.weight = nn.Parameter(kernels.contiguous(), requires_grad=False)  # (4*O, I, 2, 2)
        self.bias = nn.Parameter(bias.contiguous(), requires_grad=False) if bias is not None else None
        self.activation = activation if activation is not None else nn.Identity()
        self.phase_channels = out_channels // 2 if gated else out_channels
        self.channels_last = False  # set by optimize_generator: otherwise the result is made contiguous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        # A 2x2 kernel with padding 1 gives (H+1, W+1) positions: the four phases, each shifted by (a, b).
        out = self.activation(F.conv2d(x, self.weight, self.bias, padding=1))  # (B, 4*C, H+1, W+1)
        channels = self.phase_channels
        phases = [out[:, k * channels:(k + 1) * channels, a:a + height, b:b + width]
                  for k, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))]
        if self.channels_last:
            # Written as (B, H, 2, W, 2, C): row 2i+a, column 2j+b, channels innermost, which is the
            # channels-last layout of the (B, C, 2H, 2W) result.
            result = out.new_empty(batch, height, 2, width, 2, channels)
            for (a, b), phase in zip(((0, 0), (0, 1), (1, 0), (1, 1)), phases):
                result[:, :, a, :, b, :] = phase.permute(0, 2, 3, 1)
            return result.view(batch, 2 * height, 2 * width, channels).permute(0, 3, 1, 2)
        result = out.new_empty(batch, channels, height, 2, width, 2)
        for (a, b), phase in zip(((0, 0), (0, 1), (1, 0), (1, 1)), phases):
            result[:, :, :, a, :, b] = phase
        return result.view(batch, channels, 2 * height, 2 * width)


def rewrite_phase_upsampling(module: nn.Module) -> int:
    """Replace [nearest x2, plain 3x3 conv, optional pixelwise activation] runs inside every
    nn.Sequential by PhaseUpsampleConv. In place; returns how many were replaced. Fold batch norm
    first so the activation directly follows the convolution."""
    replaced = 0
    for sequential in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        layers = list(sequential)
        rebuilt: list[nn.Module] = []
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _is_nearest_x2(layers[i]) and _is_plain_3x3(layers[i + 1]):
                activation = layers[i + 2] if i + 2 < len(layers) and _pixelwise(layers[i + 2]) else None
                rebuilt.append(PhaseUpsampleConv(layers[i + 1], activation))
                replaced += 1
                i += 3 if activation is not None else 2
            else:
                rebuilt.append(layers[i])
                i += 1
        _replace_contents(sequential, rebuilt)
    return replaced


# ---------------------------------------------------------------------------------------------
# Fused GLU


class FusedGLU(nn.Module):
    """The gated linear unit over channels as one kernel (torch's glu): one pass over memory
    instead of a sigmoid into a temporary and a multiplication."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


def fuse_glus(module: nn.Module) -> int:
    """Replace every channel GLU module by FusedGLU, wherever it sits. In place."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if _is_glu_like(child) and not isinstance(child, FusedGLU):
                parent._modules[name] = FusedGLU()
                replaced += 1
    return replaced


# ---------------------------------------------------------------------------------------------
# Constant condition


class ConstantConditionJoin(nn.Module):
    """conv3x3(cat([tile(condition), features])) without convolving the tiled condition.

    The condition is the same vector at every position, so its part of a zero-padded 3x3
    convolution takes only 3x3 distinct values per sample and channel: interior, four edges, four
    corners. Those come from the same convolution on a 3x3 tile; the full map is that tile with its
    middle row and column repeated.
    """

    def __init__(self, conv: nn.Conv2d, condition_channels: int):
        super().__init__()
        if not _is_plain_3x3(conv):
            raise OptimisationError("the joining convolution is not a plain 3x3 convolution")
        self.condition_channels = condition_channels
        weight = conv.weight.detach()
        self.condition_weight = nn.Parameter(weight[:, :condition_channels].contiguous(), requires_grad=False)
        self.feature_weight = nn.Parameter(weight[:, condition_channels:].contiguous(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False) if conv.bias is not None else None

    def forward(self, condition: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[-2:]
        out = F.conv2d(features, self.feature_weight, self.bias, padding=1)
        if height < 3 or width < 3:  # too small to have an interior: convolve the tile itself
            tiled = condition[:, :, None, None].expand(-1, -1, height, width)
            return out + F.conv2d(tiled, self.condition_weight, padding=1)
        tile = condition[:, :, None, None].expand(-1, -1, 3, 3).contiguous()
        regions = F.conv2d(tile, self.condition_weight, padding=1)  # (B, O, 3, 3)
        # Interior value everywhere, then what the borders lose to zero padding (eight thin slices).
        out = out + regions[:, :, 1:2, 1:2]
        borders = regions - regions[:, :, 1:2, 1:2]
        out[:, :, :1, :] += borders[:, :, 0:1, 1:2]
        out[:, :, -1:, :] += borders[:, :, 2:3, 1:2]
        out[:, :, :, :1] += borders[:, :, 1:2, 0:1]
        out[:, :, :, -1:] += borders[:, :, 1:2, 2:3]
        # Corners lost taps in both directions; the two edge corrections above subtracted the
        # shared ones twice, which inclusion-exclusion puts back.
        for row, col in ((0, 0), (0, 2), (2, 0), (2, 2)):
            r = slice(0, 1) if row == 0 else slice(-1, None)
            c = slice(0, 1) if col == 0 else slice(-1, None)
            corner = borders[:, :, row:row + 1, col:col + 1] - borders[:, :, row:row + 1, 1:2] - borders[:, :, 1:2, col:col + 1]
            out[:, :, r, c] += corner
        return out


class FoldedConditionStage(nn.Module):
    """A StackGAN-v2 refinement stage (joint GLU conv over [tiled condition, features], residual
    blocks, up-block) whose joint convolution skips the tiled condition."""

    def __init__(self, stage: nn.Module, condition_channels: int):
        super().__init__()
        layers = list(stage.joint)
        self.join = ConstantConditionJoin(layers[0], condition_channels)
        self.after_join = nn.Sequential(*layers[1:])
        self.residual = stage.residual
        self.upsample = stage.upsample

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        hidden = self.after_join(self.join(condition, features))
        return self.upsample(self.residual(hidden))


def _condition_channels(stage: nn.Module) -> int | None:
    """How many leading input channels of a refinement stage's joint conv carry the tiled condition,
    if the module is a refinement stage of the shape FoldedConditionStage reproduces."""
    joint = getattr(stage, "joint", None)
    if not (isinstance(joint, nn.Sequential) and len(joint) and isinstance(getattr(stage, "residual", None), nn.Module)
            and isinstance(getattr(stage, "upsample", None), nn.Module) and _is_plain_3x3(joint[0])):
        return None
    if type(stage).__name__ != "NextStage":
        return None
    residual_blocks = list(stage.residual)
    features = residual_blocks[0].body[0].in_channels if residual_blocks else None
    if features is None:
        # Without a residual block the feature width is what the up-block takes in.
        first = next((m for m in stage.upsample.modules() if isinstance(m, (nn.Conv2d, PhaseUpsampleConv))), None)
        features = first.weight.shape[1] if first is not None else None
    in_channels = joint[0].in_channels
    joined_out = joint[0].out_channels // 2 if _is_glu_like(joint[-1]) else joint[0].out_channels
    if features is None or joined_out != features or in_channels <= features:
        return None
    return in_channels - features


def rewrite_constant_condition(module: nn.Module) -> int:
    """Replace every StackGAN-v2 refinement stage by FoldedConditionStage. In place."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            channels = _condition_channels(child)
            if channels:
                parent._modules[name] = FoldedConditionStage(child, channels)
                replaced += 1
    return replaced


# ---------------------------------------------------------------------------------------------
# The whole transformation


class HalfPrecision(nn.Module):
    """Runs a module in float16 on float32 inputs and returns float32 outputs (CUDA only)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.half()

    def forward(self, *args):
        outputs = self.module(*[a.half() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args])
        return _map_tensors(outputs, lambda t: t.float())


def _map_tensors(value, fn: Callable[[torch.Tensor], torch.Tensor]):
    if isinstance(value, torch.Tensor):
        return fn(value) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


@dataclass
class OptimisationReport:
    folded_batch_norms: int = 0
    phase_upsamplers: int = 0
    folded_conditions: int = 0
    fused_glus: int = 0
    channels_last: bool = False
    compiled: bool = False
    half_precision: bool = False


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def use_half_precision(options: InferenceOptions, device: torch.device) -> bool:
    """Whether the optimised generator runs in float16 on ``device``: on CUDA unless switched off."""
    if options.half_precision is None:
        return device.type == "cuda"
    return bool(options.half_precision)


def optimize_generator(model: nn.Module, options: InferenceOptions | None = None,
                       example_inputs: Sequence[torch.Tensor | None] | None = None,
                       tolerance: float = 1e-3) -> tuple[nn.Module, OptimisationReport]:
    """A copy of the eval-mode ``model`` with the rewrites ``options`` selects (all but compile by
    default). The original is left as it is.

    With ``example_inputs`` (the generator's positional arguments), the eager and optimised
    modules are run once on them and compared: an optimised model whose largest difference from
    the eager one exceeds ``tolerance`` raises OptimisationError (float16 is checked at ten times
    the tolerance). torch.compile, when chosen, also compiles on these inputs, so that cost is paid
    at load time, not on the first request.
    """
    options = options or InferenceOptions()
    if model.training:
        raise OptimisationError("optimise an eval-mode model: call model.eval() first (batch norm must use running statistics)")
    device = _device_of(model)
    half = use_half_precision(options, device)
    if half and device.type != "cuda":
        raise OptimisationError("half precision is for CUDA only; on a CPU it is slower than float32")
    optimised = copy.deepcopy(model).eval()
    for parameter in optimised.parameters():
        parameter.requires_grad_(False)
    report = OptimisationReport()
    with torch.no_grad():
        if options.fold_batch_norm:
            report.folded_batch_norms = fold_batch_norms(optimised)
        if options.phase_upsampling:
            report.phase_upsamplers = rewrite_phase_upsampling(optimised)
        if options.fold_constant_condition:
            report.folded_conditions = rewrite_constant_condition(optimised)
        if options.fuse_glu:
            report.fused_glus = fuse_glus(optimised)
    if options.channels_last:
        optimised = optimised.to(memory_format=torch.channels_last)
        for layer in optimised.modules():
            if isinstance(layer, PhaseUpsampleConv):
                layer.channels_last = True
        report.channels_last = True
    if half:
        optimised = HalfPrecision(optimised)
        report.half_precision = True
    if options.compile:
        # dynamic=False: a worker serves a handful of batch sizes, each compiled once and kept.
        optimised = torch.compile(optimised, dynamic=False)
        report.compiled = True
    if example_inputs is not None:
        difference = check_equivalence(model, optimised, example_inputs)
        limit = tolerance * (10 if half else 1)
        if not difference <= limit:
            raise OptimisationError(f"the optimised generator differs from the eager one by {difference:.2e} (limit {limit:.0e}); "
                                    "its structure is not one these rewrites understand: run it with InferenceOptions.none()")
        logger.info("optimised generator: %s, largest difference from eager %.2e", report, difference)
    return optimised, report


@torch.inference_mode()
def check_equivalence(reference: nn.Module, candidate: nn.Module, inputs: Sequence[torch.Tensor | None]) -> float:
    """The largest absolute difference between the two modules' image outputs on ``inputs``."""
    expected = _images(reference(*inputs))
    actual = _images(candidate(*inputs))
    if len(expected) != len(actual):
        raise OptimisationError(f"the optimised generator returns {len(actual)} images, the eager one {len(expected)}")
    return max(float((e.float() - a.float()).abs().max()) for e, a in zip(expected, actual))


def _images(output) -> list[torch.Tensor]:
    # StackGAN generators return (images per scale, mu, logvar) or (image, mu, logvar).
    first = output[0] if isinstance(output, tuple) else output
    return list(first) if isinstance(first, (list, tuple)) else [first]
