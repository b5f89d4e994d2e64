"""The micro world: scenes of coloured shapes, their renderer, a caption grammar over them, the training
stream and the held-out evaluation prompts.

**Scenes.** 1 to 4 objects, each a shape (circle, square, apex-up isosceles triangle whose base equals its
height), a colour, a size and a position, on a white background that is plain or lightly textured (grey
noise or stripes, every channel in [228, 255]). Positions and extents are fractions of the image side, so a
scene renders at any resolution. An object's *extent* is the side of its bounding square: small objects
span 0.18-0.22 of the image, large ones 0.32-0.36. Objects keep ``BORDER`` from the edges and a gap of at
least ``GAP`` between bounding squares (the sampler rejects other placements), so no two objects touch at
any resolution the judge is exact on.

**Colours.** The six corners of the RGB cube that are neither black nor white: red, green, blue, yellow,
magenta, cyan. Any two of them are at least 255 apart (euclidean, 0-255 units) and each is at least 255
from white and from black, so a pixel is assigned by its nearest reference colour with a decision boundary
at least 127 away from every colour, and the background (white, texture >= 228) is never nearer to a
colour than to white. No other six RGB colours are as far from each other and from white.

**Captions.** A caption names *every* object of its scene (counts are exact; unnamed attributes are
drawn at random), in one of seven categories after DrawBench's: Colors, Shapes, Counting, Positional,
Composition, Rare Words (the same templates with rare synonyms: "a crimson orb") and Descriptions (long
multi-clause captions). :func:`parse` turns a caption back into its :class:`CaptionSpec` from the text
alone; the judge (:mod:`harness.micro.judge`) checks an image against that.

**Data.** The evaluation prompts (:func:`evaluation_prompts`, benchmark ``micro-drawbench``) are drawn
from ``EVAL_SEED`` with :class:`random.Random` and are the same on every machine; the training stream
(:func:`training_pair`, :func:`training_pairs`) is a function of (seed, index) and never yields an
evaluation caption (the held-out unit is the caption string: a paraphrase of an evaluation meaning may
occur in training, as the rare-word category needs).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from harness.errors import HarnessError

# ---- the world's vocabulary ------------------------------------------------------------------------------

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
#: the bounding-square side of each size, as a fraction of the image side (drawn uniformly in the range)
EXTENTS: dict[str, tuple[float, float]] = {"small": (0.18, 0.22), "large": (0.32, 0.36)}
#: relation -> (axis, sign): "A left of B" means A's centre is less than B's on x
RELATIONS: dict[str, tuple[int, int]] = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "stripes")
#: the darkest background value: texture stays this close to white (distance <= 47 from it, >= 255 from a colour)
TEXTURE_FLOOR = 228
MAX_OBJECTS = 4
BORDER = 0.04  # least distance of an object's bounding square from the image edge
GAP = 0.06  # least gap between two objects' bounding squares (2 px at 32x32)
#: the sampler places related objects at least this far apart (centres, along the relation's axis);
#: the judge asks for ``harness.micro.judge.RELATION_MARGIN`` (0.10), so a rendered scene passes with room
RELATION_SEPARATION = 0.25
SUPERSAMPLE = 4  # anti-aliasing: shapes are drawn at 4x and box-filtered down

COMMON_COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
RARE_COUNT_WORDS = {2: "a pair of", 3: "a trio of", 4: "a quartet of"}
RARE_COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "green": ("emerald", "viridian"),
    "blue": ("azure", "cobalt"),
    "yellow": ("citrine", "saffron"),
    "magenta": ("fuchsia",),
    "cyan": ("turquoise",),
}
RARE_SHAPE_WORDS: dict[str, tuple[str, ...]] = {"circle": ("orb", "roundel"), "square": ("quadrate",), "triangle": ("trigon",)}
RARE_SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("diminutive", "minuscule"), "large": ("colossal", "gargantuan")}
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}

CATEGORIES: tuple[str, ...] = ("Colors", "Shapes", "Counting", "Positional", "Composition", "Rare Words", "Descriptions")

#: bump when the renderer, the grammar or the training stream changes: caches of training latents are keyed by it
WORLD_VERSION = "micro-world/1"
#: the evaluation set: this many prompts per category, drawn from EVAL_SEED (changing either changes the benchmark)
EVAL_PER_CATEGORY = 32
EVAL_SEED = 20240317


# ---- scenes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    extent: float  # side of the bounding square, fraction of the image side
    x: float  # centre of the bounding square, fraction of the width (0 = left)
    y: float  # fraction of the height (0 = top)

    def box(self) -> tuple[float, float, float, float]:
        h = self.extent / 2
        return self.x - h, self.y - h, self.x + h, self.y + h


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str = "plain"
    texture_seed: int = 0


@dataclass(frozen=True)
class ObjectPhrase:
    """``count`` objects with the given attributes; None: the caption leaves that attribute open."""

    count: int = 1
    colour: str | None = None
    shape: str | None = None
    size: str | None = None

    def matches(self, shape: str, colour: str, size: str) -> bool:
        return ((self.colour is None or self.colour == colour) and (self.shape is None or self.shape == shape)
                and (self.size is None or self.size == size))

    def overlaps(self, other: "ObjectPhrase") -> bool:
        """Whether one object could match both phrases (then their exact counts would contradict)."""
        return all(a is None or b is None or a == b for a, b in
                   ((self.colour, other.colour), (self.shape, other.shape), (self.size, other.size)))


@dataclass(frozen=True)
class Relation:
    subject: int  # index into CaptionSpec.objects
    predicate: str  # a key of RELATIONS
    object: int


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption asserts: these object groups and nothing else, and optionally one relation between
    two single-object groups."""

    objects: tuple[ObjectPhrase, ...]
    relation: Relation | None = None

    @property
    def total(self) -> int:
        return sum(p.count for p in self.objects)


class CaptionError(HarnessError):
    """A caption outside the micro-world grammar."""

    def __init__(self, caption: str, why: str):
        super().__init__(f"caption {caption!r} is outside the micro-world grammar: {why} "
                         "(the micro-world judge reads only captions harness.micro.world writes)")


def seeded_rng(*parts: object) -> random.Random:
    """A generator determined by ``parts`` alone (sha256 of their text: no hash(), no global state)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _separated(a: SceneObject, b: SceneObject) -> bool:
    ax0, ay0, ax1, ay1 = a.box()
    bx0, by0, bx1, by1 = b.box()
    return ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0


def _relation_holds(a: SceneObject, b: SceneObject, predicate: str, separation: float) -> bool:
    axis, sign = RELATIONS[predicate]
    delta = (b.x - a.x, b.y - a.y)[axis]  # a left of b: b is right of a by at least `separation`
    return -sign * delta >= separation


_PLACEMENT_TRIES = 200
_SCENE_TRIES = 500


def scene_for(spec: CaptionSpec, rng: random.Random, background: str | None = None) -> Scene:
    """A scene that satisfies ``spec``: exactly its objects (open attributes drawn at random), related objects
    ``RELATION_SEPARATION`` apart on the relation's axis, no two objects closer than ``GAP``."""
    if spec.total > MAX_OBJECTS or spec.total < 1:
        raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, the spec names {spec.total}")
    kinds = []  # (group index, shape, colour, size, extent)
    for g, phrase in enumerate(spec.objects):
        for _ in range(phrase.count):
            size = phrase.size or rng.choice(SIZES)
            kinds.append((g, phrase.shape or rng.choice(SHAPES), phrase.colour or rng.choice(COLOURS), size,
                          rng.uniform(*EXTENTS[size])))
    background = background or rng.choice(BACKGROUNDS)
    texture_seed = rng.getrandbits(32)
    for _ in range(_SCENE_TRIES):
        placed: list[SceneObject] = []
        for _g, shape, colour, size, extent in kinds:
            low, high = BORDER + extent / 2, 1 - BORDER - extent / 2
            for _ in range(_PLACEMENT_TRIES):
                obj = SceneObject(shape, colour, size, extent, rng.uniform(low, high), rng.uniform(low, high))
                if all(_separated(obj, other) for other in placed):
                    placed.append(obj)
                    break
            else:
                break
        if len(placed) < len(kinds):
            continue
        rel = spec.relation
        if rel is not None:
            first = [i for i, k in enumerate(kinds) if k[0] == rel.subject][0]
            second = [i for i, k in enumerate(kinds) if k[0] == rel.object][0]
            if not _relation_holds(placed[first], placed[second], rel.predicate, RELATION_SEPARATION):
                continue
        return Scene(tuple(placed), background, texture_seed)
    raise RuntimeError(f"no placement found for {spec} in {_SCENE_TRIES} tries")  # not reached for grammar specs


# ---- rendering -------------------------------------------------------------------------------------------


def background_array(scene: Scene, size: int) -> np.ndarray:
    """The background alone, (size, size, 3) float: white, grey noise or grey stripes, all >= TEXTURE_FLOOR."""
    if scene.background == "plain":
        return np.full((size, size, 3), 255.0)
    gen = np.random.Generator(np.random.PCG64(scene.texture_seed))
    if scene.background == "noise":
        grey = gen.integers(TEXTURE_FLOOR, 256, (size, size)).astype(np.float64)
    elif scene.background == "stripes":
        period = max(2, round(size / 8))
        index = np.arange(size) // (period // 2 or 1) % 2
        values = np.where(index == 0, 255.0, 238.0)
        grey = np.broadcast_to(values[:, None] if gen.integers(2) else values[None, :], (size, size)).copy()
    else:
        raise ValueError(f"unknown background {scene.background!r}; known: {', '.join(BACKGROUNDS)}")
    return np.repeat(grey[:, :, None], 3, axis=2)


def render(scene: Scene, size: int) -> Image.Image:
    """The scene as a ``size`` x ``size`` RGB image (16 <= size <= 256), anti-aliased by 4x supersampling."""
    if not isinstance(size, int) or not 16 <= size <= 256:
        raise ValueError(f"render size must be an integer from 16 to 256, got {size!r}")
    big = size * SUPERSAMPLE
    colour = Image.new("RGB", (big, big), (0, 0, 0))
    coverage = Image.new("L", (big, big), 0)
    paint, mask = ImageDraw.Draw(colour), ImageDraw.Draw(coverage)
    for obj in scene.objects:
        # pixel i covers [i, i+1): a box [x0, x1) in image fractions covers pixels x0*big .. x1*big - 1
        x0, y0, x1, y1 = (round(v * big) for v in obj.box())
        rgb = PALETTE[obj.colour]
        for draw, fill in ((paint, rgb), (mask, 255)):
            if obj.shape == "circle":
                draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
            elif obj.shape == "square":
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
            elif obj.shape == "triangle":
                draw.polygon(((x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)), fill=fill)
            else:
                raise ValueError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")
    # Box-filtering both gives premultiplied colour and coverage: objects never overlap, so one layer holds them.
    premultiplied = np.asarray(colour.reduce(SUPERSAMPLE), dtype=np.float64)
    alpha = np.asarray(coverage.reduce(SUPERSAMPLE), dtype=np.float64)[:, :, None] / 255.0
    out = premultiplied + background_array(scene, size) * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


# ---- writing captions ------------------------------------------------------------------------------------


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def phrase_text(phrase: ObjectPhrase, rng: random.Random, rare: bool = False) -> str:
    """``a small red circle``, ``three blue squares``; with ``rare``, rare synonyms (``a trio of cobalt quadrates``)."""
    words = []
    if phrase.size:
        words.append(rng.choice(RARE_SIZE_WORDS[phrase.size]) if rare else phrase.size)
    if phrase.colour:
        words.append(rng.choice(RARE_COLOUR_WORDS[phrase.colour]) if rare else phrase.colour)
    shape = rng.choice(RARE_SHAPE_WORDS[phrase.shape]) if rare else phrase.shape
    words.append(shape if phrase.count == 1 else shape + "s")
    if phrase.count == 1:
        return " ".join([_article(words[0]), *words])
    return " ".join([(RARE_COUNT_WORDS if rare else COMMON_COUNT_WORDS)[phrase.count], *words])


def _list_text(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption_text(spec: CaptionSpec, rng: random.Random, style: str = "plain") -> str:
    """The caption of ``spec`` in ``style``: ``plain``, ``rare`` (rare synonyms) or ``description`` (long form)."""
    rare = style == "rare"
    phrases = [phrase_text(p, rng, rare) for p in spec.objects]
    rel = spec.relation
    if style == "description":
        if rel is None:
            raise ValueError("a description names a relation")
        subject, obj = spec.objects[rel.subject], spec.objects[rel.object]
        return (f"a picture containing exactly {COMMON_COUNT_WORDS[spec.total]} objects: {_list_text(phrases)}; "
                f"the {subject.colour} {subject.shape} is {RELATION_WORDS[rel.predicate]} the {obj.colour} {obj.shape}")
    if rel is not None:
        if len(spec.objects) != 2 or (rel.subject, rel.object) != (0, 1):
            raise ValueError("a positional caption relates its first object to its second")
        return f"{phrases[0]} {RELATION_WORDS[rel.predicate]} {phrases[1]}"
    return _list_text(phrases)


# ---- the categories --------------------------------------------------------------------------------------


def _maybe_size(rng: random.Random) -> str | None:
    return rng.choice((None, *SIZES))


def _colors(rng: random.Random) -> tuple[CaptionSpec, str]:
    """One object whose colour is the point, or two or three of one shape told apart by colour."""
    n = rng.choice((1, 2, 2, 3))
    if n == 1:
        return CaptionSpec((ObjectPhrase(1, rng.choice(COLOURS), rng.choice(SHAPES), _maybe_size(rng)),)), "plain"
    shape = rng.choice(SHAPES)
    return CaptionSpec(tuple(ObjectPhrase(1, c, shape) for c in rng.sample(COLOURS, n))), "plain"


def _shapes(rng: random.Random) -> tuple[CaptionSpec, str]:
    """One to three objects of different shapes named by shape (and maybe size) only; colours are open."""
    n = rng.choice((1, 2, 2, 3))
    return CaptionSpec(tuple(ObjectPhrase(1, None, s, _maybe_size(rng)) for s in rng.sample(SHAPES, n))), "plain"


def _counting(rng: random.Random) -> tuple[CaptionSpec, str]:
    colour = rng.choice((None, *COLOURS))
    return CaptionSpec((ObjectPhrase(rng.randint(2, MAX_OBJECTS), colour, rng.choice(SHAPES), _maybe_size(rng)),)), "plain"


def _distinct_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` different (colour, shape) pairs."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    return rng.sample(pairs, n)


def _positional(rng: random.Random) -> tuple[CaptionSpec, str]:
    (c1, s1), (c2, s2) = _distinct_pairs(rng, 2)
    predicate = rng.choice(tuple(RELATIONS))
    return CaptionSpec((ObjectPhrase(1, c1, s1), ObjectPhrase(1, c2, s2)), Relation(0, predicate, 1)), "plain"


def _composition(rng: random.Random) -> tuple[CaptionSpec, str]:
    """Two or three objects, each binding its own colour and its own shape (all colours and shapes differ)."""
    n = rng.choice((2, 3))
    colours, shapes = rng.sample(COLOURS, n), rng.sample(SHAPES, n)
    return CaptionSpec(tuple(ObjectPhrase(1, c, s) for c, s in zip(colours, shapes))), "plain"


def _rare_words(rng: random.Random) -> tuple[CaptionSpec, str]:
    """A Colors, Counting, Positional or Composition caption written with rare synonyms only."""
    spec, _ = rng.choice((_colors, _counting, _positional, _composition))(rng)
    return spec, "rare"


def _descriptions(rng: random.Random) -> tuple[CaptionSpec, str]:
    """A long caption: two or three fully described groups (one may be a pair), their total, and a relation
    between two single objects."""
    n = rng.choice((2, 3))
    counts = [1] * n
    if rng.random() < 0.5:  # one group becomes a pair, keeping two single objects to relate and <= 4 objects
        counts[rng.randrange(n)] = 2
    singles = [i for i, c in enumerate(counts) if c == 1]
    if len(singles) < 2:
        counts, singles = [1] * n, list(range(n))
    pairs = _distinct_pairs(rng, n)
    groups = tuple(ObjectPhrase(k, c, s, rng.choice(SIZES)) for k, (c, s) in zip(counts, pairs))
    subject, obj = rng.sample(singles, 2)
    return CaptionSpec(groups, Relation(subject, rng.choice(tuple(RELATIONS)), obj)), "description"


CATEGORY_SAMPLERS: dict[str, Callable[[random.Random], tuple[CaptionSpec, str]]] = {
    "Colors": _colors,
    "Shapes": _shapes,
    "Counting": _counting,
    "Positional": _positional,
    "Composition": _composition,
    "Rare Words": _rare_words,
    "Descriptions": _descriptions,
}


def sample_caption(category: str, rng: random.Random) -> tuple[str, CaptionSpec]:
    """A caption of ``category`` and what it asserts."""
    spec, style = CATEGORY_SAMPLERS[category](rng)
    return caption_text(spec, rng, style), spec


# ---- parsing captions ------------------------------------------------------------------------------------


def _vocabulary() -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """word -> canonical colour, singular shape, plural shape, size (common and rare words)."""
    colours = {c: c for c in COLOURS} | {w: c for c, ws in RARE_COLOUR_WORDS.items() for w in ws}
    singular = {s: s for s in SHAPES} | {w: s for s, ws in RARE_SHAPE_WORDS.items() for w in ws}
    plural = {w + "s": s for w, s in singular.items()}
    sizes = {s: s for s in SIZES} | {w: s for s, ws in RARE_SIZE_WORDS.items() for w in ws}
    return colours, singular, plural, sizes


_COLOUR_WORDS, _SINGULAR_WORDS, _PLURAL_WORDS, _SIZE_WORDS = _vocabulary()
_COUNT_PREFIXES = sorted(
    [(w, n) for n, w in COMMON_COUNT_WORDS.items()] + [(w, n) for n, w in RARE_COUNT_WORDS.items()] + [("a", 1), ("an", 1)],
    key=lambda item: -len(item[0]))  # "a pair of" before "a"
_RELATION_PATTERN = "|".join(re.escape(w) for w in sorted(RELATION_WORDS.values(), key=len, reverse=True))
_RELATION_BY_WORDS = {w: r for r, w in RELATION_WORDS.items()}
_DESCRIPTION = re.compile(rf"a picture containing exactly (?P<total>\w+) objects: (?P<list>.+); "
                          rf"the (?P<subject>.+?) is (?P<relation>{_RELATION_PATTERN}) the (?P<object>.+)")
_POSITIONAL = re.compile(rf"(?P<subject>.+?) (?P<relation>{_RELATION_PATTERN}) (?P<object>.+)")


def _parse_phrase(text: str, caption: str) -> ObjectPhrase:
    for prefix, count in _COUNT_PREFIXES:
        if text.startswith(prefix + " "):
            words = text[len(prefix) + 1:].split(" ")
            break
    else:
        raise CaptionError(caption, f"{text!r} does not start with a count ('a', 'two', 'a pair of', ...)")
    size = _SIZE_WORDS.get(words[0]) if len(words) > 1 else None
    words = words[1:] if size else words
    colour = _COLOUR_WORDS.get(words[0]) if len(words) > 1 else None
    words = words[1:] if colour else words
    shapes = _SINGULAR_WORDS if count == 1 else _PLURAL_WORDS
    if len(words) != 1 or words[0] not in shapes:
        number = "singular" if count == 1 else "plural"
        raise CaptionError(caption, f"{text!r} is not [size] [colour] shape with a {number} shape word "
                                    f"({', '.join(sorted(shapes))})")
    return ObjectPhrase(count, colour, shapes[words[0]], size)


def _parse_list(text: str, caption: str) -> tuple[ObjectPhrase, ...]:
    return tuple(_parse_phrase(part, caption) for part in re.split(r", | and ", text))


def _reference(text: str, groups: tuple[ObjectPhrase, ...], caption: str) -> int:
    """The group a description's ``the <colour> <shape>`` names (one single object)."""
    words = text.split(" ")
    if len(words) != 2 or words[0] not in _COLOUR_WORDS or words[1] not in _SINGULAR_WORDS:
        raise CaptionError(caption, f"'the {text}' does not name an object as 'the <colour> <shape>'")
    colour, shape = _COLOUR_WORDS[words[0]], _SINGULAR_WORDS[words[1]]
    found = [i for i, g in enumerate(groups) if g.colour == colour and g.shape == shape]
    if len(found) != 1 or groups[found[0]].count != 1:
        raise CaptionError(caption, f"'the {text}' must name exactly one single object of the list")
    return found[0]


def parse(caption: str) -> CaptionSpec:
    """What ``caption`` asserts, from its text alone (case, surrounding space and a final '.' are ignored);
    a :class:`CaptionError` naming the caption for text outside the grammar."""
    if not isinstance(caption, str):
        raise CaptionError(str(caption), f"expected a string, got {type(caption).__name__}")
    text = " ".join(caption.strip().lower().removesuffix(".").split())
    if not text:
        raise CaptionError(caption, "it is empty")
    relation = None
    if m := _DESCRIPTION.fullmatch(text):
        groups = _parse_list(m["list"], caption)
        totals = {w: n for n, w in COMMON_COUNT_WORDS.items()}
        if totals.get(m["total"]) != sum(g.count for g in groups):
            raise CaptionError(caption, f"'exactly {m['total']} objects' disagrees with the list, which names "
                                        f"{sum(g.count for g in groups)}")
        relation = Relation(_reference(m["subject"], groups, caption), _RELATION_BY_WORDS[m["relation"]],
                            _reference(m["object"], groups, caption))
    elif m := _POSITIONAL.fullmatch(text):
        groups = (_parse_phrase(m["subject"], caption), _parse_phrase(m["object"], caption))
        if any(g.count != 1 for g in groups):
            raise CaptionError(caption, "a relation holds between single objects ('a red circle above a blue square')")
        relation = Relation(0, _RELATION_BY_WORDS[m["relation"]], 1)
    else:
        groups = _parse_list(text, caption)
    spec = CaptionSpec(groups, relation)
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            if a.overlaps(b):
                raise CaptionError(caption, f"one object could be both {a} and {b}, so their counts contradict; "
                                            "name groups that differ in colour, shape or size")
    if relation is not None and relation.subject == relation.object:
        raise CaptionError(caption, "an object cannot be related to itself")
    if spec.total > MAX_OBJECTS:
        raise CaptionError(caption, f"it names {spec.total} objects; a scene holds at most {MAX_OBJECTS}")
    return spec


# ---- evaluation set and training stream ------------------------------------------------------------------


@lru_cache(maxsize=1)
def evaluation_prompts() -> tuple[tuple[str, str, str], ...]:
    """(id, caption, category) of the held-out evaluation set, ``EVAL_PER_CATEGORY`` per category in
    ``CATEGORIES`` order, all captions different; the same on every machine."""
    rng = random.Random(EVAL_SEED)
    seen: set[str] = set()
    rows = []
    for category in CATEGORIES:
        drawn = 0
        for _ in range(100 * EVAL_PER_CATEGORY):
            text, _spec = sample_caption(category, rng)
            if text not in seen:
                seen.add(text)
                rows.append((f"md{len(rows):03d}", text, category))
                drawn += 1
                if drawn == EVAL_PER_CATEGORY:
                    break
        else:
            raise RuntimeError(f"category {category!r} has fewer than {EVAL_PER_CATEGORY} different captions")
    return tuple(rows)


@lru_cache(maxsize=1)
def evaluation_captions() -> frozenset[str]:
    return frozenset(text for _, text, _ in evaluation_prompts())


def training_pair(seed: int, index: int) -> tuple[str, Scene]:
    """Training example ``index`` of stream ``seed``: a caption of a category drawn uniformly (never an
    evaluation caption) and a scene it describes. A function of (seed, index) only, so any worker or a
    resumed run draws the same example."""
    rng = seeded_rng("micro-train", seed, index)
    held_out = evaluation_captions()
    while True:
        text, spec = sample_caption(rng.choice(CATEGORIES), rng)
        if text not in held_out:
            return text, scene_for(spec, rng)


def training_pairs(seed: int, start: int = 0) -> Iterator[tuple[str, Scene]]:
    """``training_pair(seed, i)`` for i = start, start + 1, ... (endless)."""
    index = start
    while True:
        yield training_pair(seed, index)
        index += 1


def evaluation_scene(caption: str, seed: int = 0) -> Scene:
    """A ground-truth scene for ``caption`` (what a perfect generator could draw), a function of (caption, seed)."""
    return scene_for(parse(caption), seeded_rng("micro-eval-scene", caption, seed))
