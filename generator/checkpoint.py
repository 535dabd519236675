"""Checkpoint folders: config.json, generator.safetensors (EMA weights), lineage.json, and the
training state for resuming in training_state.safetensors + training_state.json. No pickles."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from generator.config import StackGANConfig
from lineage import Lineage, write_lineage

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "generator.safetensors"
LINEAGE_FILE = "lineage.json"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"
FORMAT_VERSION = 1
MODEL_TYPE = "stackgan"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, unreadable, or does not match its config."""


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # Write then rename, so an interrupted save never leaves a half-written file under the real name.
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def save_pretrained(
    folder: str | os.PathLike,
    config: StackGANConfig,
    generator_state: dict[str, torch.Tensor],
    text_encoder: dict[str, Any],
    lineage: Lineage | dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write an inference checkpoint. ``text_encoder`` is {name, dim, sha256}; ``lineage`` goes through
    the schema (a dict is parsed first, so a malformed one is refused before anything is written)."""
    if lineage is not None and not isinstance(lineage, Lineage):
        lineage = Lineage.from_dict(lineage)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in generator_state.items()}
    _save_tensors(folder / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
    _write_json(
        folder / CONFIG_FILE,
        {
            "model_type": MODEL_TYPE,
            "format_version": FORMAT_VERSION,
            "generator": config.to_dict(),
            "text_encoder": text_encoder,
            "weights_dtype": str(dtype).removeprefix("torch."),
        },
    )
    if lineage is not None:
        write_lineage(folder, lineage)
    return folder


def read_config(folder: str | os.PathLike) -> tuple[StackGANConfig, dict[str, Any]]:
    """Returns the generator config and the whole config.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    data = read_json(folder / CONFIG_FILE)
    if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE or "generator" not in data:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not a StackGAN checkpoint config")
    try:
        config = StackGANConfig.from_dict(data["generator"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {exc}") from exc
    return config, data


def load_weights_into(module: nn.Module, path: Path) -> None:
    """Load safetensors weights, refusing any missing, unexpected or mis-shaped tensor by name."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mis_shaped = sorted(
        f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    )
    if missing or unexpected or mis_shaped:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} tensors (first: {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors (first: {', '.join(unexpected[:3])})")
        if mis_shaped:
            problems.append(f"{len(mis_shaped)} shape mismatches (first: {'; '.join(mis_shaped[:3])})")
        raise CheckpointError(f"weights in {path} do not match config.json: " + "; ".join(problems))
    module.load_state_dict({k: tensors[k].to(v.dtype) for k, v in expected.items()})


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(folder: str | os.PathLike) -> str:
    """One hash for the files that decide what a checkpoint generates (config and weights)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        digest.update(name.encode())
        digest.update(bytes.fromhex(file_sha256(folder / name)))
    return digest.hexdigest()


def save_training_state(folder: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(folder / STATE_TENSORS_FILE, tensors)
    _write_json(folder / STATE_JSON_FILE, state)


def load_training_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    if not (folder / STATE_JSON_FILE).is_file():
        return None
    try:
        tensors = load_file(str(folder / STATE_TENSORS_FILE))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"training state in {folder} is unreadable: {exc}") from exc
    return tensors, read_json(folder / STATE_JSON_FILE)


def flatten_optimizer(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into tensors (safetensors) and plain values (JSON)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], plain: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        param_id, key = name[len(prefix) + 1 :].split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in plain.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": plain["param_groups"]})


# -- the training state of a run (resuming) ------------------------------------------------------------

@dataclass(frozen=True)
class RunState:
    """What a resumed run takes back besides the tensors: where it was and when it began."""

    step: int
    started_at: str | None


def _tuple_state(state: Any) -> Any:
    """random.getstate() comes back from JSON with lists where tuples were."""
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state


def save_training_run(folder: Path, config: StackGANConfig, step: int, started_at: str,
                      modules: dict[str, nn.Module], opt_g: torch.optim.Optimizer,
                      opt_d: list[torch.optim.Optimizer], options: dict[str, str]) -> None:
    """Networks (by prefix), optimisers, step and random states: everything to continue bit-for-bit."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    for prefix, module in modules.items():
        tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    opt_g_tensors, opt_g_plain = flatten_optimizer(opt_g, "opt_g")
    tensors.update(opt_g_tensors)
    opt_d_plain = []
    for i, opt in enumerate(opt_d):
        t, plain = flatten_optimizer(opt, f"opt_d{i}")
        tensors.update(t)
        opt_d_plain.append(plain)
    save_training_state(folder, tensors, {
        "step": step, "config": config.to_dict(), "started_at": started_at, "opt_g": opt_g_plain,
        "opt_d": opt_d_plain, "python_rng": random.getstate(), "options": options,
    })


def restore_training_run(folder: Path, config: StackGANConfig, modules: dict[str, nn.Module],
                         opt_g: torch.optim.Optimizer, opt_d: list[torch.optim.Optimizer]) -> RunState | None:
    """Load the state ``save_training_run`` wrote into the given networks and optimisers; None if the
    folder holds no state. A state of another architecture is refused rather than half-loaded."""
    state = load_training_state(folder)
    if state is None:
        return None
    tensors, plain = state
    saved_config = StackGANConfig.from_dict(plain["config"])
    if saved_config != config:
        raise CheckpointError(
            f"{folder} holds a run with a different architecture ({saved_config}); use another --output or --no-resume"
        )
    for prefix, module in modules.items():
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    restore_optimizer(opt_g, "opt_g", tensors, plain["opt_g"])
    if len(plain["opt_d"]) != len(opt_d):
        raise CheckpointError(f"{folder} was trained with {len(plain['opt_d'])} discriminators, this run trains {len(opt_d)}")
    for i, opt in enumerate(opt_d):
        restore_optimizer(opt, f"opt_d{i}", tensors, plain["opt_d"][i])
    random.setstate(_tuple_state(plain["python_rng"]))
    torch.set_rng_state(tensors["rng.torch"])
    return RunState(int(plain["step"]), plain.get("started_at"))


def discriminator_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The discriminators of a checkpoint's training state (empty when it kept none), for fine-tuning."""
    state = load_training_state(folder)
    if state is None:
        return {}
    return {k.removeprefix("discriminators."): v for k, v in state[0].items() if k.startswith("discriminators.")}
