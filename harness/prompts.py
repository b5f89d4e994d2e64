"""Prompt sets: DrawBench, PartiPrompts, COCO-5k (files pinned by sha256) and a built-in smoke set."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError


@dataclass(frozen=True)
class Prompt:
    id: str  # stable within its benchmark; image files and seeds are keyed by it
    text: str
    category: str = ""
    challenge: str = ""  # PartiPrompts only
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class PromptFile:
    relative: str
    sha256: str
    source: str  # where a user gets it


DRAWBENCH = PromptFile(
    "drawbench.csv",
    "bb80aa245d10307b3a21057f3079de91839cb30a7caa15619aa2ae96bafdc059",
    "the Imagen DrawBench sheet (200 prompts, columns prompt,category); a mirror is mwomick/VaReSynth data/DrawBench.csv",
)
PARTI = PromptFile(
    "parti_prompts.tsv",
    "fab29e41bb512a169b56acab4cf2a41dcb675e285df2efcde6640c7dd3c440eb",
    "google-research/parti PartiPrompts.tsv (byte-for-byte)",
)
COCO_CAPTIONS = PromptFile(
    "coco/coco_captions_val2017.jsonl",
    "2626659a163e0914004688ea8bd2879022996819497a4e264ea170b204ffe3c9",
    "COCO annotations/captions_val2017.json converted to one JSON object per caption (see README 'Prompt data')",
)

#: fixed seed of the one-caption-per-image draw for COCO-5k (independent of the run seed, so every
#: run and every user evaluates the same 5,000 captions)
COCO5K_CAPTION_SEED = 20240305

SMOKE_PROMPTS: tuple[tuple[str, str], ...] = (
    # Written for this project, after DrawBench's categories.
    ("A green apple next to a purple teapot on a white table.", "Colors"),
    ("A yellow bicycle leaning against a bright blue door.", "Colors"),
    ("Three red balloons floating above two orange kites.", "Counting"),
    ("Five wooden chairs arranged around a round table.", "Counting"),
    ('A shop sign that reads "OPEN LATE" in neon letters.', "Text"),
    ('A chalkboard with the words "relay diffusion" written on it.', "Text"),
    ("A cat sitting to the left of a dog, both facing the camera.", "Positional"),
    ("A cup on top of a book, which is under a desk lamp.", "Positional"),
    ("A quokka wearing tiny sunglasses on a sandy beach.", "Rare Words"),
    ("An axolotl swimming beside a nautilus shell.", "Rare Words"),
    ("A horse riding an astronaut across a desert.", "Conflicting"),
    ("A submarine flying above the clouds at sunset.", "Conflicting"),
    ("A photograph of a lighthouse on a cliff during a thunderstorm, long exposure.", "Descriptions"),
    ("An oil painting of a busy fish market in the morning light.", "Descriptions"),
    ("A bannana and a straberry on a ceramic plate.", "Misspellings"),
    ("A teddy bear made of glass, studio lighting.", "DALL-E"),
)

def _checked(data_dir: Path, spec: PromptFile, benchmark: str) -> Path:
    path = Path(data_dir) / spec.relative
    if not path.is_file():
        raise HarnessError(
            f"prompt set {benchmark!r}: file {path} not found; get {spec.source} and put it there, "
            "or point data_dir at the folder that holds it"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != spec.sha256:
        raise HarnessError(
            f"prompt set {benchmark!r}: file {path} has sha256 {digest}, expected {spec.sha256}; "
            f"it was altered or is another version: replace it with {spec.source}"
        )
    return path


def _drawbench(data_dir: Path) -> list[Prompt]:
    path = _checked(data_dir, DRAWBENCH, "drawbench")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [Prompt(f"{i:03d}", r["prompt"], r["category"]) for i, r in enumerate(rows)]


def _parti(data_dir: Path) -> list[Prompt]:
    path = _checked(data_dir, PARTI, "parti")
    with open(path, newline="", encoding="utf-8") as f:
        # Quoting off: 28 prompts contain '"' and default CSV quoting would eat them.
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if header[:3] != ["Prompt", "Category", "Challenge"]:
            raise HarnessError(f"prompt set 'parti': {path} has header {header}, expected Prompt, Category, Challenge, Note")
        rows = list(reader)
    out = []
    for i, row in enumerate(rows):
        if len(row) != 4:
            raise HarnessError(f"prompt set 'parti': {path} line {i + 2} has {len(row)} fields, expected 4")
        out.append(Prompt(f"{i:04d}", row[0], row[1], row[2], {"note": row[3]}))
    return out


def _coco5k(data_dir: Path) -> list[Prompt]:
    path = _checked(data_dir, COCO_CAPTIONS, "coco5k")
    by_image: dict[int, list[dict]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            by_image.setdefault(row["image_id"], []).append(row)
    rng = random.Random(COCO5K_CAPTION_SEED)
    out = []
    for image_id in sorted(by_image):
        caps = sorted(by_image[image_id], key=lambda r: r["caption_id"])
        pick = caps[rng.randrange(len(caps))]
        out.append(
            Prompt(
                f"{image_id:012d}",
                pick["caption"].strip(),
                extra={"file_name": pick["file_name"], "caption_id": pick["caption_id"]},
            )
        )
    return out


def _smoke(_data_dir: Path) -> list[Prompt]:
    return [Prompt(f"s{i:02d}", text, cat) for i, (text, cat) in enumerate(SMOKE_PROMPTS)]


def _coco_val2017_images(data_dir: Path, prompts: list[Prompt]) -> list[Path]:
    return [Path(data_dir) / "coco" / "val2017" / p.extra["file_name"] for p in prompts]


@dataclass(frozen=True)
class Benchmark:
    """A prompt set and the facts every report and rule reads about it."""

    name: str  # as in the config's ``benchmarks:`` list
    title: str  # as the tables print it
    load: Callable[[Path], list[Prompt]]
    #: prompt fields the per-category breakdowns group by
    category_fields: tuple[str, ...] = ()
    #: data_dir, prompts -> the reference image of each prompt (set metrics such as FID need them)
    references: Callable[[Path, list[Prompt]], list[Path]] | None = None
    #: the paper's tables that report this benchmark
    paper_tables: tuple[str, ...] = ()

    @property
    def has_references(self) -> bool:
        return self.references is not None


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("drawbench", "DrawBench", _drawbench, ("category",), paper_tables=("table1", "table3")),
    Benchmark("parti", "PartiPrompts", _parti, ("category", "challenge"), paper_tables=("table1",)),
    Benchmark("coco5k", "COCO-5k", _coco5k, references=_coco_val2017_images, paper_tables=("table2",)),
    Benchmark("smoke", "smoke set", _smoke, ("category",)),
)}


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise HarnessError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def load_prompts(name: str, data_dir: str | Path = "data", num_prompts: int | None = None) -> list[Prompt]:
    """The prompts of a benchmark in their canonical order, limited to the first ``num_prompts``."""
    prompts = benchmark(name).load(Path(data_dir))
    return prompts if num_prompts is None else prompts[:num_prompts]


def reference_images(name: str, data_dir: str | Path, prompts: list[Prompt]) -> list[Path]:
    """The reference image of each prompt (COCO-5k: its val2017 image), the set FID/KID compare with."""
    bench = benchmark(name)
    if bench.references is None:
        raise HarnessError(f"benchmark {name!r} has no reference images; set metrics (FID, KID) need a benchmark "
                           f"that has them: {', '.join(b for b, x in BENCHMARKS.items() if x.has_references)}")
    return bench.references(Path(data_dir), prompts)
