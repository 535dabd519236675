"""Local-feature search: a training image used as part of a larger picture.

The near-copy search of ``near_copy.py`` compares whole layouts: it finds a training image under
edits of the whole picture (colours, blur, small crops, turns and margins), but not one that fills
only part of the picture or lost a large part of itself. An attacker's probe found those passing:
the copy side by side with another image, in a grid, inside a screenshot, small in a corner; under
a corner logo or a sticker; cropped by a fifth or a third, or to a wide or tall frame; turned 15-45
degrees, stretched or sheared.

Those edits keep most of the drawing's small structures (corners, blobs, edge crossings) where they
were relative to each other. This search finds them as image-retrieval systems do:

1. ORB keypoints and binary descriptors (OpenCV) of each training image, in grey, kept in the index
   file with a visual vocabulary: WORDS binary centres fitted on the training descriptors.
2. A query's descriptors, of the image and of its mirror image, are assigned to words; a tf-idf
   vote over the words ranks the training images and the CANDIDATES best are verified.
3. The query's descriptors are matched against all the candidates' at once (nearest, with Lowe's
   ratio test, so that a structure several drawings share counts for none), and an affine map is
   fitted to each candidate's matches with RANSAC.
4. The query is laid onto the training image by that map and compared, block by block, with the
   grey thumbnail the near-copy index keeps: how much of the training drawing it shows, and how
   much of that alike. Many matches on one map and a drawing shown alike make a copy; two drawings
   that share a frame (the disc of every face) do not.

No torch; about 10 ms an image on one CPU core. The output policy's ``min_local_*`` thresholds
(``output.toml``) decide; the README ("Copies inside other pictures") has the figures.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

FORMAT = "orb-bovw-v1"
INDEX_SIDE = 256  # training images are described at this size (the dataset's largest)
FEATURES_PER_IMAGE = 200
QUERY_FEATURES = 300  # a query may hold the copy among other things: more keypoints
QUERY_MAX_SIDE = 768  # a larger query is shrunk first (a 2x2 grid of 256 px images is 512)
QUERY_MIN_SIDE = 256  # a smaller one is enlarged (ORB needs a few dozen pixels per structure)
WORDS = 1024
VOCABULARY_SAMPLE = 60_000
VOCABULARY_ROUNDS = 12
CANDIDATES = 10
RATIO = 0.8  # Lowe's ratio test: the nearest descriptor clearly nearer than the second
MAX_DESCRIPTOR_DISTANCE = 64  # of 256 bits
RANSAC_PIXELS = 4.0  # reprojection error allowed, in the training image's 256 px
MAX_ANISOTROPY = 3.0  # an affine map stretching one way 3x more than the other is not an edit
SCALES = (0.15, 8.0)  # the training image shown at 15% to 800% of its size
DETAIL_SIDE = 64  # the index's grey thumbnails (near_copy.DETAIL), on which a fitted map is checked
BLOCK = 8  # cells of a block compared at a time
BLOCK_ENERGY = 8 * 8 * 6.0 ** 2  # a block whose structure is weaker than 6 grey levels a cell (rms) is flat
BLOCK_CORRELATION = 0.6
BLOCK_STRENGTH = 0.3  # and the weaker of the two at least this share of the stronger
WHITE = 235  # grey levels: a flat block this light is blank
ORB_SETTINGS = {"scaleFactor": 1.2, "nlevels": 8, "edgeThreshold": 15, "patchSize": 31, "fastThreshold": 8}


class LocalFeaturesUnavailable(RuntimeError):
    """OpenCV is not installed: the local-feature stage cannot run (the caller fails closed)."""


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # a dependency of the package; a broken install fails closed
        raise LocalFeaturesUnavailable("opencv-python-headless is not installed") from exc
    cv2.setNumThreads(1)  # the worker's cores belong to the generator; these are small problems
    return cv2


@dataclass(frozen=True)
class LocalMatch:
    """The best-verified training image for a query: how many matched keypoints one affine map
    explains, how much of the training drawing the query shows under that map, and how much of
    that it shows alike."""

    name: str
    inliers: int
    visible: float  # share of the training drawing the query shows
    mirrored: bool
    agreement: float  # share of that part the query shows alike


def _grey(image: Image.Image | np.ndarray, min_side: int, max_side: int) -> np.ndarray:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    if pil.mode in ("RGBA", "LA", "P"):
        # Transparent areas read as the white the dataset's drawings sit on.
        rgba = pil.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        pil = Image.alpha_composite(canvas, rgba)
    grey = pil.convert("L")
    longest, shortest = max(grey.size), min(grey.size)
    scale = 1.0
    if longest > max_side:
        scale = max_side / longest
    elif longest < min_side:
        scale = min_side / longest
    if scale != 1.0 and shortest * scale >= 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.uint8)


def describe(image: Image.Image | np.ndarray, features: int, min_side: int = INDEX_SIDE,
             max_side: int = INDEX_SIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ORB keypoints (x, y in the described grey image's pixels), their 32-byte descriptors, and
    that grey image."""
    cv2 = _cv2()
    grey = _grey(image, min_side, max_side)
    orb = cv2.ORB_create(nfeatures=features, **ORB_SETTINGS)
    keypoints, descriptors = orb.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), grey
    return np.array([k.pt for k in keypoints], np.float32), descriptors, grey


def _bits(descriptors: np.ndarray) -> np.ndarray:
    return np.unpackbits(descriptors, axis=1).astype(np.float32)


def _nearest_words(descriptors: np.ndarray, vocabulary_bits: np.ndarray) -> np.ndarray:
    """Each descriptor's nearest word in Hamming distance: |a| + |c| - 2 a.c for 0/1 vectors."""
    if not len(descriptors):
        return np.zeros(0, np.int64)
    bits = _bits(descriptors)
    distances = vocabulary_bits.sum(axis=1)[None, :] - 2.0 * (bits @ vocabulary_bits.T)
    return distances.argmin(axis=1)


def fit_vocabulary(descriptors: np.ndarray, words: int = WORDS, seed: int = 0) -> np.ndarray:
    """Binary word centres: k-means on the descriptors' bits, each centre rounded to bits (the
    majority of its members), from a fixed seed so the same images always give the same index."""
    rng = np.random.default_rng(seed)
    sample = descriptors if len(descriptors) <= VOCABULARY_SAMPLE else descriptors[
        np.sort(rng.choice(len(descriptors), VOCABULARY_SAMPLE, replace=False))]
    words = min(words, len(sample))
    bits = _bits(sample)
    centres = bits[np.sort(rng.choice(len(bits), words, replace=False))]
    for _ in range(VOCABULARY_ROUNDS):
        assigned = (centres.sum(axis=1)[None, :] - 2.0 * (bits @ centres.T)).argmin(axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assigned, bits)
        counts = np.bincount(assigned, minlength=words)[:, None]
        # An empty word keeps its centre; the others move to their members' majority bits.
        centres = np.where(counts > 0, (sums / np.maximum(counts, 1) > 0.5).astype(np.float32), centres)
    return np.packbits(centres.astype(np.uint8), axis=1)


class LocalFeatureIndex:
    """ORB descriptors of a model's training images, with their vocabulary and tf-idf vectors."""

    def __init__(self, names: list[str], points: np.ndarray, descriptors: np.ndarray, owners: np.ndarray,
                 words: np.ndarray, vocabulary: np.ndarray, details: np.ndarray | None = None):
        self.names = list(names)
        # (M, 64, 64) grey thumbnails of the same images (the near-copy index's), for the check of a map.
        self.details = None if details is None else np.asarray(details, np.uint8).reshape(len(self.names), DETAIL_SIDE, DETAIL_SIDE)
        self.points = np.asarray(points, np.float32).reshape(-1, 2)
        self.descriptors = np.asarray(descriptors, np.uint8).reshape(-1, 32)
        self.owners = np.asarray(owners, np.int64)
        self.words = np.asarray(words, np.int64)
        self.vocabulary = np.asarray(vocabulary, np.uint8).reshape(-1, 32)
        if not len(self.points) == len(self.descriptors) == len(self.owners) == len(self.words):
            raise ValueError("the local-feature index has arrays of different lengths")
        if len(self.owners) and (self.owners.min() < 0 or self.owners.max() >= len(self.names)):
            raise ValueError("the local-feature index names images it does not hold")
        if len(self.words) and (self.words.min() < 0 or self.words.max() >= len(self.vocabulary)):
            raise ValueError("the local-feature index uses words outside its vocabulary")
        self._vocabulary_bits = _bits(self.vocabulary)
        # Each training image's descriptors, contiguous (owners are sorted when built).
        order = np.argsort(self.owners, kind="stable")
        self.points, self.descriptors, self.owners, self.words = (
            self.points[order], self.descriptors[order], self.owners[order], self.words[order])
        self._bounds = np.searchsorted(self.owners, np.arange(len(self.names) + 1))
        counts = np.zeros((len(self.names), len(self.vocabulary)), np.float32)
        np.add.at(counts, (self.owners, self.words), 1.0)
        document_frequency = (counts > 0).sum(axis=0)
        self._idf = np.log((len(self.names) + 1) / (document_frequency + 1)).astype(np.float32)
        weighted = counts * self._idf
        self._vectors = weighted / np.maximum(np.linalg.norm(weighted, axis=1, keepdims=True), 1e-9)

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def build(cls, images: Iterable[tuple[str, Image.Image]], details: np.ndarray | None = None) -> LocalFeatureIndex:
        names, points, descriptors, owners = [], [], [], []
        for number, (name, image) in enumerate(images):
            found, described, _ = describe(image, FEATURES_PER_IMAGE)
            names.append(name)
            points.append(found)
            descriptors.append(described)
            owners.append(np.full(len(described), number, np.int64))
        all_descriptors = np.vstack(descriptors) if descriptors else np.zeros((0, 32), np.uint8)
        vocabulary = fit_vocabulary(all_descriptors) if len(all_descriptors) else np.zeros((1, 32), np.uint8)
        words = _nearest_words(all_descriptors, _bits(vocabulary))
        return cls(names, np.vstack(points) if points else np.zeros((0, 2), np.float32), all_descriptors,
                   np.concatenate(owners) if owners else np.zeros(0, np.int64), words, vocabulary, details)

    # -- the index file ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        def pack(array: np.ndarray) -> str:
            return base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), 9)).decode("ascii")

        # Points in 1/16 px (at most 4095.9 px): exact enough for a 4 px RANSAC tolerance.
        return {"format": FORMAT, "count": int(len(self.descriptors)), "words": int(len(self.vocabulary)),
                "points": pack(np.round(self.points * 16).astype(np.uint16)), "descriptors": pack(self.descriptors),
                "owners": pack(self.owners.astype(np.uint32)), "assigned": pack(self.words.astype(np.uint16)),
                "vocabulary": pack(self.vocabulary)}

    @classmethod
    def from_json(cls, data: Any, names: list[str], details: np.ndarray | None = None) -> LocalFeatureIndex:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"unknown local-feature format {data.get('format') if isinstance(data, dict) else data!r}")

        def unpack(key: str, dtype: Any, width: int) -> np.ndarray:
            raw = zlib.decompress(base64.b64decode(data[key], validate=True))
            return np.frombuffer(raw, dtype=dtype).reshape(-1, width) if width > 1 else np.frombuffer(raw, dtype=dtype)

        count, words = int(data["count"]), int(data["words"])
        points = unpack("points", np.uint16, 2).astype(np.float32) / 16
        descriptors, owners = unpack("descriptors", np.uint8, 32), unpack("owners", np.uint32, 1).astype(np.int64)
        assigned, vocabulary = unpack("assigned", np.uint16, 1).astype(np.int64), unpack("vocabulary", np.uint8, 32)
        if not (len(points) == len(descriptors) == len(owners) == len(assigned) == count and len(vocabulary) == words):
            raise ValueError("sizes do not agree")
        return cls(names, points, descriptors, owners, assigned, vocabulary, details)

    # -- search -------------------------------------------------------------------------------------

    def nearest_many(self, images: Sequence[Image.Image | np.ndarray]) -> list[LocalMatch | None]:
        """For each image, the training image whose drawing it shows best under one affine map
        (in either orientation), or None when no candidate gives a map at all. (Two images at a
        time in threads was slower on the project's 2-core machines: 12-16 against 11 ms an image.)"""
        return [self._nearest(image) for image in images]

    def _nearest(self, image: Image.Image | np.ndarray) -> LocalMatch | None:
        if not self.names or not len(self.descriptors):
            return None
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        best: LocalMatch | None = None
        for mirrored in (False, True):
            query = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else pil
            points, descriptors, grey = describe(query, QUERY_FEATURES, QUERY_MIN_SIDE, QUERY_MAX_SIDE)
            if len(descriptors) < 8:
                continue
            for found in self._verify(points, descriptors, grey, self._candidates(descriptors), mirrored):
                if best is None or (found.agreement * found.visible, found.inliers) > (best.agreement * best.visible, best.inliers):
                    best = found
        return best

    def _candidates(self, descriptors: np.ndarray) -> np.ndarray:
        words = _nearest_words(descriptors, self._vocabulary_bits)
        vector = np.bincount(words, minlength=len(self.vocabulary)).astype(np.float32) * self._idf
        scores = self._vectors @ (vector / max(float(np.linalg.norm(vector)), 1e-9))
        keep = min(CANDIDATES, len(self.names))
        top = np.argpartition(-scores, keep - 1)[:keep]
        return top[np.argsort(-scores[top], kind="stable")]

    def _verify(self, points: np.ndarray, descriptors: np.ndarray, grey: np.ndarray, candidates: np.ndarray,
                mirrored: bool) -> list[LocalMatch]:
        """The query's descriptors matched against all the candidates' at once, so that Lowe's
        ratio test compares each with its nearest rival in any of them: a structure that several
        training drawings share (a face's round outline, a flag's stripes) is ambiguous and counts
        for none. Then, per candidate, an affine map fitted to its matches with RANSAC."""
        cv2 = _cv2()
        spans = [(int(self._bounds[c]), int(self._bounds[c + 1])) for c in candidates]
        rows = np.concatenate([np.arange(start, end) for start, end in spans]) if spans else np.zeros(0, np.int64)
        if len(rows) < 2:
            return []
        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors, self.descriptors[rows], k=2)
        good = [first for first, second in (p for p in pairs if len(p) == 2)
                if first.distance < RATIO * second.distance and first.distance <= MAX_DESCRIPTOR_DISTANCE]
        found: list[LocalMatch] = []
        owners = self.owners[rows]
        by_owner: dict[int, list[Any]] = {}
        for match in good:
            by_owner.setdefault(int(owners[match.trainIdx]), []).append(match)
        for candidate, matches in by_owner.items():
            if len(matches) < 6:
                continue
            source = np.float32([points[m.queryIdx] for m in matches])
            target = np.float32([self.points[rows[m.trainIdx]] for m in matches])
            transform, inliers = cv2.estimateAffine2D(source, target, method=cv2.RANSAC,
                                                      ransacReprojThreshold=RANSAC_PIXELS, maxIters=500,
                                                      confidence=0.99, refineIters=10)
            if transform is None or inliers is None:
                continue
            singular = np.linalg.svd(transform[:, :2], compute_uv=False)
            if (singular.min() < 1 / SCALES[1] or singular.max() > 1 / SCALES[0]
                    or singular.max() / singular.min() > MAX_ANISOTROPY):
                continue
            visible, agreement = self._agreement(grey, transform, candidate)
            found.append(LocalMatch(self.names[candidate], int(inliers.sum()), visible, mirrored, agreement))
        return found

    def _agreement(self, grey: np.ndarray, transform: np.ndarray, candidate: int) -> tuple[float, float]:
        """The query laid onto the training image by the fitted map and compared on the 64-cell grey
        thumbnail the index keeps, block by block (8 x 8 cells), by their structure (each cell less
        the mean of its 5 x 5 neighbourhood: edges and corners, not flat fills). Returns the share of
        the training drawing's structured blocks that the query shows at all (not off its edge, not
        left blank white), and the share of those that agree: correlated and of like strength. A copy
        under a sticker agrees everywhere but under the sticker; two drawings that share a frame (the
        disc of every face) differ inside it, where most of their structure is."""
        cv2 = _cv2()
        if self.details is None:
            return 0.0, 0.0
        # Laid onto the training image's 256 px, then averaged down to 64 cells as the thumbnail was
        # (sampling straight at 64 would alias every sharp edge); outside the query reads as white.
        full = (INDEX_SIDE, INDEX_SIDE)
        warped = cv2.warpAffine(grey, transform, full, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=255)
        shown = cv2.warpAffine(np.full(grey.shape, 255, np.uint8), transform, full, flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        size = (DETAIL_SIDE, DETAIL_SIDE)
        small = cv2.resize(warped, size, interpolation=cv2.INTER_AREA)
        query = _structure(small)
        training = _structure(self.details[candidate])
        shown_cells = cv2.resize(shown, size, interpolation=cv2.INTER_AREA) > 250
        blocks = DETAIL_SIDE // BLOCK

        def per_block(array: np.ndarray) -> np.ndarray:
            return array.reshape(blocks, BLOCK, blocks, BLOCK).swapaxes(1, 2).reshape(blocks * blocks, BLOCK * BLOCK)

        q, r = per_block(query), per_block(training)
        energy_q, energy_r = (q * q).sum(axis=1), (r * r).sum(axis=1)
        # A block the query leaves blank white says nothing either way: the margin of a crop or a
        # turn, or the white that the query's edge was filled with. Every other block of the
        # training drawing's structure is shown, and must agree.
        blank = (energy_q <= BLOCK_ENERGY) & (per_block(small).min(axis=1) >= WHITE)
        whole = per_block(shown_cells).all(axis=1) & ~blank
        drawn = energy_r > BLOCK_ENERGY
        if not drawn.any():
            return 0.0, 0.0
        structured = drawn & whole
        visible = float(structured.sum() / drawn.sum())
        if not structured.any():
            return visible, 0.0
        correlation = (q * r).sum(axis=1) / np.sqrt(np.maximum(energy_q * energy_r, 1e-6))
        strength = np.minimum(energy_q, energy_r) / np.maximum(np.maximum(energy_q, energy_r), 1e-6)
        agree = structured & (correlation >= BLOCK_CORRELATION) & (strength >= BLOCK_STRENGTH)
        return visible, float(agree.sum() / structured.sum())


def _structure(thumb: np.ndarray) -> np.ndarray:
    """Each cell less the mean of its 5 x 5 neighbourhood: edges and corners, not flat fills. (The
    near-copy search's smoother band, a difference of blurs, let the disc that every drawing of a
    kind shares outweigh what differs inside it: other drawings agreed as well as copies.)"""
    cv2 = _cv2()
    values = thumb.astype(np.float32)
    return values - cv2.blur(values, (5, 5), borderType=cv2.BORDER_REPLICATE)
