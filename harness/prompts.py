"""Prompt sets: DrawBench, PartiPrompts, COCO-5k (files pinned by sha256), a built-in smoke set and the micro
world's held-out evaluation set (``micro-drawbench``, drawn in code from a fixed seed)."""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.errors import ConfigError, HarnessError


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
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise HarnessError(_line_ending_hint(path, data, spec, benchmark) or (
            f"prompt set {benchmark!r}: file {path} has sha256 {digest}, expected {spec.sha256}; "
            f"it was altered or is another version: replace it with {spec.source}"
        ))
    return path


_BOM = b"\xef\xbb\xbf"


def _line_ending_hint(path: Path, data: bytes, spec: PromptFile, benchmark: str) -> str | None:
    """The message for a pinned file whose sha256 differs because of Windows line endings or a
    UTF-8 byte-order mark (an editor or ``git config core.autocrlf=true`` adds them); None if it has neither."""
    crlf, bom = b"\r\n" in data, data.startswith(_BOM)
    if not (crlf or bom):
        return None
    what, fixes = [], []
    if crlf:
        what.append("Windows (CRLF) line endings")
        fixes.append(f"convert it to LF (`dos2unix {path}`, or `sed -i 's/\\r$//' {path}`; with git, set "
                     "core.autocrlf=false and check the file out again)")
    if bom:
        what.append("a UTF-8 byte-order mark (BOM) at its start")
        fixes.append(f"remove the BOM (`sed -i '1s/^\\xEF\\xBB\\xBF//' {path}`, or save it as UTF-8 without BOM)")
    fixed = data[len(_BOM):] if bom else data
    fixed = fixed.replace(b"\r\n", b"\n")
    if hashlib.sha256(fixed).hexdigest() == spec.sha256:
        outcome = "that is the only difference: converting restores the pinned file"
    else:
        outcome = (f"even converted it would not match the pinned sha256 {spec.sha256}, so it was also altered or is "
                   f"another version: replace it with {spec.source}")
    return (f"prompt set {benchmark!r}: file {path} has {' and '.join(what)}, so its sha256 differs from the pinned "
            f"one; {' and '.join(fixes)}; {outcome}")


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


def _micro_drawbench(_data_dir: Path) -> list[Prompt]:
    from harness.micro.world import evaluation_prompts  # built in code from a fixed seed: no data file

    return [Prompt(pid, text, category) for pid, text, category in evaluation_prompts()]


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
    #: the grammar its prompts are written in, for scorers that read captions analytically ("micro": the
    #: micro world's, which the micro_judge and micro_exact metrics parse); None for free text
    caption_grammar: str | None = None

    @property
    def has_references(self) -> bool:
        return self.references is not None


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("drawbench", "DrawBench", _drawbench, ("category",), paper_tables=("table1", "table3")),
    Benchmark("parti", "PartiPrompts", _parti, ("category", "challenge"), paper_tables=("table1",)),
    Benchmark("coco5k", "COCO-5k", _coco5k, references=_coco_val2017_images, paper_tables=("table2",)),
    Benchmark("smoke", "smoke set", _smoke, ("category",)),
    Benchmark("micro-drawbench", "micro-DrawBench", _micro_drawbench, ("category",),
              paper_tables=("table1", "table3"), caption_grammar="micro"),
)}

#: the prompt sets that ship with the harness; a custom set (config ``prompt_sets``) may not take their names
BUILTIN_BENCHMARKS: tuple[str, ...] = tuple(BENCHMARKS)


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


# ---- custom prompt sets (config ``prompt_sets``: name -> CSV or TSV file) ------------------------------

#: the longest prompt a custom set may hold, in characters. No text encoder the harness runs reads more than
#: 224 tokens (T5 in CogView3; CLIP reads 77), about 1,000 characters of English, so a longer prompt is almost
#: always a CSV quoting accident: an unbalanced '"' swallows the following lines into one field.
MAX_PROMPT_CHARS = 1000
#: ids become image file names ``<id>_<sample>.png``: only characters safe in file names on every system
MAX_ID_CHARS = 64
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
_SET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_REQUIRED_COLUMNS = ("id", "prompt")
_COLUMNS = ("id", "prompt", "category")
_COLUMNS_TEXT = "id, prompt and optionally category"


def _delimiter(path: Path, header_line: str) -> str:
    """Tab for .tsv, comma for .csv; otherwise whichever of the two the header line uses."""
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    return "\t" if "\t" in header_line and "," not in header_line else ","


def load_prompt_table(path: str | Path, name: str) -> list[Prompt]:
    """The prompts of a custom prompt set: a CSV (comma) or TSV (tab) file with a header row and the columns
    ``id``, ``prompt`` and optionally ``category``, in file order.

    The delimiter follows the suffix (.tsv: tab, .csv: comma) or, for any other suffix, the header line.
    CSV uses normal quoting; TSV is read with quoting off (a '"' in a prompt is kept as it is), like
    PartiPrompts. Encoding UTF-8, a byte-order mark is accepted; CRLF line endings are fine. Every problem
    is one :class:`HarnessError` naming the file and line.
    """
    path = Path(path)
    where = f"prompt set {name!r}: {path}"
    if not path.exists():
        raise HarnessError(f"{where} not found (a relative path is relative to the working directory, "
                           f"{Path.cwd()}); fix prompt_sets.{name} in the config or create the file")
    if path.is_dir():
        raise HarnessError(f"{where} is a folder; point prompt_sets.{name} at a CSV or TSV file with the columns "
                           f"{_COLUMNS_TEXT}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HarnessError(f"{where} cannot be read ({e.strerror or e}); check its permissions") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HarnessError(f"{where} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as "
                           "UTF-8 (in a spreadsheet: 'CSV UTF-8')") from None
    if not text.strip():
        raise HarnessError(f"{where} is empty; it needs a header row with the columns {_COLUMNS_TEXT} and one row "
                           "per prompt")

    delimiter = _delimiter(path, next(line for line in text.splitlines() if line.strip()))
    kind = "TSV" if delimiter == "\t" else "CSV"
    if delimiter == "\t":
        # Quoting off, as for PartiPrompts: quotes inside prompts are kept as they are.
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        # skipinitialspace: `a1, "a cat, a dog"` quotes its prompt as meant (without it the '"' would be text)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=",", skipinitialspace=True)

    def rows():
        """(first line, last line, fields) of each non-blank record."""
        while True:
            first = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise HarnessError(f"{where} line {reader.line_num}: cannot be read as {kind} ({e}); fix that line"
                                   ) from None
            if all(not f.strip() for f in row):
                continue  # a blank line (or a spreadsheet's empty row ",,")
            yield first, reader.line_num, row

    records = rows()
    first_record = next(records, None)
    if first_record is None:  # only empty fields, such as ",,"
        raise HarnessError(f"{where} is empty; it needs a header row with the columns {_COLUMNS_TEXT} and one row "
                           "per prompt")
    header_first, _, header = first_record
    columns = [c.strip().lower() for c in header]
    at = f"{where} line {header_first}"
    other = "," if delimiter == "\t" else "\t"
    if len(header) == 1 and other in header[0]:
        sep, suffix = ("tabs", ".tsv") if other == "\t" else ("commas", ".csv")
        raise HarnessError(f"{at}: the header {header[0]!r} is separated by {sep}, but the file is read as {kind}; "
                           f"rename it to end in {suffix}")
    seen_cols: set[str] = set()
    for c in columns:
        if c in seen_cols:
            raise HarnessError(f"{at}: column {c!r} appears twice in the header; keep one")
        seen_cols.add(c)
    unknown = [c for c in columns if c not in _COLUMNS]
    if unknown:
        hints = []
        for c in unknown:
            close = difflib.get_close_matches(c, _COLUMNS, n=1, cutoff=0.6)
            hints.append((f"{c!r}" if c else "an unnamed one (an empty header field)")
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise HarnessError(f"{at}: unknown column(s) {', '.join(hints)}; the header must name only the columns "
                           f"{_COLUMNS_TEXT}")
    missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise HarnessError(f"{at}: missing column(s) {', '.join(repr(c) for c in missing)} (the header is "
                           f"{delimiter.join(header)!r}); the header must name the columns {_COLUMNS_TEXT}, "
                           "and every id must be unique (ids name the image files)")
    i_id, i_prompt = columns.index("id"), columns.index("prompt")
    i_cat = columns.index("category") if "category" in columns else None

    prompts: list[Prompt] = []
    id_lines: dict[str, tuple[str, int]] = {}  # id, case-folded -> (id, line)
    for first, last, row in records:
        at = f"{where} line {first}"
        if len(row) != len(columns):
            if any("\n" in f or "\r" in f for f in row):
                quote = (f"the row runs over lines {first}-{last}: an unbalanced '\"' joins the following lines to "
                         "it; balance the quotes")
            elif delimiter == ",":
                quote = "quote a prompt that holds a comma: \"a cat, a dog\""
            else:
                quote = "a prompt may not hold a tab"
            raise HarnessError(f"{at}: {len(row)} fields, but the header has {len(columns)} columns "
                               f"({', '.join(columns)}); give every row one value per column ({quote})")
        pid = row[i_id].strip()
        text_ = row[i_prompt].strip()
        category = row[i_cat].strip() if i_cat is not None else ""
        if not pid:
            raise HarnessError(f"{at}: empty id; give every prompt a unique id (it names the image files)")
        if not _SAFE_ID.fullmatch(pid) or len(pid) > MAX_ID_CHARS:
            why = (f"{len(pid)} characters" if _SAFE_ID.fullmatch(pid) else
                   "characters other than A-Z a-z 0-9 . _ -")
            raise HarnessError(f"{at}: id {pid!r} cannot name an image file ({why}); ids become file names "
                               f"<id>_<sample>.png: use at most {MAX_ID_CHARS} of the characters A-Z a-z 0-9 . _ -")
        key = pid.casefold()
        if key in id_lines:
            prev, prev_line = id_lines[key]
            same = "" if prev == pid else (f" (as {prev!r}: ids that differ only in case name the same image "
                                           "file on macOS and Windows)")
            raise HarnessError(f"{at}: duplicate id {pid!r}, already on line {prev_line}{same}; make every id "
                               "unique")
        id_lines[key] = (pid, first)
        if not text_:
            raise HarnessError(f"{at}: empty prompt for id {pid!r}; write the prompt or remove the row")
        if len(text_) > MAX_PROMPT_CHARS:
            span = f" (it runs from line {first} to line {last})" if last > first else ""
            raise HarnessError(
                f"{at}: the prompt for id {pid!r} has {len(text_)} characters{span}, more than the "
                f"{MAX_PROMPT_CHARS} any text encoder here reads; this is almost always a quoting accident: an "
                "unbalanced '\"' swallows the following lines into one field. Balance the quotes (write a '\"' "
                "inside a quoted prompt as '\"\"') or shorten the prompt")
        if "\n" in text_ or "\r" in text_:
            raise HarnessError(
                f"{at}: the prompt for id {pid!r} runs over lines {first}-{last}; this is usually a quoting "
                "accident (an unbalanced '\"' joins the following lines to it): balance the quotes, or, if the "
                "line break is meant, replace it with a space")
        prompts.append(Prompt(pid, text_, category))
    if not prompts:
        raise HarnessError(f"{where} has a header but no prompts; add one row per prompt ({_COLUMNS_TEXT})")
    return prompts


def _table_loader(path: Path, name: str) -> Callable[[Path], list[Prompt]]:
    def load(_data_dir: Path) -> list[Prompt]:  # a custom set's path is its own; data_dir does not apply
        return load_prompt_table(path, name)

    return load


def register_prompt_sets(sets: dict[str, str]) -> None:
    """Make each custom prompt set (name -> CSV/TSV path) a benchmark; the file is read only when loaded.

    Registering a name again replaces its entry (so validating a config twice is fine). A built-in set's
    name, or a name that is not lowercase letters, digits, '_' and '-', is a :class:`ConfigError`.
    """
    for name, path in sets.items():
        key = f"config key 'prompt_sets.{name}'"
        if name in BUILTIN_BENCHMARKS:
            raise ConfigError(f"{key}: {name!r} is the name of a built-in prompt set "
                              f"({', '.join(BUILTIN_BENCHMARKS)}); pick another name for the custom set and list that "
                              "under benchmarks")
        if not isinstance(name, str) or not _SET_NAME.fullmatch(name):
            raise ConfigError(f"{key}: {name!r} is not a valid name; use lowercase letters, digits, '_' and '-', "
                              "starting with a letter or digit")
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ConfigError(f"{key}: expected the path of a CSV or TSV file, got {path!r}")
        BENCHMARKS[name] = Benchmark(name, name, _table_loader(Path(path), name), ("category",), None, ())
