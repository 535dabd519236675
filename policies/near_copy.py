"""Near-copies of training images that survive small edits: crops (up to about 10%), shifts, mirror
images, colour and brightness changes, re-encodes and resizes.

The index keeps a 32x32 colour thumbnail of every training image (area-averaged, so re-encoding and
resizing barely move it). A generated image is compared with each thumbnail by normalised
correlation, per colour channel (so brightness, contrast and tint changes cancel out), after the
geometric edits are undone by search: the image and its mirror, shrunk by 0-12% (a crop enlarges
what remains), at every offset within a few cells (shifts, and which side the crop took). A cheap
8x8 comparison picks the candidates first, so the cost stays flat as the index grows.

Colour changes that mix the channels (a greyscale copy, a sepia or a hue-turned one) are what the
per-channel correlation cannot cancel; a second search compares **luminance** alone, the query's
grey against the training images' grey (made from the same thumbnails, so the index file is
unchanged), with stricter thresholds: colour keeps apart drawings that differ by colour alone
(flags), which luminance partly cannot.

A copy turned a few degrees, turned upside down or on its side, or zoomed out onto a margin is
neither: a third search turns the query back or crops the margin off (``nearest_reframed_many``),
for the few images whose 8x8 layout, so undone, already agrees closely with a training image. A
copy whose colours were turned (hues turned round the colour wheel, colours inverted) keeps its
drawing but not its colours: a fourth search turns the query's colours back
(``nearest_recoloured_many``), gated the same way, under the stricter thresholds of the grey search.
A copy repainted (its white background filled with a colour, tinted: sepia, a duotone, or
darkened towards the corners: a vignette) is undone by a fifth (``nearest_repainted_many``): the
background turned back to white, the tint taken away or the vignette lifted, for the few images
with a coloured border, a single muted hue or corners that darken as a vignette does; the same
stage compares a copy brightened until its light tones clipped with the training images brightened
alike.

The index is built at training time (``python -m policies build-near-copy-index DATA --out FILE``),
shipped beside the checkpoint as ``near_copies.json`` and read with ``NearCopyIndex.load(folder)``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from policies.local_features import LocalFeatureIndex, LocalMatch

FORMAT = "thumbnail-correlation-v1"
LEGACY_FORMAT = "phash-dct-64"
INDEX_FILE = "near_copies.json"
GRID = 32
COARSE = 8
# Query sizes on the 32-cell grid: 32/size is the enlargement a crop of up to ~12% causes; steps of
# two cells leave at most 3% of scale unmatched, which costs little correlation.
SIZES = (32, 30, 28)
# How far (cells of 8 px on a 256 px image) a shifted image may sit from its original; 32 + 2 * 4 =
# 40 cells makes FFT-friendly canvases.
MAX_OFFSET = 4
CANDIDATES = 24
# The best few alignments are verified on a finer grey thumbnail, where two similar emoji faces
# differ (their eyes and mouths are a few cells of 32, a dozen of 64).
DETAIL = 64
VERIFIED = 2
REFINE = 2  # cells of 64 searched around the coarse alignment, in position and in size
# The query is also resampled half a cell of 64 off, across and down, so an edit that moved the image
# by a fraction of a cell still lines up.
PHASES = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))
# Edits the search does not undo by itself, undone on the query (``nearest_reframed_many``): turns
# of the query in steps of 1.5 degrees (a copy turned up to about 10 degrees either way lies within
# 0.75 of one: the colour layout keeps a copy's 0.95 to about a degree), and margins cropped off (a
# copy zoomed out onto white; with the search's own sizes the three cover images shrunk to 70-97%).
REFRAME_ANGLES = (-9.0, -7.5, -6.0, -4.5, -3.0, -1.5, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0)
# Exact quarter turns (with the search's own mirror image, every way of laying a square drawing down:
# upside down, on either side, flipped top to bottom), searched over the search's sizes and offsets.
REFRAME_QUARTER_TURNS = (90, 180, 270)
REFRAME_MARGINS = (0.08, 0.16, 0.24)
# A copy cropped on one side and stretched back to a square (10% off the right, then resized: 11%
# wider than its original): squeezed back across or down by each of these, which leaves a crop the
# search undoes. Together with the search's own sizes they cover stretches of about 2-14% either way.
REFRAME_SQUEEZES = (0.95, 0.9)
# What fills the strip the crop took: white (a drawing clear of that side), and the squeezed image's
# own edge carried across it (a drawing that fills the frame, a sign or a flag: white there cost the
# layout its agreement, 0.55-0.93 for copies the edge fill brings to 0.97-1.0).
REFRAME_SQUEEZE_FILLS = ("white", "edge")
# A vignette (``nearest_repainted_many``): the light background darkened towards the corners by
# k r^2 (r from the centre, 1 at the middle of an edge), k at least VIGNETTE_MIN_STRENGTH, the rings
# between these squared radii agreeing with that within VIGNETTE_MISFIT (0-1 of white).
VIGNETTE_RINGS = (0.8, 1.1, 1.4, 1.7, 2.0)
VIGNETTE_MIN_STRENGTH = 0.08
VIGNETTE_MISFIT = 0.04
# A brightened copy (``nearest_repainted_many``) is compared with the training images brightened
# by these gains, light tones clipped to white.
BRIGHTENED_GAINS = (1.25, 1.5)
# ... in grey for a query at most this colourful (0-255): a greyscale copy is 0.
BRIGHTENED_GREY_COLOURFULNESS = 16.0
# Undone queries verified per search (the best by the unverified score first).
UNDONE_VERIFIED = 2
REFRAME_CANDIDATES = 8
REFRAME_SIDE = 128  # pixels: twice the finest grid the search compares
# Colour turns undone on the query (``nearest_recoloured_many``): the colours inverted, and the hue
# turned by each multiple of 30 degrees (HSV, as image editors turn hues). The gate compares each
# with the index as a turn of the 8x8 layout's colours about the grey axis, a linear stand-in for
# the hue turn (hue-turned copies of twemoji agree 0.93 or more at the 5th percentile, the shipped
# model's images 0.87 at most); the few turns that pass it are searched with the real HSV turn.
RECOLOUR_HUE_TURNS = tuple(range(30, 360, 30))
# Two colour channels swapped (red and blue, ...): a reflection of the colours across a plane through
# the grey axis, which no hue turn undoes (a cycle of all three is a turn by 120 degrees). Undone by
# swapping them back, gated the same way.
RECOLOUR_SWAPS = ((2, 1, 0), (1, 0, 2), (0, 2, 1))
RECOLOUR_TRIED = 3
# Copies repainted rather than recoloured (``nearest_repainted_many``). A new background: the white
# behind the drawing filled with one colour. Its colour is the thumbnail's border, when more than
# BACKGROUND_BORDER_SHARE of the border's cells (a flag or a wide drawing touches the sides) lie
# within BACKGROUND_TOLERANCE (largest channel difference, 0-255) of their median and that median is
# at least BACKGROUND_NOT_WHITE from white; every pixel within BACKGROUND_FILL_TOLERANCE of it is
# turned back to white (a re-encode blurs it).
BACKGROUND_BORDER_SHARE = 0.55
BACKGROUND_TOLERANCE = 24.0
BACKGROUND_NOT_WHITE = 40.0
BACKGROUND_FILL_TOLERANCE = 48.0
# A tint (sepia, a duotone, a photo filter): every coloured cell of the thumbnail (at least
# TINT_CHROMA from grey, at least TINT_COLOURED_SHARE of them) of nearly one hue, the mean of their
# hue directions at least TINT_HUE_AGREEMENT long (1: one hue; sepia's clipped light tones drift
# from orange towards yellow).
TINT_CHROMA = 12.0
TINT_COLOURED_SHARE = 0.05
TINT_HUE_AGREEMENT = 0.95
# ... and muted: the 90th percentile of the coloured cells' saturation (HSV, 0-1) at most this. A
# sepia copy is 0.21-0.33, a duotone 0.58 at the 90th percentile of 60 random ones; a drawing of one
# bold hue (a red flag, a basketball: 0.86-0.95) is not a tint of anything, and in grey many
# such drawings look alike (flags with a field and an emblem).
TINT_MAX_SATURATION = 0.5
QUARTER_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class NearCopyIndexError(ValueError):
    """The index file is missing, malformed, or of an unknown format."""


def as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """RGB; transparency is laid on white, as training images are drawn on white."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = np.clip(array * (255 if array.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        image = Image.fromarray(array)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def query_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """An image to search for, in RGB on a square: one that is not square is laid in the middle of
    a white square. A crop of one side (10% off the right) changes the aspect, and squeezing the
    rest back into a square would stretch the drawing by 11% one way, which no search undoes (3 of
    30 such crops were caught); laid on a square, it is a crop the search undoes, a margin and a
    shift. Training images are squeezed, not laid on a square, when the index is built: the model
    trains on them squeezed to a square, so that is how a memorised one comes out. Generated images
    are square and pass unchanged."""
    return _on_square(as_rgb(image))


def _on_square(rgb: Image.Image) -> Image.Image:
    """An RGB image laid in the middle of a white square; a square one as it is."""
    width, height = rgb.size
    if width == height:
        return rgb
    side = max(width, height)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - width) // 2, (side - height) // 2))
    return square


def thumbnail(image: Image.Image | np.ndarray, size: int = GRID) -> np.ndarray:
    """(size, size, 3) float32, area-averaged."""
    return np.asarray(as_rgb(image).resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def grey_thumbnail(image: Image.Image | np.ndarray, size: int = DETAIL) -> np.ndarray:
    """(size, size) float32 luma, area-averaged."""
    return np.asarray(as_rgb(image).convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.float32)


def _box3(grey: np.ndarray) -> np.ndarray:
    """3x3 mean with edge padding over the last two axes (any leading axes are a batch); separable,
    so six slices instead of nine."""
    padded = np.pad(grey, [(0, 0)] * (grey.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    h, w = grey.shape[-2:]
    rows = padded[..., :, 0:w] + padded[..., :, 1 : w + 1] + padded[..., :, 2 : w + 2]
    return (rows[..., 0:h, :] + rows[..., 1 : h + 1, :] + rows[..., 2 : h + 2, :]) / 9.0


def _high_pass(grey: np.ndarray) -> np.ndarray:
    """A band of fine features (a difference of blurs): eyes, mouths, emblems, without the large
    flat shapes (a disc, a background) that every emoji face shares, and without the finest,
    one-cell detail that resampling and a sub-cell shift change."""
    fine = _box3(grey)
    return fine - _box3(_box3(fine))


# The search in grey keeps a match only when the image has at most this share of its training
# image's colourfulness: a greyscale copy has none, a sepia one about a quarter to a third.
LUMINANCE_COLOUR_SHARE = 0.5
# ... and at most this colourful (0-255) at all: a greyscale copy is 0, a sepia copy of a twemoji
# 36 at the median and 74 at most (200 measured), the shipped model's images 93 at the median and
# 54 at the 10th percentile, so the search in grey runs for the few images that could be drained.
LUMINANCE_MAX_COLOURFULNESS = 64.0


def colourfulness(thumbnails: np.ndarray) -> np.ndarray | float:
    """How colourful, 0-255: the mean over pixels of the spread between the largest and smallest
    channel (0 for any grey). ``(..., h, w, 3)`` in, one value per leading index out."""
    spread = thumbnails.max(axis=-1) - thumbnails.min(axis=-1)
    means = spread.mean(axis=(-2, -1))
    return float(means) if np.ndim(means) == 0 else means


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 1e-6 else 0.0


def _centre(images: np.ndarray) -> np.ndarray:
    """Per image: each channel's mean removed, then one norm over all channels (flat images -> 0).

    Removing the channel means cancels brightness and tint shifts; one shared scale keeps some of
    the colours apart (a blue stripe is not a green one, and many flags differ by colour alone)."""
    centred = images - images.mean(axis=(-3, -2), keepdims=True)
    norm = np.sqrt((centred * centred).sum(axis=(-3, -2, -1), keepdims=True))
    return np.where(norm > 1e-3, centred / np.maximum(norm, 1e-3), 0.0).astype(np.float32)


@dataclass(frozen=True)
class NearCopyMatch:
    name: str
    similarity: float  # colour correlation of the 32x32 thumbnails at the best alignment
    detail: float  # correlation of the fine features (64x64 grey, high-pass) at that alignment
    mirrored: bool
    scale: float
    offset: tuple[int, int]
    # The colour correlation at the 32-cell alignment, before the finer one raised it (if it did).
    coarse: float = 0.0
    # False when the search stopped before verifying (``nearest(..., verify_from=...)``): the
    # colour layout was already too far from every training image; ``detail`` is then 0.
    verified: bool = True
    # "colour": the images were compared in colour; "luminance": in grey (``nearest_luminance_many``);
    # "recoloured": in colour, after the query's colours were turned back (``nearest_recoloured_many``).
    compared: str = "colour"
    # What was undone on the query before it matched (``nearest_reframed_many``): "" for nothing.
    reframed: str = ""


class NearCopyIndex:
    """Thumbnails of a model's training images and the search that finds edited copies of them."""

    def __init__(self, names: list[str], thumbnails: np.ndarray, details: np.ndarray,
                 local: LocalFeatureIndex | None = None):
        if not len(names) == len(thumbnails) == len(details):
            raise NearCopyIndexError("the index has different numbers of names and thumbnails")
        self.names = list(names)
        self.thumbnails = np.asarray(thumbnails, dtype=np.uint8).reshape(len(names), GRID, GRID, 3)
        self.details = np.asarray(details, dtype=np.uint8).reshape(len(names), DETAIL, DETAIL)
        floats = self.thumbnails.astype(np.float32)
        coarse = _coarse_layout(floats)
        self._coarse = _centre(coarse).reshape(len(names), COARSE * COARSE * 3)  # explicit: an index may be empty
        self._spreads: dict[int, np.ndarray] = {}  # by query size, filled by _window_spreads
        self._luminance: NearCopyIndex | None = None  # made on the first luminance search
        self._brightened: dict[float, NearCopyIndex] = {}  # by gain, made on first use
        self._chroma: np.ndarray | None = None  # each thumbnail's colourfulness, on first use
        self._rows: dict[str, int] = {}
        # The training images' local features (policies.local_features): copies used as part of a
        # larger picture. None for an index written before them (rebuild it to get that search).
        self.local = local

    def __len__(self) -> int:
        return len(self.names)

    # -- building and files ----------------------------------------------------------------------

    @classmethod
    def build(cls, images: Iterable[tuple[str, Image.Image]], local_features: bool = True) -> NearCopyIndex:
        names, thumbs, details, rgbs = [], [], [], []
        for name, image in images:
            names.append(name)
            thumbs.append(np.clip(np.rint(thumbnail(image)), 0, 255).astype(np.uint8))
            details.append(np.clip(np.rint(grey_thumbnail(image)), 0, 255).astype(np.uint8))
            if local_features:
                rgbs.append(as_rgb(image))
        detail_array = np.array(details, dtype=np.uint8).reshape(len(names), DETAIL, DETAIL)
        local = LocalFeatureIndex.build(zip(names, rgbs), detail_array) if local_features else None
        return cls(names, np.array(thumbs, dtype=np.uint8).reshape(len(names), GRID, GRID, 3), detail_array, local)

    def to_json(self) -> dict[str, Any]:
        def pack(array: np.ndarray) -> str:
            return base64.b64encode(zlib.compress(array.tobytes(), 9)).decode("ascii")

        data = {"format": FORMAT, "grid": GRID, "detail": DETAIL, "count": len(self.names), "names": self.names,
                "thumbnails": pack(self.thumbnails), "details": pack(self.details)}
        if self.local is not None:
            data["local"] = self.local.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any) -> NearCopyIndex | LegacyHashIndex:
        if not isinstance(data, dict):
            raise NearCopyIndexError("a near-copy index must be a JSON object")
        if data.get("algorithm") == LEGACY_FORMAT:
            return LegacyHashIndex.from_json(data)
        if data.get("format") != FORMAT:
            raise NearCopyIndexError(f"unknown near-copy index format {data.get('format')!r}; rebuild it with "
                                     "python -m policies build-near-copy-index DATA --out FILE")
        try:
            names = data["names"]
            raw = zlib.decompress(base64.b64decode(data["thumbnails"], validate=True))
            raw_details = zlib.decompress(base64.b64decode(data["details"], validate=True))
            count = int(data["count"])
            if (data.get("grid") != GRID or data.get("detail") != DETAIL or len(names) != count
                    or len(raw) != count * GRID * GRID * 3 or len(raw_details) != count * DETAIL * DETAIL):
                raise ValueError("sizes do not agree")
            detail_array = np.frombuffer(raw_details, dtype=np.uint8).reshape(count, DETAIL, DETAIL)
            local = (LocalFeatureIndex.from_json(data["local"], list(map(str, names)), detail_array)
                     if "local" in data else None)
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise NearCopyIndexError(f"the near-copy index is damaged: {exc}") from exc
        return cls(list(map(str, names)), np.frombuffer(raw, dtype=np.uint8).reshape(count, GRID, GRID, 3),
                   detail_array, local)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, folder_or_file: str | Path) -> NearCopyIndex | LegacyHashIndex | None:
        """The index of a checkpoint folder (its near_copies.json) or a file; None if there is none.

        A file that exists but cannot be read raises NearCopyIndexError: the caller fails closed."""
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / INDEX_FILE
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NearCopyIndexError(f"{path} cannot be read: {exc}") from exc
        return cls.loads(data, str(path))

    @classmethod
    def loads(cls, data: bytes, source: str = "the near-copy index") -> NearCopyIndex | LegacyHashIndex:
        """An index from the bytes of its file (a caller that checked those bytes' hash parses
        exactly what it checked)."""
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NearCopyIndexError(f"{source} cannot be read: {exc}") from exc
        return cls.from_json(parsed)

    # -- search ------------------------------------------------------------------------------------

    def nearest(self, image: Image.Image | np.ndarray, verify_from: float | None = None) -> NearCopyMatch | None:
        """The training image this one is most like, over mirror, scale and offset; None if empty.

        With ``verify_from``, a search whose best colour correlation at the 32-cell alignment is
        below it stops there, unverified: the output policy passes its threshold less a margin
        measured on the calibration half of ``benchmarks/near_copy_robustness.py`` (the finer
        alignment never raised a correlation by as much), so a generated image that resembles no
        training image, the usual case, costs about half as much.

        One image is a batch of one: the search is ``nearest_many``'s, so a worker's batch and a
        single check can never disagree."""
        return self.nearest_many([image], verify_from)[0]

    def nearest_many(self, images: Sequence[Image.Image | np.ndarray], verify_from: float | None = None,
                     sizes: Sequence[int] = SIZES) -> list[NearCopyMatch | None]:
        """``nearest`` for each of several images (a worker's batch), in one pass: the coarse
        comparison of every image (and its mirror) with every training image is one matrix product,
        the candidates that several images share are transformed once, and every image's
        correlations are one inverse FFT. Each image's result depends on that image alone.
        ``sizes``: the query sizes on the 32-cell grid searched (GRID among them).

        An image that is not square is searched twice, laid on a white square (``query_rgb``) and
        cut to the square in its middle (a crop of one side that took part of the drawing leaves
        nothing white to explain away), and the better answer kept."""
        if not self.names:
            return [None] * len(images)
        if not images:
            return []
        rgbs = [as_rgb(image) for image in images]
        found = self._nearest_squares([_on_square(rgb) for rgb in rgbs], verify_from, sizes)
        oblong = [number for number, rgb in enumerate(rgbs) if rgb.width != rgb.height]
        if oblong:
            again = self._nearest_squares([_middle_square(rgbs[number]) for number in oblong], verify_from, sizes)
            for number, match in zip(oblong, again, strict=True):
                current = found[number]
                if match is not None and (current is None or match.similarity + match.detail > current.similarity + current.detail):
                    found[number] = match
        return found

    def _nearest_squares(self, rgbs: list[Image.Image], verify_from: float | None,
                         sizes: Sequence[int]) -> list[NearCopyMatch | None]:
        """``nearest_many`` for square RGB images."""
        count = len(rgbs)
        # The queries' thumbnails are made once; a mirror image's are the mirrored arrays (an area
        # average is symmetric), and the coarse grid is the 32-cell one averaged 4 x 4, as the
        # index's own coarse grid is.
        thumbs = {size: np.stack([thumbnail(rgb, size) for rgb in rgbs]) for size in sizes}  # (N, size, size, 3)
        coarse = _coarse_layout(thumbs[GRID])
        # Candidates: the best coarse correlation over both orientations; every image and mirror
        # against the whole index in one product, (M, 192) @ (192, 2N).
        orientations = _centre(np.concatenate([coarse, coarse[:, :, ::-1]])).reshape(2 * count, -1)
        both = self._coarse @ orientations.T
        coarse_scores = np.maximum(np.maximum(both[:, :count], both[:, count:]), np.float32(-1.0)).T  # (N, M)
        candidates = min(CANDIDATES, len(self.names))
        top = np.sort(np.argsort(-coarse_scores, axis=1)[:, :candidates], axis=1)  # (N, K)
        # The candidates on a canvas MAX_OFFSET cells wider on every side, white as the fill of a
        # shifted image; every placement of the query on it is one offset of the search. Only the
        # candidates of this batch are transformed (each once, however many images share it), so a
        # worker holds just the thumbnails and their window spreads in memory.
        pad = MAX_OFFSET
        shared, place = np.unique(top, return_inverse=True)
        place = place.reshape(top.shape)
        pixels = np.pad(self.thumbnails[shared], ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                        constant_values=255).transpose(0, 3, 1, 2)  # (U, 3, S, S) uint8
        side = pixels.shape[-1]
        # Every query (orientation x size) of every image at once: one forward FFT of the
        # candidates, one of the queries, the channels summed in the frequency domain (the
        # transform is linear), and one inverse FFT of (image, query, candidate) planes.
        queries = [(mirrored, size) for mirrored in (False, True) for size in sizes]
        kernels = np.zeros((count, len(queries), 3, side, side), dtype=np.float32)
        usable = np.zeros((count, len(queries)), dtype=bool)
        for number, (mirrored, size) in enumerate(queries):
            grid = thumbs[size][:, :, ::-1] if mirrored else thumbs[size]
            centred = _centre(grid)  # (N, n, n, 3), as the candidates' windows
            # A flat image has no shape to match (the degenerate check refuses it).
            usable[:, number] = centred.reshape(count, -1).any(axis=1)
            kernels[:, number, :, :size, :size] = centred.transpose(0, 3, 1, 2)
        # In single precision (numpy computes float32 transforms natively, twice as fast here): the
        # scores only need to be right to well below the thresholds' 0.005 steps.
        spectrum = np.fft.rfft2(pixels.astype(np.float32))[place]  # (N, K, 3, S, S/2+1)
        kernel_spectrum = np.conj(np.fft.rfft2(kernels))  # (N, Q, 3, S, S/2+1)
        # Cross-correlation by FFT; offsets 0..side-size never wrap around. The channels are summed
        # element by element, so an image's planes do not depend on what else is in the batch.
        product = spectrum[:, None, :, 0] * kernel_spectrum[:, :, None, 0]
        for channel in (1, 2):
            product += spectrum[:, None, :, channel] * kernel_spectrum[:, :, None, channel]
        # The inverse transform, but only for the rows a search reads (offsets 0..side-size, at most
        # 13 of 40): those rows of the inverse along the columns are one matrix product with the
        # inverse DFT's rows (the transposes make it one large product rather than thousands of
        # small transforms); the inverse along the rows stays an FFT. Same sums as irfft2, a third
        # of the work.
        rows = side - min(sizes) + 1
        inverse_rows = (np.exp(2j * np.pi * np.outer(np.arange(rows), np.arange(side)) / side) / side).astype(np.complex64)
        partial = np.tensordot(inverse_rows, product, axes=([1], [3]))  # (rows, N, Q, K, S/2+1)
        all_dots = np.fft.irfft(partial, n=side, axis=-1)  # (rows, N, Q, K, S): y first
        # Per image and candidate, its best alignment: score, and which query and offset gave it.
        best_score = np.full(top.shape, -np.inf)
        best_query = np.zeros(top.shape, dtype=np.int64)
        best_where = np.zeros(top.shape, dtype=np.int64)
        for number, (_, size) in enumerate(queries):
            span = side - size + 1
            spread = self._window_spreads(size)[top]  # (N, K, span, span)
            dots = all_dots[:span, :, number, :, :span].transpose(1, 2, 0, 3).astype(np.float64)  # (N, K, y, x)
            # A flat window (all white) has no shape to agree with: it scores 0.
            flat = np.where(spread > 1.0, dots / spread, 0.0).reshape(count, candidates, -1)
            where = flat.argmax(axis=2)
            score = np.take_along_axis(flat, where[:, :, None], axis=2)[:, :, 0]
            score = np.where(usable[:, number, None], score, -np.inf)
            better = score > best_score  # strictly: the first query to reach a score keeps it
            best_score = np.where(better, score, best_score)
            best_query = np.where(better, number, best_query)
            best_where = np.where(better, where, best_where)
        return [self._best_match(rgb, top[i], best_score[i], best_query[i], best_where[i], queries, side, verify_from)
                if usable[i].any() else None for i, rgb in enumerate(rgbs)]

    def nearest_local_many(self, images: Sequence[Image.Image | np.ndarray]) -> list[LocalMatch | None]:
        """The local-feature search (``policies.local_features``) for each image: the training
        image it shows part of, under any position, scale, turn or stretch; None for every image
        when the index has no local features."""
        if self.local is None:
            return [None] * len(images)
        return self.local.nearest_many(images)

    def luminance_index(self) -> NearCopyIndex:
        """The same training images in grey: each thumbnail's luma (ITU-R 601, as Pillow's "L"; an
        area average of luma is the luma of the area average), in all three channels, and the same
        grey detail thumbnails. Made once, from what the index file already holds."""
        if self._luminance is None:
            luma = self.thumbnails.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            grey = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
            self._luminance = type(self)(self.names, np.repeat(grey[..., None], 3, axis=-1), self.details)
        return self._luminance

    def nearest_luminance_many(self, images: Sequence[Image.Image | np.ndarray],
                               verify_from: float | None = None) -> list[NearCopyMatch | None]:
        """``nearest_many`` in grey, for the images whose colour was taken away (greyscale, sepia, a
        faded print): each one's luminance against the training images'. A match is kept only
        when the image is at most LUMINANCE_COLOUR_SHARE as colourful as the training image it
        matches: in grey, drawings that differ by colour alone (flags, the same figure with other
        hair) look alike, and an image as colourful as its match was not drained of colour, so
        the colour search has already judged it. None where nothing qualifies."""
        rgbs = [query_rgb(image) for image in images]
        chroma = [colourfulness(thumbnail(rgb)) for rgb in rgbs]
        if not self.names:
            return [None] * len(rgbs)
        # An image more colourful than that share of the most colourful training image can match
        # none of them, and one above LUMINANCE_MAX_COLOURFULNESS was not drained of colour: not
        # searched (most generated images are more colourful, so this is the usual case).
        ceiling = min(LUMINANCE_COLOUR_SHARE * float(self._colourfulness().max()), LUMINANCE_MAX_COLOURFULNESS)
        wanted = [number for number, value in enumerate(chroma) if value <= ceiling]
        found: list[NearCopyMatch | None] = [None] * len(rgbs)
        greys = [rgbs[number].convert("L").convert("RGB") for number in wanted]
        for number, match in zip(wanted, self.luminance_index().nearest_many(greys, verify_from), strict=True):
            if match is not None and chroma[number] <= LUMINANCE_COLOUR_SHARE * self.colourfulness_of(match.name):
                found[number] = dataclasses.replace(match, compared="luminance")
        return found

    def nearest_reframed_many(self, images: Sequence[Image.Image | np.ndarray], verify_from: float | None = None,
                              search_from: float = -1.0, thumbnails: np.ndarray | None = None) -> list[NearCopyMatch | None]:
        """``nearest`` for copies the search does not undo by itself, undone on the query instead: a
        rotation by a few degrees either way (REFRAME_ANGLES), a quarter or half turn
        (REFRAME_QUARTER_TURNS: upside down, on its side) and a margin, the image zoomed out
        onto white (REFRAME_MARGINS cropped off again). The match says what was undone
        (``reframed``).

        First, cheaply, every reframing's 8x8 layout against the whole index (two matrix products
        for the batch): an image whose best agreement there is below ``search_from`` is not
        searched (None). Turned or framed copies reach about 0.98 or more once undone (5th
        percentile), the shipped model's images 0.92 at most, so the search proper (a dozen searches on a few candidates, about the cost of
        ``nearest`` itself) runs for almost no generated image. Each image searched is compared
        with its REFRAME_CANDIDATES nearest training images by that layout: all its reframings
        scored unverified in one pass, then the best one verified as ``nearest_many`` verifies.
        ``thumbnails``: the images' 32x32 thumbnails, when the caller has them already."""
        rgbs = [query_rgb(image) for image in images]
        if not self.names or not rgbs or search_from > 1.0:
            return [None] * len(rgbs)
        rows, best = self._reframed_candidates(_thumbnails(rgbs, thumbnails))
        return [self._nearest_reframed(rgb, image_rows, verify_from) if image_best >= search_from else None
                for rgb, image_rows, image_best in zip(rgbs, rows, best, strict=True)]

    def _reframed_candidates(self, thumbnails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (N, 32, 32, 3) query thumbnails: (N, REFRAME_CANDIDATES) rows of the index nearest any
        reframing of each image by the 8x8 layout (either orientation), and (N,) the best agreement.
        Every reframing's 8x8 layout is a fixed linear map of the 32x32 thumbnail (``_reframing_maps``),
        so this is two matrix products for the whole batch, no image turned."""
        weights, white = _reframing_maps()
        count = len(thumbnails)
        # One product: (R * 64, 1024) @ (1024, N * 3), then (N, R, 64, 3).
        pixels = thumbnails.reshape(count, GRID * GRID, 3).astype(np.float32).transpose(1, 0, 2).reshape(GRID * GRID, -1)
        coarse = (weights.reshape(-1, GRID * GRID) @ pixels).reshape(len(weights), COARSE * COARSE, count, 3)
        coarse = coarse.transpose(2, 0, 1, 3) + 255.0 * white[None, :, :, None]
        coarse = coarse.reshape(count * len(weights), COARSE, COARSE, 3)
        orientations = _centre(np.concatenate([coarse, coarse[:, :, ::-1]])).reshape(2, count, len(weights), -1)
        # (M, 2 * N * R): each training image against every orientation and reframing of each image.
        agreement = self._coarse @ orientations.reshape(-1, COARSE * COARSE * 3).T
        scores = agreement.reshape(len(self.names), 2, count, len(weights)).max(axis=(1, 3)).T  # (N, M)
        keep = min(REFRAME_CANDIDATES, len(self.names))
        rows = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        return rows, np.take_along_axis(scores, rows, axis=1).max(axis=1)

    def _nearest_reframed(self, rgb: Image.Image, rows: np.ndarray, verify_from: float | None) -> NearCopyMatch | None:
        rgb = _reframing_size(rgb)
        width, height = rgb.size
        # (what was undone, the query, the sizes searched): a turn is searched at full size only.
        tried: list[tuple[str, Image.Image, tuple[int, ...]]] = [
            # A copy turned by -angle is turned back by +angle (PIL turns anticlockwise).
            (f"turned {-angle:+g} degrees", rgb.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor="white"),
             (GRID,)) for angle in REFRAME_ANGLES]
        # A quarter turn is exact (no corner filled), so the crops and shifts the search undoes are
        # searched on top of it.
        tried += [(f"turned {-angle:+g} degrees", rgb.transpose(QUARTER_TURNS[angle]), SIZES) for angle in REFRAME_QUARTER_TURNS]
        for margin in REFRAME_MARGINS:
            dx, dy = round(width * margin / 2), round(height * margin / 2)
            tried.append((f"framed by a {margin:.0%} margin", rgb.crop((dx, dy, width - dx, height - dy)), SIZES))
        for squeeze in REFRAME_SQUEEZES:
            for across in (True, False):
                stretch = f"stretched {1 / squeeze - 1:.0%} {'across' if across else 'down'}"
                for anchor in (0.0, 1.0):
                    for fill in REFRAME_SQUEEZE_FILLS:
                        tried.append((stretch, _squeezed(rgb, squeeze, across, anchor, fill), SIZES))
        return self._best_undone(rows, tried, verify_from)

    def _best_undone(self, rows: np.ndarray, tried: list[tuple[str, Image.Image, tuple[int, ...]]],
                     verify_from: float | None) -> NearCopyMatch | None:
        """The search proper on the candidate rows for queries with an edit undone, (what was undone,
        the query, the sizes searched) each: every one scored unverified, the best UNDONE_VERIFIED
        verified (ways of undoing that are near one another, a stretch and a margin, score alike
        unverified), the one that agrees best on both counts kept; its match says what was undone
        (``reframed``)."""
        rows = np.sort(rows)
        # The search proper, whatever subclass holds the index (the speed benchmark times an older one).
        subset = NearCopyIndex([self.names[row] for row in rows], self.thumbnails[rows], self.details[rows])
        scored: list[tuple[float, int]] = []
        for sizes in sorted({entry[2] for entry in tried}):
            positions = [position for position, entry in enumerate(tried) if entry[2] == sizes]
            for position, match in zip(positions, subset.nearest_many([tried[p][1] for p in positions], np.inf, sizes),
                                       strict=True):
                if match is not None:
                    scored.append((match.similarity, position))
        best: NearCopyMatch | None = None
        for _, position in sorted(scored, key=lambda entry: (-entry[0], entry[1]))[:UNDONE_VERIFIED]:
            undone, query, sizes = tried[position]
            match = subset.nearest_many([query], verify_from, sizes)[0]
            if match is not None and (best is None or match.similarity + match.detail > best.similarity + best.detail):
                best = dataclasses.replace(match, reframed=undone)
        return best

    def nearest_recoloured_many(self, images: Sequence[Image.Image | np.ndarray], verify_from: float | None = None,
                                search_from: float = -1.0, thumbnails: np.ndarray | None = None) -> list[NearCopyMatch | None]:
        """``nearest`` for copies whose colours were turned rather than shifted or taken away: the
        colours inverted, every hue turned round the colour wheel (a red flower made blue), or two
        colour channels swapped. The search cancels per-channel shifts and scales, not a change
        that moves colours into other channels, and the grey search does not see them either (they
        stay colourful, and a hue turn changes the lightness too). The query's colours are turned
        back and it is searched again; the match says what was undone (``reframed``) and is
        ``compared`` "recoloured": the output policy holds it to the grey search's stricter
        thresholds, since with colours undone, drawings that differ by colour alone meet.

        Gated as ``nearest_reframed_many`` is: every colour turn of the query's 8x8 layout against
        the whole index (a few small matrix products for the batch); only an image that some turn
        brings to ``search_from`` or above is searched, with the RECOLOUR_TRIED best turns that do,
        against its REFRAME_CANDIDATES nearest training images by that layout. ``thumbnails``: the
        images' 32x32 thumbnails, when the caller has them already."""
        rgbs = [query_rgb(image) for image in images]
        if not self.names or not rgbs or search_from > 1.0:
            return [None] * len(rgbs)
        rows, scores = self._recoloured_candidates(_thumbnails(rgbs, thumbnails))
        found: list[NearCopyMatch | None] = []
        for rgb, image_rows, image_scores in zip(rgbs, rows, scores, strict=True):
            turns = [number for number in np.argsort(-image_scores, kind="stable")[:RECOLOUR_TRIED]
                     if image_scores[number] >= search_from]
            found.append(self._nearest_recoloured(rgb, image_rows, turns, verify_from) if turns else None)
        return found

    def _recoloured_candidates(self, thumbnails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (N, 32, 32, 3) query thumbnails: (N, REFRAME_CANDIDATES) rows of the index nearest any
        colour turn of each image by the 8x8 layout (either orientation), and (N, 1 + hue turns +
        swaps) each turn's best agreement: first the inversion, then RECOLOUR_HUE_TURNS, then
        RECOLOUR_SWAPS in order.

        An inverted layout, centred, is the centred layout negated; a hue turn is taken as the turn
        of the centred colours about the grey axis by the same angle, R(t) = cos t (I - kk') +
        sin t [k]x + kk'. Agreement is linear in the layout, so three products with the index (the
        colours' part across the grey axis, that part turned a quarter, and the part along it) give
        every turn's agreement as cos t * A + sin t * B + C, and the inversion's as -(A + C)."""
        count = len(thumbnails)
        coarse = _coarse_layout(thumbnails)
        centred = _centre(coarse).reshape(count, COARSE * COARSE, 3)
        axis = np.full(3, 1 / np.sqrt(3), dtype=np.float32)
        along = (centred @ axis)[..., None] * axis
        across = centred - along
        quarter = across @ _grey_axis_turn(90.0).T
        parts = np.stack([across, quarter, along], axis=1).reshape(count, 3, COARSE, COARSE, 3)
        orientations = np.stack([parts, parts[:, :, :, ::-1]], axis=2).reshape(-1, COARSE * COARSE * 3)
        # (N, 3 parts, 2 orientations, M), then each turn's agreement with every training image, the
        # better orientation, turn by turn (small arrays, contiguous along the index).
        agreement = (orientations @ self._coarse.T).reshape(count, 3, 2, len(self.names))
        across_a, quarter_a, along_a = agreement[:, 0], agreement[:, 1], agreement[:, 2]
        inverted = -(across_a + along_a)
        turned = [np.maximum(inverted[:, 0], inverted[:, 1])]
        for angle in np.deg2rad(np.array(RECOLOUR_HUE_TURNS, dtype=np.float32)):
            scores = np.cos(angle) * across_a + np.sin(angle) * quarter_a + along_a
            turned.append(np.maximum(scores[:, 0], scores[:, 1]))  # (N, M)
        # A swap of two channels is a permutation of the centred colours, one product each.
        layouts = centred.reshape(count, COARSE, COARSE, 3)
        for order in RECOLOUR_SWAPS:
            swapped = layouts[..., list(order)]
            both = np.stack([swapped, swapped[:, :, ::-1]], axis=1).reshape(-1, COARSE * COARSE * 3)
            scores = (both @ self._coarse.T).reshape(count, 2, len(self.names))
            turned.append(np.maximum(scores[:, 0], scores[:, 1]))
        best_any = np.maximum.reduce(turned)
        keep = min(REFRAME_CANDIDATES, len(self.names))
        rows = np.argpartition(-best_any, keep - 1, axis=1)[:, :keep]
        per_turn = np.stack([scores.max(axis=1) for scores in turned], axis=1)  # (N, T)
        return rows, per_turn

    def _nearest_recoloured(self, rgb: Image.Image, rows: np.ndarray, turns: list[int],
                            verify_from: float | None) -> NearCopyMatch | None:
        rgb = _reframing_size(rgb)
        tried: list[tuple[str, Image.Image, tuple[int, ...]]] = []
        for number in turns:
            if number == 0:
                tried.append(("colours inverted", ImageOps.invert(rgb), SIZES))
            elif number > len(RECOLOUR_HUE_TURNS):
                order = RECOLOUR_SWAPS[number - 1 - len(RECOLOUR_HUE_TURNS)]
                channels = rgb.split()
                pair = " and ".join(("red", "green", "blue")[i] for i in range(3) if order[i] != i)
                tried.append((f"{pair} swapped back", Image.merge("RGB", [channels[i] for i in order]), SIZES))
            else:
                angle = RECOLOUR_HUE_TURNS[number - 1]
                # Turning the hue by +angle undoes a turn of the copy by 360 - angle.
                tried.append((f"hue turned {360 - angle} degrees", turn_hue(rgb, angle), SIZES))
        match = self._best_undone(rows, tried, verify_from)
        return dataclasses.replace(match, compared="recoloured") if match is not None else None

    def nearest_repainted_many(self, images: Sequence[Image.Image | np.ndarray], verify_from: float | None = None,
                               search_from: float = -1.0, thumbnails: np.ndarray | None = None) -> list[NearCopyMatch | None]:
        """``nearest`` for copies repainted rather than recoloured: the drawing on **a new background
        colour** (the white behind it filled), **tinted** (sepia, a duotone, a photo filter: every
        colour of one hue, its strength following the lightness), or under **a vignette** (darkened
        towards the corners). None is undone by the colour search (a background is most of the
        image; a vignette changes brightness from place to place), nor by the grey one (a tinted copy
        keeps a quarter to a half of its original's colourfulness, and sepia clips red and green in
        the light tones, which compresses its luma).

        Undone on the query: the background's colour turned back to white, searched in colour
        (``compared`` "recoloured"); the tint taken away, the query's least clipped channel as its
        grey, searched in grey (``compared`` "luminance"); the vignette lifted (the image divided by
        the darkening fitted to its background), searched in colour ("recoloured"). A copy
        **brightened** until its light tones clipped to white (they merge with the background) is
        compared with the training images brightened by BRIGHTENED_GAINS (in grey for a grey query).
        The output policy holds all of them to the grey search's stricter thresholds. The match says
        what was undone (``reframed``).

        Gated as ``nearest_recoloured_many`` is: the undone query's 8x8 layout against the whole
        index, searched only from ``search_from``, against its CANDIDATES nearest training images by
        that layout. An image with no coloured border, no single muted hue and no vignette (every
        one of 128 of the shipped model's) costs three tests on its thumbnail and the brightened
        indexes' layout gates (none of 64 of the shipped model's images passes them).
        ``thumbnails``: the images' 32x32 thumbnails, when the caller has them already."""
        rgbs = [query_rgb(image) for image in images]
        if not self.names or not rgbs or search_from > 1.0:
            return [None] * len(rgbs)
        thumbs = _thumbnails(rgbs, thumbnails)
        return [self._nearest_repainted(rgb, thumb, verify_from, search_from)
                for rgb, thumb in zip(rgbs, thumbs, strict=True)]

    def _nearest_repainted(self, rgb: Image.Image, thumb: np.ndarray, verify_from: float | None,
                           search_from: float) -> NearCopyMatch | None:
        found: list[NearCopyMatch] = []
        colour = background_colour(thumb)
        if colour is not None:
            rows, best = max((self._layout_candidates(whiten(thumb, colour, from_border)) for from_border in (False, True)),
                             key=lambda candidates: candidates[1])
            if best >= search_from:
                # Whitened at full size (resized first, the drawing's edges would blend into the
                # background and keep a halo of its colour), and searched at full size like any
                # query: nothing is turned. Both ways (every pixel of that colour, and only the
                # background joined to the border): the better one is verified.
                tried = [("background turned white", whiten(rgb, colour, from_border), SIZES) for from_border in (False, True)]
                match = self._best_undone(rows, tried, verify_from)
                if match is not None:
                    found.append(dataclasses.replace(match, compared="recoloured"))
        if is_tinted(thumb):
            channel = least_clipped_channel(thumb)
            grey = np.repeat(thumb[..., channel:channel + 1], 3, axis=-1)
            luminance = self.luminance_index()
            rows, best = luminance._layout_candidates(grey)
            if best >= search_from:
                query = rgb.getchannel(channel).convert("RGB")
                match = luminance._best_undone(rows, [("tint taken away", query, SIZES)], verify_from)
                if match is not None:
                    found.append(dataclasses.replace(match, compared="luminance"))
        strength = vignette_strength(thumb)
        if strength is not None:
            rows, best = self._layout_candidates(lift_vignette(thumb, strength))
            if best >= search_from:
                match = self._best_undone(rows, [("vignette lifted", lift_vignette(rgb, strength), SIZES)], verify_from)
                if match is not None:
                    found.append(dataclasses.replace(match, compared="recoloured"))
        # Brightened until its light tones clipped to white (they merge with the background, which
        # no correlation undoes): compared with the training images brightened the same way.
        grey = colourfulness(thumb) <= BRIGHTENED_GREY_COLOURFULNESS
        for gain in BRIGHTENED_GAINS:
            brightened = (self.luminance_index() if grey else self).brightened(gain)
            rows, best = brightened._layout_candidates(thumb)
            if best >= search_from:
                match = brightened._best_undone(rows, [(f"brightened {gain - 1:.0%}", rgb, SIZES)], verify_from)
                if match is not None:
                    found.append(dataclasses.replace(match, compared="recoloured"))
        # All are held to the same thresholds: the one that agrees best on both counts.
        return max(found, key=lambda match: min(match.similarity, match.detail), default=None)

    def brightened(self, gain: float) -> NearCopyIndex:
        """The same training images brightened by ``gain``, their light tones clipped to white (and
        the same fine features): what a brightened copy is compared with. Made once per gain."""
        if gain not in self._brightened:
            def brighten(array: np.ndarray) -> np.ndarray:
                return np.clip(np.rint(array.astype(np.float32) * gain), 0, 255).astype(np.uint8)

            self._brightened[gain] = type(self)(self.names, brighten(self.thumbnails), brighten(self.details))
        return self._brightened[gain]

    def _layout_candidates(self, thumb: np.ndarray) -> tuple[np.ndarray, float]:
        """For one (32, 32, 3) thumbnail: the CANDIDATES rows of the index nearest it by the 8x8
        layout (either orientation), as many as the search itself takes (a crop moves the layout, so
        the right image may rank below the first few), and the best agreement."""
        coarse = _coarse_layout(thumb)
        orientations = _centre(np.stack([coarse, coarse[:, ::-1]])).reshape(2, -1)
        scores = (self._coarse @ orientations.T).max(axis=1)
        keep = min(CANDIDATES, len(self.names))
        rows = np.argpartition(-scores, keep - 1)[:keep]
        return rows, float(scores[rows].max())

    def _colourfulness(self) -> np.ndarray:
        if self._chroma is None:
            self._chroma = colourfulness(self.thumbnails.astype(np.float32))
            self._rows = {name: row for row, name in enumerate(self.names)}
        return self._chroma

    def colourfulness_of(self, name: str) -> float:
        """``colourfulness`` of a training image's thumbnail."""
        return float(self._colourfulness()[self._rows[name]])

    def _window_spreads(self, size: int) -> np.ndarray:
        """(M, span, span) float64: for every training image on its padded canvas, the spread (root
        of the summed per-channel squared deviations) of every size x size window, by top-left
        corner. They depend on the index alone, so they are computed once, on the first search."""
        cached = self._spreads.get(size)
        if cached is None:
            pad = MAX_OFFSET
            span = GRID + 2 * pad - size + 1
            cached = np.empty((len(self.names), span, span))
            for start in range(0, len(self.names), 256):  # in blocks: the integral images are large
                block = np.pad(self.thumbnails[start : start + 256], ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                               constant_values=255).transpose(0, 3, 1, 2).astype(np.int32)
                # Integral images give every window's sum and sum of squares at once; in 32-bit
                # integers they are exact (at most 40 x 40 x 255^2) and quicker to accumulate.
                integral = np.pad(block.cumsum(-1, dtype=np.int32).cumsum(-2, dtype=np.int32), ((0, 0), (0, 0), (1, 0), (1, 0)))
                integral_sq = np.pad((block * block).cumsum(-1, dtype=np.int32).cumsum(-2, dtype=np.int32),
                                     ((0, 0), (0, 0), (1, 0), (1, 0)))
                sums = _window_sums(integral, size, span).astype(np.float64)
                sums_sq = _window_sums(integral_sq, size, span).astype(np.float64)
                cached[start : start + 256] = np.sqrt(np.maximum((sums_sq - sums * sums / (size * size)).sum(axis=1), 1e-6))
            self._spreads[size] = cached
        return cached

    def _best_match(self, rgb: Image.Image, top: np.ndarray, best_score: np.ndarray, best_query: np.ndarray,
                    best_where: np.ndarray, queries: list[tuple[bool, int]], side: int,
                    verify_from: float | None) -> NearCopyMatch:
        """One image's answer from its candidates' best alignments: unverified when the colour
        layout is too far from all of them, else the best of the top few after verification."""
        pad = MAX_OFFSET
        if verify_from is not None and float(best_score.max()) < verify_from:
            k = int(best_score.argmax())
            mirrored, size = queries[int(best_query[k])]
            y, x = divmod(int(best_where[k]), side - size + 1)
            score = float(best_score[k])
            return NearCopyMatch(self.names[int(top[k])], score, 0.0, mirrored, GRID / size, (x - pad, y - pad), score, False)
        variants = {False: rgb}
        greys: dict[bool, QueryGrey] = {}
        resampled: dict[tuple[bool, int], tuple[np.ndarray, np.ndarray]] = {}
        best: NearCopyMatch | None = None
        for k in np.argsort(-best_score, kind="stable")[:VERIFIED]:
            coarse_score = score = float(best_score[k])
            mirrored, size = queries[int(best_query[k])]
            y, x = divmod(int(best_where[k]), side - size + 1)
            if mirrored not in variants:
                variants[mirrored] = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            variant = variants[mirrored]
            if mirrored not in greys:
                greys[mirrored] = QueryGrey.of(variant)
            detail, fine, fine_left, fine_top = self._verify(variant, int(top[k]), size, x, y, greys[mirrored],
                                                             resampled, mirrored)
            # The colour layout again, at the finer alignment found by the verification.
            score = max(score, self._colour_at(variant, int(top[k]), fine / 2, fine_left / 2, fine_top / 2))
            if best is None or score + detail > best.similarity + best.detail:
                best = NearCopyMatch(self.names[int(top[k])], score, detail, mirrored, GRID / size, (x - pad, y - pad),
                                     coarse_score)
        assert best is not None  # at least one candidate was verified
        return best

    def _colour_at(self, image: Image.Image, item: int, size: float, left: float, top: float) -> float:
        """Colour correlation with the image covering the padded 32-cell canvas from (left, top),
        size x size cells (fractions allowed): the query is resampled onto the whole cells it covers."""
        first_x, first_y = int(np.ceil(left - 1e-6)), int(np.ceil(top - 1e-6))
        last_x, last_y = int(np.floor(left + size + 1e-6)), int(np.floor(top + size + 1e-6))
        if last_x - first_x < GRID * 0.75 or last_y - first_y < GRID * 0.75:
            return -1.0
        width, height = image.size
        box = ((first_x - left) / size * width, (first_y - top) / size * height,
               (last_x - left) / size * width, (last_y - top) / size * height)
        query = np.asarray(image.resize((last_x - first_x, last_y - first_y), Image.Resampling.BOX, box=box),
                           dtype=np.float32)
        pad = MAX_OFFSET
        canvas = np.pad(self.thumbnails[item].astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), constant_values=255.0)
        window = canvas[first_y:last_y, first_x:last_x]
        return float((_centre(query[None])[0] * _centre(window[None])[0]).sum())

    def _verify(self, image: Image.Image, item: int, size: int, x: int, y: int,
                grey: QueryGrey | None = None,
                cache: dict[tuple[bool, int], tuple[np.ndarray, np.ndarray]] | None = None,
                mirrored: bool = False) -> tuple[float, int, float, float]:
        """Band-pass correlation on the 64-cell grey thumbnail around the alignment found at 32; with
        the best size and top-left corner on the padded 64-cell canvas.

        ``grey`` is the query prepared for resampling (``QueryGrey.of``), and ``cache`` its
        resampled, band-passed versions by (mirrored, size): made once per query and shared by the
        candidates verified, rather than once per candidate."""
        scale = DETAIL // GRID
        pad = MAX_OFFSET * scale
        canvas = _high_pass(np.pad(self.details[item].astype(np.float32), pad, constant_values=255.0))
        views = np.lib.stride_tricks.sliding_window_view  # every window of a size, without copying
        wide = canvas.astype(np.float64)
        integral = np.pad(wide.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        integral_sq = np.pad((wide * wide).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        grey = grey if grey is not None else QueryGrey.of(image)
        scores: list[np.ndarray] = []
        places: list[tuple[int, float, float, np.ndarray, np.ndarray]] = []
        # Whole and half cells of 64 around the alignment found at 32, in size and position: the
        # query resampled half a cell off too, so that an edit that moved the image by a fraction of
        # a cell still lines up. Every position of one (size, phase) is scored in one array
        # operation; the order of the scores is the order of the search, so ties resolve as before.
        for fine in range(max(size * scale - REFINE, 8), size * scale + REFINE + 1):
            centre_x = int(round(x * scale + (size * scale - fine) / 2))
            centre_y = int(round(y * scale + (size * scale - fine) / 2))
            # Top-left corners that keep the window on the canvas.
            tops = np.array([t for t in range(centre_y - REFINE, centre_y + REFINE + 1) if 0 <= t <= canvas.shape[0] - fine])
            lefts = np.array([t for t in range(centre_x - REFINE, centre_x + REFINE + 1) if 0 <= t <= canvas.shape[1] - fine])
            if not len(tops) or not len(lefts):
                continue
            # The outer two rings are left out: there the blurs see the query's edge but the
            # canvas's neighbours, which differ for anything touching the border.
            inner = fine - 4
            rows, columns = (tops + 2)[:, None], (lefts + 2)[None, :]
            windows = views(canvas, (inner, inner))[rows, columns].reshape(len(tops) * len(lefts), -1)
            sums = (integral[rows + inner, columns + inner] - integral[rows, columns + inner]
                    - integral[rows + inner, columns] + integral[rows, columns])
            sums_sq = (integral_sq[rows + inner, columns + inner] - integral_sq[rows, columns + inner]
                       - integral_sq[rows + inner, columns] + integral_sq[rows, columns])
            spread = np.maximum(sums_sq - sums * sums / (inner * inner), 0.0).ravel()
            key = (mirrored, fine)
            if cache is None or key not in cache:
                queries = _high_pass(np.stack([grey.resampled(fine, px, py) for px, py in PHASES]))[:, 2:-2, 2:-2]
                queries = queries - queries.mean(axis=(1, 2), keepdims=True)
                flat_queries = queries.reshape(len(PHASES), -1)
                computed = (flat_queries, (flat_queries.astype(np.float64) ** 2).sum(axis=1))
                if cache is not None:
                    cache[key] = computed
            else:
                computed = cache[key]
            flat_queries, energies = computed
            dots = (flat_queries @ windows.T).astype(np.float64)  # (phases, positions)
            denominator = np.sqrt(energies[:, None] * spread[None])
            phase_scores = np.where(denominator > 1e-6, dots / np.maximum(denominator, 1e-12), 0.0)
            for (phase_x, phase_y), block in zip(PHASES, phase_scores):
                scores.append(block)
                places.append((fine, phase_x, phase_y, tops, lefts))
        if not scores:
            return -1.0, size * scale, float(x * scale), float(y * scale)
        flat = np.concatenate(scores)
        best = int(flat.argmax())  # the first of equal scores, as the search met them
        for (fine, phase_x, phase_y, tops, lefts), block in zip(places, scores):
            if best < len(block):
                top, left = divmod(best, len(lefts))
                return float(flat.max()), fine, float(lefts[left]) - phase_x, float(tops[top]) - phase_y
            best -= len(block)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class QueryGrey:
    """The query in grey, ready to be resampled onto the 64-cell grid at any size and phase.

    A white margin keeps a resampling box half a cell off inside the image (PIL requires it; the
    outer rings it affects are not compared). A large image is first halved (exact 2 x 2 means, kept
    in floats): resampling cost grows with the source's pixels, and a 256 px image resampled to 64
    cells loses nothing that the halving keeps."""

    image: Image.Image  # mode "F"
    margin: float  # in the original image's pixels
    step: int  # original pixels per pixel of ``image``
    width: int
    height: int

    @classmethod
    def of(cls, image: Image.Image) -> QueryGrey:
        width, height = image.size
        margin = int(np.ceil(width / 8))
        step = 2 if min(width, height) >= 4 * DETAIL and width % 2 == 0 and height % 2 == 0 else 1
        margin += margin % step
        grey = Image.new("F", (width + 2 * margin, height + 2 * margin), 255.0)
        grey.paste(image.convert("L").convert("F"), (margin, margin))
        if step > 1:
            grey = grey.resize((grey.width // step, grey.height // step), Image.Resampling.BOX)
        return cls(grey, margin, step, width, height)

    def resampled(self, cells: int, phase_x: float, phase_y: float) -> np.ndarray:
        """(cells, cells) float32, area-averaged, the grid moved by a fraction of a cell."""
        left = self.margin + phase_x * self.width / cells
        top = self.margin + phase_y * self.height / cells
        box = (left / self.step, top / self.step, (left + self.width) / self.step, (top + self.height) / self.step)
        return np.asarray(self.image.resize((cells, cells), Image.Resampling.BOX, box=box), dtype=np.float32)


def _reframing_size(rgb: Image.Image) -> Image.Image:
    """The query at most REFRAME_SIDE a side before an edit is undone on it: the search reads 32 and
    64 cells of it, and turning a 256 px image a dozen times cost more than the search itself."""
    if max(rgb.size) > REFRAME_SIDE:
        return rgb.resize((REFRAME_SIDE, REFRAME_SIDE), Image.Resampling.BOX)
    return rgb


def _middle_square(rgb: Image.Image) -> Image.Image:
    """The square in the middle of an image that is not square (its long side cut to the short)."""
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return rgb.crop((left, top, left + side, top + side))


def _squeezed(rgb: Image.Image, squeeze: float, across: bool, anchor: float, fill: str = "white") -> Image.Image:
    """The image squeezed to ``squeeze`` of its width (``across``) or height, against the left (top)
    side for ``anchor`` 0, the right (bottom) for 1; the strip left over is white (``fill``
    "white") or its nearest edge of the squeezed image repeated ("edge")."""
    width, height = rgb.size
    size = (max(1, round(width * squeeze)), height) if across else (width, max(1, round(height * squeeze)))
    left, top = round(anchor * (width - size[0])), round(anchor * (height - size[1]))
    squeezed = rgb.resize(size, Image.Resampling.BOX)
    if fill == "edge":
        padding = ((top, height - size[1] - top), (left, width - size[0] - left), (0, 0))
        return Image.fromarray(np.pad(np.asarray(squeezed), padding, mode="edge"))
    canvas = Image.new("RGB", rgb.size, (255, 255, 255))
    canvas.paste(squeezed, (left, top))
    return canvas


def _thumbnails(rgbs: list[Image.Image], given: np.ndarray | None) -> np.ndarray:
    """(N, 32, 32, 3) thumbnails of the images: ``given`` when the caller made them already."""
    return np.asarray(given, dtype=np.float32) if given is not None else np.stack([thumbnail(rgb) for rgb in rgbs])


def turn_hue(image: Image.Image, degrees: float) -> Image.Image:
    """Every hue turned by ``degrees`` round the HSV colour wheel, saturation and value kept (what an
    image editor's hue slider does)."""
    shift = round(degrees * 256 / 360) % 256
    hue, saturation, value = image.convert("HSV").split()
    return Image.merge("HSV", (hue.point([(level + shift) % 256 for level in range(256)]), saturation, value)).convert("RGB")


def background_colour(thumb: np.ndarray) -> np.ndarray | None:
    """The colour of a (32, 32, 3) thumbnail's background when it is one colour other than white
    (its border cells agree, BACKGROUND_*), else None."""
    border = np.concatenate([thumb[0], thumb[-1], thumb[1:-1, 0], thumb[1:-1, -1]]).astype(np.float32)
    median = np.median(border, axis=0)
    agreeing = (np.abs(border - median).max(axis=1) <= BACKGROUND_TOLERANCE).mean()
    if agreeing < BACKGROUND_BORDER_SHARE or float(np.abs(255.0 - median).max()) < BACKGROUND_NOT_WHITE:
        return None
    return median


def whiten(image: Image.Image | np.ndarray, colour: np.ndarray, from_border: bool = False) -> Image.Image | np.ndarray:
    """The image (or a thumbnail array) with every pixel within BACKGROUND_FILL_TOLERANCE of
    ``colour`` turned white: a background colour undone. ``from_border``: only those joined to the
    border through such pixels, so that parts of the drawing in that colour stay as they are (an
    editor's fill reaches the whites inside the drawing too; a cut-out pasted on colour does not)."""
    array = np.asarray(image, dtype=np.float32)
    near = np.abs(array - np.asarray(colour, dtype=np.float32)).max(axis=-1) <= BACKGROUND_FILL_TOLERANCE
    if from_border:
        near = _joined_to_border(near)
    whitened = np.where(near[..., None], np.float32(255.0), array)
    if isinstance(image, Image.Image):
        return Image.fromarray(np.clip(np.rint(whitened), 0, 255).astype(np.uint8))
    return whitened


def _joined_to_border(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` joined to the image's border through pixels of ``mask`` (4-connected),
    grown one pixel a step from the border until nothing changes."""
    reached = np.zeros_like(mask)
    reached[0], reached[-1], reached[:, 0], reached[:, -1] = mask[0], mask[-1], mask[:, 0], mask[:, -1]
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= mask
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def is_tinted(thumb: np.ndarray) -> bool:
    """Whether a (32, 32, 3) thumbnail is tinted: coloured, but every coloured cell of one muted hue
    (TINT_*)."""
    pixels = thumb.reshape(-1, 3).astype(np.float32)
    # The colour across the grey axis, in the plane's two coordinates.
    u = (pixels[:, 0] - pixels[:, 1]) / np.sqrt(2.0)
    v = (pixels[:, 0] + pixels[:, 1] - 2.0 * pixels[:, 2]) / np.sqrt(6.0)
    strength = np.hypot(u, v)
    coloured = strength >= TINT_CHROMA
    if coloured.mean() < TINT_COLOURED_SHARE:
        return False  # grey: the grey search's
    direction = (u[coloured] + 1j * v[coloured]) / strength[coloured]
    if abs(direction.mean()) < TINT_HUE_AGREEMENT:
        return False
    largest = pixels[coloured].max(axis=1)
    saturation = (largest - pixels[coloured].min(axis=1)) / np.maximum(largest, 1.0)
    return bool(np.percentile(saturation, 90) <= TINT_MAX_SATURATION)


def _coarse_layout(thumbs: np.ndarray) -> np.ndarray:
    """(..., 32, 32, 3) thumbnails -> (..., 8, 8, 3) layouts: the 32-cell grid averaged 4 x 4."""
    cells = GRID // COARSE
    return thumbs.reshape(*thumbs.shape[:-3], COARSE, cells, COARSE, cells, 3).mean(axis=(-4, -2))


def _squared_radius(height: int, width: int) -> np.ndarray:
    """(height, width) squared distance of each pixel's centre from the image's centre, over half
    the side (1 at the middle of an edge, 2 in a corner)."""
    y = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / (height / 2)
    x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / (width / 2)
    return y[:, None] ** 2 + x[None, :] ** 2


def vignette_strength(thumb: np.ndarray) -> float | None:
    """k when a (32, 32, 3) thumbnail's light background darkens towards the corners as 1 - k r^2
    (a vignette, a photo filter), else None. The background's brightness at each distance is the
    brightest quarter of the cells in each ring from the edges' middles to the corners (a drawing
    seldom reaches the corners); a vignette darkens those rings by k r^2, in proportion to r^2, from
    white in the middle. A uniform grey or coloured background does not fit that (the background
    search's), nor does a white one (k near 0)."""
    brightness = thumb.max(axis=-1)
    radius = _squared_radius(*brightness.shape)
    levels, centres = [], []
    for low, high in zip(VIGNETTE_RINGS[:-1], VIGNETTE_RINGS[1:], strict=True):
        ring = (radius >= low) & (radius < high)
        levels.append(float(np.percentile(brightness[ring], 75)) / 255.0)
        centres.append(float(radius[ring].mean()))
    levels_a, centres_a = np.array(levels), np.array(centres)
    strength = float(((1.0 - levels_a) * centres_a).sum() / (centres_a * centres_a).sum())
    misfit = float(np.abs(levels_a - (1.0 - strength * centres_a)).max())
    return strength if strength >= VIGNETTE_MIN_STRENGTH and misfit <= VIGNETTE_MISFIT else None


def lift_vignette(image: Image.Image | np.ndarray, strength: float) -> Image.Image | np.ndarray:
    """The image (or a thumbnail array) divided by 1 - strength r^2: a vignette undone."""
    array = np.asarray(image, dtype=np.float32)
    gain = 1.0 / np.maximum(1.0 - strength * _squared_radius(*array.shape[:2]), 0.2)
    lifted = np.minimum(array * gain[..., None], 255.0)
    if isinstance(image, Image.Image):
        return Image.fromarray(np.rint(lifted).astype(np.uint8))
    return lifted


def least_clipped_channel(thumb: np.ndarray) -> int:
    """The channel of a tinted thumbnail that keeps its grey best: the one clipped least in the
    light tones (sepia's blue: red and green reach 255 where the blue has not, in cells that are
    not white), and of those the one with the most contrast (a red and white flag's red channel is
    nearly flat)."""
    pixels = thumb.reshape(-1, 3).astype(np.float32)
    clipped = ((pixels >= 250.0) & (pixels.min(axis=1, keepdims=True) < 240.0)).mean(axis=0)
    spread = pixels.std(axis=0)
    least = clipped <= clipped.min() + 0.01
    return int(np.argmax(np.where(least, spread, -1.0)))


def _grey_axis_turn(degrees: float) -> np.ndarray:
    """The 3x3 rotation of RGB colours about the grey axis by ``degrees`` (Rodrigues' formula): a
    linear stand-in for a hue turn, which turns red towards yellow for positive angles as HSV does."""
    theta = np.deg2rad(degrees)
    axis = np.ones(3) / np.sqrt(3)
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return (np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(axis, axis)).astype(np.float32)


_REFRAMING_MAPS: tuple[np.ndarray, np.ndarray] | None = None


def _reframing_maps() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 area average of every reframing ``nearest_reframed_many`` tries (as is, each turn of
    REFRAME_ANGLES and REFRAME_QUARTER_TURNS, each margin of REFRAME_MARGINS cropped off, each squeeze
    of REFRAME_SQUEEZES with each fill of REFRAME_SQUEEZE_FILLS) as a linear map of the 32x32
    thumbnail: (R, 64, 1024) weights, and (R, 64) the share of each cell that falls outside the
    image (white, as a turn fills its corners). Sampled at 8x8 points per cell, nearest thumbnail
    pixel: the gate needs the layout, not every pixel. Made once per process."""
    global _REFRAMING_MAPS
    if _REFRAMING_MAPS is not None:
        return _REFRAMING_MAPS
    samples = 8
    # Sample points of the output, in thumbnail pixels, cell by cell: (64 cells, 64 points) each axis.
    cell = GRID / COARSE
    offsets = (np.arange(samples) + 0.5) / samples * cell
    cy, cx = np.divmod(np.arange(COARSE * COARSE), COARSE)
    ys = (cy[:, None, None] * cell + offsets[None, :, None]) + np.zeros((1, 1, samples))
    xs = (cx[:, None, None] * cell + offsets[None, None, :]) + np.zeros((1, samples, 1))
    ys, xs = ys.reshape(COARSE * COARSE, -1), xs.reshape(COARSE * COARSE, -1)
    centre = GRID / 2
    sources: list[tuple[np.ndarray, np.ndarray]] = [(xs, ys)]
    for angle in (*REFRAME_ANGLES, *REFRAME_QUARTER_TURNS):
        # PIL turns anticlockwise: the output point at angle t from the centre shows the source
        # point at t - angle (y grows downwards).
        theta = np.deg2rad(angle)
        dx, dy = xs - centre, ys - centre
        sources.append((centre + dx * np.cos(theta) - dy * np.sin(theta), centre + dx * np.sin(theta) + dy * np.cos(theta)))
    for margin in REFRAME_MARGINS:
        cut = GRID * margin / 2
        sources.append((cut + xs * (1 - margin), cut + ys * (1 - margin)))
    for squeeze in REFRAME_SQUEEZES:
        # Squeezed into ``squeeze`` of the width (or height), against either side (the side the
        # crop took is not known); the rest white, or (clipped sources) the nearest edge repeated.
        for anchor in (0.0, 1.0):
            start = anchor * (1 - squeeze) * GRID
            for fill in REFRAME_SQUEEZE_FILLS:
                low, high = (0.0, np.nextafter(GRID, 0.0)) if fill == "edge" else (-np.inf, np.inf)
                sources.append((np.clip((xs - start) / squeeze, low, high), ys))
                sources.append((xs, np.clip((ys - start) / squeeze, low, high)))
    weights = np.zeros((len(sources), COARSE * COARSE, GRID * GRID), dtype=np.float32)
    white = np.zeros((len(sources), COARSE * COARSE), dtype=np.float32)
    for number, (sx, sy) in enumerate(sources):
        inside = (sx >= 0) & (sx < GRID) & (sy >= 0) & (sy < GRID)
        pixel = np.floor(np.clip(sy, 0, GRID - 1)).astype(int) * GRID + np.floor(np.clip(sx, 0, GRID - 1)).astype(int)
        share = 1.0 / sx.shape[1]
        for row in range(COARSE * COARSE):
            np.add.at(weights[number, row], pixel[row][inside[row]], share)
        white[number] = (~inside).sum(axis=1) * share
    _REFRAMING_MAPS = (weights, white)
    return _REFRAMING_MAPS


def _window_sums(integral: np.ndarray, size: int, span: int) -> np.ndarray:
    """Sums over every size x size window whose corner lies in [0, span) x [0, span)."""
    return (integral[..., size : size + span, size : size + span] - integral[..., :span, size : size + span]
            - integral[..., size : size + span, :span] + integral[..., :span, :span])


def near_copy_index_sha256(folder: str | Path) -> str:
    """SHA-256 of a checkpoint folder's index file, "" when it has none. A model version records it
    when registered, and a worker refuses an index that differs: replacing or deleting the file
    would otherwise change, or switch off, the near-copy check under a vetted model."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class LegacyHashIndex:
    """Indexes written before the thumbnail format: one 64-bit pHash per image. They catch exact
    copies and little else; rebuild them. Kept so that older checkpoints still get a check."""

    hashes: np.ndarray
    names: list[str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LegacyHashIndex:
        try:
            items = data.get("items", [])
            return cls(np.array([int(h, 16) for _, h in items], dtype=np.uint64), [str(n) for n, _ in items])
        except (TypeError, ValueError) as exc:
            raise NearCopyIndexError(f"the legacy near-copy index is damaged: {exc}") from exc

    def __len__(self) -> int:
        return len(self.names)

    def nearest_hash(self, hash_value: int) -> tuple[int, str | None]:
        if len(self.hashes) == 0:
            return 64, None
        xor = np.bitwise_xor(self.hashes, np.uint64(hash_value))
        distances = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        best = int(distances.argmin())
        return int(distances[best]), self.names[best]
