"""The near-copy search as it was before it was vectorised (commit d88170e), kept as the same-run
baseline of ``benchmarks/policy_speed.py``: the same index and thresholds, one correlation per
position in a Python loop, every resampling redone per candidate.

Not used by the product."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from policies.near_copy import (
    CANDIDATES,
    COARSE,
    DETAIL,
    GRID,
    MAX_OFFSET,
    REFINE,
    SIZES,
    VERIFIED,
    NearCopyIndex,
    NearCopyMatch,
    _centre,
    _correlation,
    _window_sums,
    as_rgb,
    thumbnail,
)


def _box3(grey: np.ndarray) -> np.ndarray:
    padded = np.pad(grey, 1, mode="edge")
    h, w = grey.shape
    return sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


def _high_pass(grey: np.ndarray) -> np.ndarray:
    fine = _box3(grey)
    return fine - _box3(_box3(fine))


class ReferenceNearCopyIndex(NearCopyIndex):
    """``NearCopyIndex`` with the previous search."""

    @classmethod
    def of(cls, index: NearCopyIndex) -> ReferenceNearCopyIndex:
        return cls(index.names, index.thumbnails, index.details)

    def nearest_many(self, images, verify_from: float | None = None) -> list[NearCopyMatch | None]:
        """The previous search had no batch path: one image at a time (the output policy calls this)."""
        return [self.nearest(image, verify_from) for image in images]

    def nearest(self, image: Image.Image | np.ndarray, verify_from: float | None = None) -> NearCopyMatch | None:
        """The training image this one is most like, over mirror, scale and offset; None if empty.

        ``verify_from`` is accepted and ignored: the previous search always verified."""
        if not self.names:
            return None
        rgb = as_rgb(image)
        variants = [(False, rgb), (True, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
        # Candidates: the best coarse correlation over both orientations.
        coarse_scores = np.full(len(self.names), -1.0, dtype=np.float32)
        for _, variant in variants:
            query = _centre(thumbnail(variant, COARSE)[None])[0].reshape(-1)
            coarse_scores = np.maximum(coarse_scores, self._coarse @ query)
        top = np.sort(np.argsort(-coarse_scores)[: min(CANDIDATES, len(self.names))])
        # The candidates on a canvas MAX_OFFSET cells wider on every side, white as the fill of a
        # shifted image; every placement of the query on it is one offset of the search. Done per
        # query for the few candidates only, so a worker holds just the thumbnails in memory.
        pad = MAX_OFFSET
        canvas = np.pad(self.thumbnails[top].astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                        constant_values=255.0).transpose(0, 3, 1, 2)  # (K, 3, S, S)
        side = canvas.shape[-1]
        spectrum = np.fft.rfft2(canvas).astype(np.complex64)
        # Integral images give every window's sum and sum of squares at once.
        integral = np.pad(canvas.cumsum(-1).cumsum(-2), ((0, 0), (0, 0), (1, 0), (1, 0)))
        integral_sq = np.pad((canvas * canvas).cumsum(-1).cumsum(-2), ((0, 0), (0, 0), (1, 0), (1, 0)))
        # Per candidate, its best alignment: (score, mirrored, size, x, y) on the padded grid.
        aligned: dict[int, tuple[float, bool, int, int, int]] = {}
        for mirrored, variant in variants:
            for size in SIZES:
                query = _centre(thumbnail(variant, size)[None])[0]  # (n, n, 3), as the candidates' windows
                if not query.any():
                    continue  # a flat image has no shape to match (the degenerate check refuses it)
                kernel = np.zeros((3, side, side), dtype=np.float32)
                kernel[:, :size, :size] = query.transpose(2, 0, 1)
                # Cross-correlation by FFT; offsets 0..side-size never wrap around.
                dots = np.fft.irfft2(spectrum * np.conj(np.fft.rfft2(kernel)).astype(np.complex64)[None], s=(side, side))
                span = side - size + 1
                dots = dots[..., :span, :span].sum(axis=1)  # (K, span, span)
                sums = _window_sums(integral, size, span)
                sums_sq = _window_sums(integral_sq, size, span)
                spread = np.sqrt(np.maximum((sums_sq - sums * sums / (size * size)).sum(axis=1), 1e-6))
                # A flat window (all white) has no shape to agree with: it scores 0.
                scores = np.where(spread > 1.0, dots / spread, 0.0)
                flat = scores.reshape(len(top), -1)
                where = flat.argmax(axis=1)
                for k in range(len(top)):
                    score = float(flat[k, where[k]])
                    if k not in aligned or score > aligned[k][0]:
                        y, x = divmod(int(where[k]), span)
                        aligned[k] = (score, mirrored, size, x, y)
        if not aligned:
            return None
        best: NearCopyMatch | None = None
        for k, (score, mirrored, size, x, y) in sorted(aligned.items(), key=lambda item: -item[1][0])[:VERIFIED]:
            variant = variants[int(mirrored)][1]
            detail, fine, fine_left, fine_top = self._verify(variant, int(top[k]), size, x, y)
            # The colour layout again, at the finer alignment found by the verification.
            score = max(score, self._colour_at(variant, int(top[k]), fine / 2, fine_left / 2, fine_top / 2))
            if best is None or score + detail > best.similarity + best.detail:
                best = NearCopyMatch(self.names[int(top[k])], score, detail, mirrored, GRID / size, (x - pad, y - pad))
        return best

    def _verify(self, image: Image.Image, item: int, size: int, x: int, y: int) -> tuple[float, int, float, float]:
        """Band-pass correlation on the 64-cell grey thumbnail around the alignment found at 32; with
        the best size and top-left corner on the padded 64-cell canvas."""
        scale = DETAIL // GRID
        pad = MAX_OFFSET * scale
        canvas = _high_pass(np.pad(self.details[item].astype(np.float32), pad, constant_values=255.0))
        best, where = -1.0, (size * scale, float(x * scale), float(y * scale))
        width, height = image.size
        # A margin so that a box half a cell off stays inside the image (PIL requires it); the outer
        # rings it affects are not compared.
        margin = int(np.ceil(width / 8))
        grey = Image.new("L", (width + 2 * margin, height + 2 * margin), 255)
        grey.paste(image.convert("L"), (margin, margin))

        def query_at(fine: int, phase_x: float, phase_y: float) -> np.ndarray:
            step_x, step_y = phase_x * width / fine, phase_y * height / fine
            resampled = grey.resize((fine, fine), Image.Resampling.BOX,
                                    box=(margin + step_x, margin + step_y, margin + width + step_x, margin + height + step_y))
            # The outer two rings are left out: there the blurs see the query's edge but the
            # canvas's neighbours, which differ for anything touching the border.
            return _high_pass(np.asarray(resampled, dtype=np.float32))[2:-2, 2:-2]

        def search(fine: int, phase_x: float, phase_y: float, positions: Iterable[tuple[int, int]]) -> None:
            nonlocal best, where
            query = query_at(fine, phase_x, phase_y)
            for top, left in positions:
                if top < 0 or left < 0 or top + fine > canvas.shape[0] or left + fine > canvas.shape[1]:
                    continue
                score = _correlation(query, canvas[top + 2 : top + fine - 2, left + 2 : left + fine - 2])
                if score > best:
                    best, where = score, (fine, left - phase_x, top - phase_y)

        # Whole and half cells of 64 around the alignment found at 32, in size and position: the
        # query resampled half a cell off too, so that an edit that moved the image by a fraction of
        # a cell still lines up.
        for fine in range(max(size * scale - REFINE, 8), size * scale + REFINE + 1):
            centre_x = int(round(x * scale + (size * scale - fine) / 2))
            centre_y = int(round(y * scale + (size * scale - fine) / 2))
            positions = [(centre_y + dy, centre_x + dx) for dy in range(-REFINE, REFINE + 1) for dx in range(-REFINE, REFINE + 1)]
            for phase_x, phase_y in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)):
                search(fine, phase_x, phase_y, positions)
        return (best, *where)


