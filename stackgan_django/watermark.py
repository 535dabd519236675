"""An invisible, keyed watermark that carries a 32-bit mark id, so that a copy whose C2PA
manifest was stripped by re-encoding or resizing can still be traced to its asset.

Scheme: the luminance is divided into a 64x64 grid of cells (relative to the image size, so a
resized copy keeps the grid). A key-seeded permutation gives each of the 40 payload bits (32-bit
id + CRC-8) the same number of cells; each cell adds +-strength times a keyed pseudo-random sign,
the sign flipped by the bit. Detection resizes to the grid, removes image content with a local
mean (the mark is noise-like, content is smooth), and correlates each bit's cells with its signs.
No Django here: numpy and Pillow only.

Speed (a worker marks every image): the layout is computed once per key, and the luminance change is
applied to R, G and B directly (adding d to all three adds exactly d to Y and leaves Cb and Cr as
they are), in float32, instead of a round trip through Pillow's YCbCr conversion.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

import numpy as np
from PIL import Image

GRID = 64
ID_BITS = 32
CRC_BITS = 8
PAYLOAD_BITS = ID_BITS + CRC_BITS
SOFT_FLIP_BITS = 3


def crc8(value: int) -> int:
    crc = 0
    for byte in value.to_bytes(4, "big"):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _bits(mark_id: int) -> np.ndarray:
    payload = (mark_id << CRC_BITS) | crc8(mark_id)
    return np.array([(payload >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], dtype=np.int8)


@dataclass(frozen=True)
class Layout:
    bit_of_cell: np.ndarray  # (GRID, GRID) payload bit index of each cell
    sign_of_cell: np.ndarray  # (GRID, GRID) +-1


@functools.lru_cache(maxsize=16)
def layout_for(key: bytes) -> Layout:
    """The cell layout for a key (cached: the arrays are read-only)."""
    seed = int.from_bytes(hmac.new(key, b"stackgan-watermark-layout-v1", hashlib.sha256).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    cells = GRID * GRID
    bit_of_cell = (np.arange(cells) % PAYLOAD_BITS)[rng.permutation(cells)].reshape(GRID, GRID)
    sign_of_cell = rng.choice(np.array([-1.0, 1.0]), size=(GRID, GRID))
    bit_of_cell.flags.writeable = False
    sign_of_cell.flags.writeable = False
    return Layout(bit_of_cell, sign_of_cell)


# ITU-R BT.601 luma, the Y of Pillow's YCbCr and "L" modes.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def embed(image: Image.Image, mark_id: int, key: bytes, strength: float = 2.0) -> Image.Image:
    """Return a copy of ``image`` carrying ``mark_id`` (0 <= id < 2**32)."""
    return Image.fromarray(embed_array(np.asarray(image.convert("RGB")), mark_id, key, strength), "RGB")


def embed_array(rgb: np.ndarray, mark_id: int, key: bytes, strength: float = 2.0) -> np.ndarray:
    """``embed`` on an (H, W, 3) uint8 RGB array; returns a new array."""
    if not 0 <= mark_id < 2**ID_BITS:
        raise ValueError("mark id must fit in 32 bits")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    layout = layout_for(key)
    bits = _bits(mark_id)
    cell_values = (layout.sign_of_cell * np.where(bits[layout.bit_of_cell] == 1, 1.0, -1.0) * strength).astype(np.float32)
    height, width = rgb.shape[:2]
    rows = np.arange(height) * GRID // height
    cols = np.arange(width) * GRID // width
    pixels = rgb.astype(np.float32)
    # Written out rather than a matrix-vector product: BLAS would spread three multiply-adds per
    # pixel over threads, and on a busy CPU the threads' barrier costs more than the work.
    luma = pixels[:, :, 0] * LUMA_WEIGHTS[0] + pixels[:, :, 1] * LUMA_WEIGHTS[1] + pixels[:, :, 2] * LUMA_WEIGHTS[2]
    # Squeeze luminance into [strength, 255 - strength] first: on white or black backgrounds a
    # clipped mark would carry only half its cells.
    target = luma * np.float32((255 - 2 * strength) / 255) + np.float32(strength) + cell_values[rows[:, None], cols[None, :]]
    pixels += (target - luma)[:, :, None]
    np.rint(pixels, out=pixels)
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)


@dataclass(frozen=True)
class Detection:
    found: bool
    mark_id: int | None
    confidence: float  # mean |z| of the bit correlations; unmarked images stay near 0.8-1.0


def _cell_means(image: Image.Image) -> np.ndarray:
    luma = image.convert("L") if image.mode != "L" else image
    if luma.size != (GRID * 4, GRID * 4):  # a generated 256 px image is already on the grid
        luma = luma.resize((GRID * 4, GRID * 4), Image.Resampling.BILINEAR)
    return np.asarray(luma, dtype=np.float32).reshape(GRID, 4, GRID, 4).mean(axis=(1, 3), dtype=np.float64)


def _local_mean(cells: np.ndarray) -> np.ndarray:
    padded = np.pad(cells, 1, mode="edge")
    total = sum(padded[1 + dy : 1 + dy + GRID, 1 + dx : 1 + dx + GRID] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return (total - cells) / 8


def detect(image: Image.Image, key: bytes, min_confidence: float = 1.6) -> Detection:
    layout = layout_for(key)
    cells = _cell_means(image)
    residual = cells - _local_mean(cells)
    # Edges of the picture leave large residuals that would drown the mark: clip them to a
    # robust scale (median absolute deviation) before correlating.
    scale = 1.4826 * np.median(np.abs(residual)) + 1e-6
    residual = np.clip(residual, -2 * scale, 2 * scale) * layout.sign_of_cell
    scores = np.bincount(layout.bit_of_cell.ravel(), weights=residual.ravel(), minlength=PAYLOAD_BITS)
    spread = residual.std() * np.sqrt(GRID * GRID / PAYLOAD_BITS) + 1e-9
    z = scores / spread
    confidence = float(np.abs(z).mean())
    if confidence < min_confidence:
        return Detection(False, None, confidence)
    bits = (z > 0).astype(int)
    # Soft decoding: the CRC picks the right word among flips of the least certain bits.
    weakest = np.argsort(np.abs(z))[:SOFT_FLIP_BITS]
    for flips in range(2**SOFT_FLIP_BITS):
        candidate = bits.copy()
        for j, position in enumerate(weakest):
            if flips >> j & 1:
                candidate[position] ^= 1
        payload = int("".join(map(str, candidate)), 2)
        mark_id, crc = payload >> CRC_BITS, payload & 0xFF
        if crc == crc8(mark_id):
            return Detection(True, mark_id, confidence)
    return Detection(False, None, confidence)


def psnr(original: Image.Image, marked: Image.Image) -> float:
    a = np.asarray(original.convert("RGB"), dtype=np.float64)
    b = np.asarray(marked.convert("RGB"), dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))
