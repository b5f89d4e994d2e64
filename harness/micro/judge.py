"""The micro world's analytic judge: read an image back into objects and check a caption's clauses.

**Reading an image** (:func:`detect`). Every pixel goes to its nearest reference colour among the six
palette colours, white and black (euclidean RGB). A pixel nearest to a palette colour and within
``MAX_COLOUR_DISTANCE`` of it is that colour; everything else (white, texture, black, greys, far-off hues) is
background. For an anti-aliased edge between a colour and white this keeps exactly the pixels at least half
covered, so areas and extents are unbiased. Pixels of one colour form objects by 4-connectivity
(scipy.ndimage.label); components smaller than ``MIN_AREA`` of the image (0.4 x the smallest object the
world draws) are specks and dropped. Each object gets:

- a shape from its soft coverage (each pixel weighted by how much of it the colour covers, against the
  local background): ``fill`` = area / (widest row x tallest column) (square 1, circle pi/4, triangle 1/2)
  and the skewness of its mass over rows (circle and square 0, apex-up triangle -0.566); a box far from
  square (aspect outside [0.7, 1.43]: two objects run together, a smear) or mass piled at the top is shape
  ``unknown``, which matches no shape word;
- a size from its larger box side: ``small`` below ``SIZE_THRESHOLD`` (0.27, midway between the world's
  0.22 and 0.32) of the image side, else ``large``;
- a position: its box centre, as a fraction of width and height (the world's object position).

**Clauses** (:func:`clauses`). A caption names every object of its scene, so it asserts:

- one *count* clause per object group: exactly ``count`` detected objects match the group's colour, shape
  and size (the ones it names);
- one *total* clause: exactly ``total`` objects in all (no unnamed extras);
- for a relation, one *relation* clause: some object of the first group and some of the second have centres
  at least ``RELATION_MARGIN`` (0.10 of the image) apart in the relation's direction (left/right: x only;
  above/below: y only).

An image's score is the fraction of its caption's clauses that hold; *exact* means all hold.

Exact on ground-truth renders from ``SMALLEST_EXACT_SIZE`` x ``SMALLEST_EXACT_SIZE`` up (measured by
tests/test_micro_world.py over every evaluation caption); below it, pixel rounding starts to blur small
triangles into circles.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import pi

import numpy as np
from PIL import Image

from harness.micro.world import (
    EXTENTS,
    PALETTE,
    RELATIONS,
    CaptionSpec,
    ObjectPhrase,
    Scene,
    parse,
)

#: bump when any rule below changes: scorer fingerprints carry it, so old scores stop matching
JUDGE_VERSION = "micro-judge/1"

_REFERENCE_NAMES = (*PALETTE, "white", "black")
_REFERENCE_RGB = np.array([*PALETTE.values(), (255, 255, 255), (0, 0, 0)], dtype=np.float64)
_PALETTE_COUNT = len(PALETTE)
#: a palette pixel this far from its colour or further is background (half the 255 between palette colours
#: is 127.5; 150 also keeps a half-covered edge over the darkest texture, which lies 159 from the colour)
MAX_COLOUR_DISTANCE = 150.0
#: the smallest object the world draws is a small triangle, 0.5 * 0.18^2 = 0.0162 of the image
MIN_AREA = 0.4 * 0.5 * EXTENTS["small"][0] ** 2
SIZE_THRESHOLD = (EXTENTS["small"][1] + EXTENTS["large"][0]) / 2
RELATION_MARGIN = 0.10
ASPECT_LIMIT = 1.43  # widest row / tallest column beyond this either way: two objects run together, a smear
#: shape thresholds, each midway between the two shapes' ideal values: fill square 1, circle pi/4, triangle 1/2
#: (the widest row of a pixelised triangle is short of its base, so its fill runs higher: 0.55-0.77 at 32 px);
#: skewness of the mass over rows: circle and square 0, apex-up triangle -2*sqrt(2)/5 = -0.566
SQUARE_FILL = (1 + pi / 4) / 2
CIRCLE_FILL = (pi / 4 + 0.5) / 2
TRIANGLE_SKEW = -np.sqrt(2) / 5
SMALLEST_EXACT_SIZE = 32


@dataclass(frozen=True)
class DetectedObject:
    colour: str
    shape: str  # a world shape or "unknown"
    size: str
    x: float  # box centre, fraction of the width
    y: float  # fraction of the height
    area: float = 0.0  # fraction of the image
    fill: float = 0.0
    skew: float = 0.0  # skewness of the mass over rows (apex-up triangle -0.566)


@dataclass(frozen=True)
class Clause:
    kind: str  # count, total or relation
    text: str
    holds: bool


@dataclass(frozen=True)
class Verdict:
    caption: str
    clauses: tuple[Clause, ...]
    objects: tuple[DetectedObject, ...]

    @property
    def score(self) -> float:
        """The fraction of clauses that hold."""
        return sum(c.holds for c in self.clauses) / len(self.clauses)

    @property
    def exact(self) -> bool:
        return all(c.holds for c in self.clauses)


def colour_labels(rgb: np.ndarray) -> np.ndarray:
    """(H, W) int: the palette index of each object pixel of an (H, W, 3) RGB array, -1 for background."""
    distance = np.linalg.norm(rgb[:, :, None, :] - _REFERENCE_RGB[None, None], axis=-1)
    nearest = distance.argmin(axis=-1)
    near_enough = np.take_along_axis(distance, nearest[:, :, None], axis=-1)[:, :, 0] < MAX_COLOUR_DISTANCE
    return np.where((nearest < _PALETTE_COUNT) & near_enough, nearest, -1)


def classify_shape(fill: float, skew: float, aspect: float) -> str:
    """circle, square, triangle or unknown, from fill (area / (widest row x tallest column)), the skewness of
    the mass over rows and the aspect (widest row / tallest column)."""
    if not 1 / ASPECT_LIMIT <= aspect <= ASPECT_LIMIT:
        return "unknown"
    if skew <= TRIANGLE_SKEW:
        return "triangle" if fill < SQUARE_FILL else "unknown"
    if abs(skew) >= -TRIANGLE_SKEW:
        return "unknown"  # mass piled at the top: no world shape
    if fill >= SQUARE_FILL:
        return "square"
    return "circle" if fill >= CIRCLE_FILL else "unknown"


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
_SQUARE = np.ones((3, 3), dtype=bool)


def coverage(pixels: np.ndarray, colour: np.ndarray, background: np.ndarray) -> np.ndarray:
    """How much of each pixel ``colour`` covers, if the pixel is a blend of it and ``background``
    (the projection onto the line between them, clipped to [0, 1])."""
    towards = background - colour
    c = ((background - pixels) @ towards) / float(towards @ towards)
    return np.clip(c, 0.0, 1.0)


def _features(rgb: np.ndarray, labels: np.ndarray, component: np.ndarray,
              index: int) -> tuple[float, float, float, float, float, float]:
    """(area, width, height, skew, centre x, centre y) of one component, in pixels, from soft coverage.

    The hard mask keeps pixels at least half covered, and a half-covered pixel at a circle's pole or a
    triangle's apex makes its rows or columns a pixel longer; so the component is widened by one pixel
    (not into another colour's pixels) and every pixel counts by its coverage, measured against the
    median of the pixels around it (white, or the local texture)."""
    from scipy import ndimage

    region = ndimage.binary_dilation(component, _SQUARE) & ((labels == -1) | component)
    ring = ndimage.binary_dilation(region, _SQUARE) & ~region & (labels == -1)
    background = np.median(rgb[ring], axis=0) if ring.any() else np.full(3, 255.0)
    cover = np.where(region, coverage(rgb, _REFERENCE_RGB[index], background), 0.0)
    cover[component] = np.maximum(cover[component], 0.5)  # a kept pixel is at least half covered
    area = float(cover.sum())
    rows, cols = cover.sum(axis=1), cover.sum(axis=0)
    y, x = np.arange(len(rows)) + 0.5, np.arange(len(cols)) + 0.5
    mean_y, mean_x = float(rows @ y / area), float(cols @ x / area)
    var = float(rows @ (y - mean_y) ** 2 / area)
    skew = float(rows @ (y - mean_y) ** 3 / area / var ** 1.5) if var > 0 else 0.0
    return area, float(rows.max()), float(cols.max()), skew, mean_x, mean_y


def detect(image: Image.Image) -> list[DetectedObject]:
    """The objects in ``image``, top to bottom, then left to right (by centre)."""
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    labels = colour_labels(rgb)
    height, width = labels.shape
    objects = []
    for index, colour in enumerate(PALETTE):
        components, _count = ndimage.label(labels == index)  # 4-connectivity
        for number, (slice_y, slice_x) in enumerate(ndimage.find_objects(components), start=1):
            # the box, 3 pixels wider each way (room for the widened region and its ring), within the image
            y0, y1 = max(slice_y.start - 3, 0), min(slice_y.stop + 3, height)
            x0, x1 = max(slice_x.start - 3, 0), min(slice_x.stop + 3, width)
            component = components[y0:y1, x0:x1] == number  # its own pixels: another may share the box
            if component.sum() < MIN_AREA * height * width:
                continue
            area, box_w, box_h, skew, cx, cy = _features(rgb[y0:y1, x0:x1], labels[y0:y1, x0:x1], component, index)
            fill = area / (box_w * box_h)
            size = "small" if max(box_w / width, box_h / height) < SIZE_THRESHOLD else "large"
            objects.append(DetectedObject(colour, classify_shape(fill, skew, box_w / box_h), size,
                                          (x0 + cx) / width, (y0 + cy) / height, area / (height * width), fill, skew))
    return sorted(objects, key=lambda o: (o.y, o.x))


def scene_objects(scene: Scene) -> list[DetectedObject]:
    """What a perfect reader would see in ``scene`` (clauses against these give the judge's ceiling and,
    across captions, its chance level)."""
    return [DetectedObject(o.colour, o.shape, o.size, o.x, o.y) for o in scene.objects]


def _phrase_words(phrase: ObjectPhrase) -> str:
    words = [w for w in (phrase.size, phrase.colour, phrase.shape) if w]
    return " ".join(words) + ("s" if phrase.count != 1 else "")


def clauses(spec: CaptionSpec, objects: list[DetectedObject]) -> tuple[Clause, ...]:
    """The caption's clauses, each checked against ``objects``."""
    matches = [[o for o in objects if p.matches(o.shape, o.colour, o.size)] for p in spec.objects]
    out = [Clause("count", f"exactly {p.count} {_phrase_words(p)}", len(m) == p.count)
           for p, m in zip(spec.objects, matches)]
    out.append(Clause("total", f"exactly {spec.total} objects in all", len(objects) == spec.total))
    rel = spec.relation
    if rel is not None:
        axis, sign = RELATIONS[rel.predicate]
        holds = any(-sign * ((b.x - a.x, b.y - a.y)[axis]) >= RELATION_MARGIN
                    for a in matches[rel.subject] for b in matches[rel.object] if a is not b)
        text = f"{_phrase_words(spec.objects[rel.subject])} {rel.predicate} {_phrase_words(spec.objects[rel.object])}"
        out.append(Clause("relation", text, holds))
    return tuple(out)


def judge(image: Image.Image, caption: str) -> Verdict:
    """The verdict on ``image`` for ``caption`` (a :class:`harness.micro.world.CaptionError` if the caption is
    outside the grammar)."""
    spec = parse(caption)
    objects = detect(image)
    return Verdict(caption, clauses(spec, objects), tuple(objects))


def colour_fidelity(image: Image.Image, caption: str) -> float:
    """The share of the image's object pixels (palette colours, as :func:`colour_labels` reads them) that are in a
    colour the caption names; 1 when it names none and something is drawn, 0 when nothing is drawn.

    The judge's clauses hold or fail whole (a count needs colour, shape and size right at once), so a model that
    draws the right colours as blobs scores as low as one that ignores the text. This is the graded reading of
    the attribute classifier-free guidance moves most directly (as GenEval and T2I-CompBench score colour on its
    own). Ground-truth renders of the evaluation captions score 1.000, with shuffled captions 0.455
    (tests/test_micro_world.py)."""
    spec = parse(caption)
    labels = colour_labels(np.asarray(image.convert("RGB"), dtype=np.float64))
    drawn = labels[labels >= 0]
    if not drawn.size:
        return 0.0
    named = [_REFERENCE_NAMES.index(p.colour) for p in spec.objects if p.colour is not None]
    if not named:
        return 1.0
    return float(np.isin(drawn, named).mean())
