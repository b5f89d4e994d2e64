"""Every command the docs show works exactly as written.

Sources: README.md (fenced and indented code blocks, trailing ``# comments`` and ``\\`` continuations
included, ``run:`` lines of YAML blocks, and inline code spans, which may wrap over a line break), the
leading comment block of the Snakefile and of every ``config/*.yaml``. A command is any text starting
with ``snakemake``, ``python -m harness`` or (README only) ``make``; ``[...]`` marks an optional part
(both forms are checked). One test case per (file, command):

- ``snakemake ...``: run as written with `` -n`` appended (a dry run: the DAG must build), in a copy
  of the working tree (no results, reports or .snakemake), so the checkout is never touched. A
  command whose config names ``${HARNESS_WEIGHTS}`` (config/paper.yaml) runs with HARNESS_WEIGHTS
  pointed at tiny checkpoints from ``python -m harness fixtures`` (built once per session) and with
  ``data`` in the copy holding the pinned prompt files and a COCO val2017 folder (the preflight of
  a paper run checks they exist; a dry run reads no image).
- ``python -m harness ...``: parsed with :func:`harness.cli.build_parser` (every subcommand and
  option exists), the config it names loaded, and ``--help`` run through ``python -m harness``; the
  cheap checks (``validate``, ``preflight``) also run for real. The others need a GPU, real weights,
  earlier outputs or minutes of CPU (timecost, scorer-speed, regression --update-golden,
  humaneval-simulate, ...).
- ``make X``: ``make -n X`` exits 0, and every snakemake command it would run dry-runs.

A test per file checks that the extraction found its commands (a minimum number, and one command per
``snakemake``/``python -m harness`` mention in the text), so a parser break cannot empty the suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_data_dir

BIN = Path(sys.executable).parent  # the venv's bin: its snakemake and python run the commands
TIMEOUT = 600

#: the extraction must find at least this many commands per file (after de-duplication)
MIN_COMMANDS = {
    "README.md": 15,
    "Snakefile": 2,
    "config/paper.yaml": 1,
    "config/timecost.yaml": 2,
    "config/thresholds.yaml": 2,
    "config/thresholds.paper.yaml": 1,
}
#: subcommands cheap enough to run for real (no model is loaded)
RUN_FOR_REAL = {"validate", "preflight"}

# ---- extraction ------------------------------------------------------------------------------------

_SPAN = re.compile(r"`([^`]+)`")
_SHELL_FENCES = {"", "bash", "sh", "shell", "console", "text"}


@dataclass(frozen=True)
class DocCommand:
    file: str  # relative to the repository root
    line: int
    text: str  # as written, whitespace collapsed

    @property
    def kind(self) -> str:
        return "harness" if self.text.startswith("python -m harness") else self.text.split()[0]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _norm(text: str) -> str:
    return " ".join(text.split())


def _is_command(text: str, allow_make: bool = True) -> bool:
    return (text.startswith(("snakemake ", "python -m harness "))
            or (allow_make and re.fullmatch(r"make( [\w.-]+)+", text) is not None))


def _shell_commands(code: str) -> list[str]:
    code = re.sub(r"^\s*\$\s+", "", code)
    return [c for part in code.split("&&") if _is_command(c := _norm(part))]


def _split_comment(line: str) -> tuple[str, str]:
    """``cmd   # comment`` -> (cmd, comment); a ``#`` inside a word is not a comment."""
    m = re.search(r"(?:^|\s)#", line)
    return (line[: m.start()], line[m.end():]) if m else (line, "")


def _span_commands(text: str, allow_make: bool = True) -> list[str]:
    return [c for span in _SPAN.findall(text) if _is_command(c := _norm(span), allow_make)]


def readme_commands(path: Path, rel: str = "README.md") -> list[DocCommand]:
    lines = path.read_text().splitlines()
    found: list[DocCommand] = []
    paragraph: list[tuple[int, str]] = []

    def flush() -> None:  # inline code spans of one prose paragraph (a span may wrap a line)
        text = "\n".join(t for _, t in paragraph)
        for m in _SPAN.finditer(text):
            if _is_command(c := _norm(m.group(1))):
                found.append(DocCommand(rel, paragraph[0][0] + text.count("\n", 0, m.start()), c))
        paragraph.clear()

    fence: str | None = None
    i = 0
    while i < len(lines):
        n, line = i + 1, lines[i]
        i += 1
        m = re.match(r"\s*(```|~~~)\s*(\S*)", line)
        if m:
            flush()
            fence = None if fence is not None else m.group(2).lower()
            continue
        indented = fence is None and re.match(r"( {4,}|\t)\S", line) is not None
        if fence is None and not indented:
            if line.strip():
                paragraph.append((n, line))
            else:
                flush()
            continue
        flush()
        if fence in ("yaml", "yml"):
            m = re.match(r"\s*(?:-\s*)?run:\s*(.+)$", line)
            found += [DocCommand(rel, n, c) for c in _shell_commands(m.group(1).strip("'\""))] if m else []
            continue
        if fence is not None and fence not in _SHELL_FENCES:
            continue
        while line.rstrip().endswith("\\") and i < len(lines):  # continuation lines
            line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
        code, comment = _split_comment(line)
        found += [DocCommand(rel, n, c) for c in _shell_commands(code)]
        found += [DocCommand(rel, n, c) for c in _span_commands(comment)]
    flush()
    return found


def header_lines(path: Path) -> list[tuple[int, str]]:
    """The leading comment block: (line number, text without the '#')."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith("#"):
            break
        out.append((n, line.lstrip("#").strip()))
    return out


def header_commands(path: Path, rel: str) -> list[DocCommand]:
    found = []
    for n, text in header_lines(path):
        found += [DocCommand(rel, n, c) for c in _span_commands(text, allow_make=False)]
        rest = _SPAN.sub(" ` ", text)
        for m in re.finditer(r"(?:^|(?<=[\s(:]))(?:snakemake|python -m harness)\s", rest):
            # prose around a command: "(cmd)", "cmd, and ...", "cmd    (comment)", "cmd."
            cmd = re.split(r"\s{2,}|\)|,\s|\s\(|\s#|`", rest[m.start():], maxsplit=1)[0].strip().rstrip(".")
            found.append(DocCommand(rel, n, _norm(cmd)))
    return found


def doc_files() -> list[str]:
    return ["README.md", "Snakefile", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").glob("*.yaml"))]


def extract(rel: str) -> list[DocCommand]:
    path = ROOT / rel
    return readme_commands(path, rel) if rel == "README.md" else header_commands(path, rel)


def doc_region(rel: str) -> str:
    """The text the extraction reads (README: all of it; others: the header comment)."""
    path = ROOT / rel
    return path.read_text() if rel == "README.md" else "\n".join(t for _, t in header_lines(path))


def mentions(text: str) -> list[str]:
    """Every snakemake / python -m harness command mentioned in the text, however written."""
    from harness.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    harness = "|".join(re.escape(s) for s in sorted(subcommands, key=len, reverse=True))
    pattern = rf"\bsnakemake\s+(?:--?[a-zA-Z]|[\w./-]*/)|\bpython -m harness\s+(?:{harness}|--version)\b"
    return re.findall(pattern, text)


def _expand_optional(cmd: DocCommand) -> list[DocCommand]:
    """``a [--b c]`` -> ``a`` and ``a --b c``."""
    if "[" not in cmd.text:
        return [cmd]
    bare = _norm(re.sub(r"\[[^\]]*\]", " ", cmd.text))
    full = _norm(cmd.text.replace("[", " ").replace("]", " "))
    return [DocCommand(cmd.file, cmd.line, bare), DocCommand(cmd.file, cmd.line, full)]


def collect() -> list[DocCommand]:
    cases, seen = [], set()
    for rel in doc_files():
        for cmd in extract(rel):
            for case in _expand_optional(cmd):
                if (case.file, case.text) not in seen:
                    seen.add((case.file, case.text))
                    cases.append(case)
    return cases


CASES = collect()


def _cases(kind: str):
    selected = [c for c in CASES if c.kind == kind]
    return pytest.mark.parametrize("cmd", selected, ids=[c.id for c in selected])


# ---- environment -----------------------------------------------------------------------------------


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n in ("__pycache__", ".pytest_cache") or n.endswith(".egg-info")}
    if Path(folder).resolve() == ROOT:
        skip |= {n for n in names if n in (".git", ".venv", "results", ".snakemake", "data", "annotations",
                                           "build", ".whl", ".gl") or n.startswith("results-")}
    if Path(folder).resolve() == ROOT / "reports":
        skip |= {n for n in names if n != "golden"}
    return skip


@pytest.fixture
def repo(tmp_path) -> Path:
    """A copy of the working tree without outputs: the commands run here, never in the checkout."""
    dst = tmp_path / "repo"
    shutil.copytree(ROOT, dst, ignore=_ignore, symlinks=True)
    return dst


@dataclass(frozen=True)
class PaperFixtures:
    weights: Path
    data: Path
    root: Path  # what `python -m harness fixtures --out` wrote (paper-tiny.yaml beside weights/ and data/)


@pytest.fixture(scope="session")
def paper_fixtures(tmp_path_factory):
    """``python -m harness fixtures`` once per session, and a data folder a paper-profile run accepts."""
    from harness.cli import build_parser

    src = shared_data_dir()
    if src is None:
        pytest.skip("prompt data not found: set HARNESS_TEST_DATA or place shared/data beside the checkout")
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    if "fixtures" not in subcommands:
        pytest.fail("`python -m harness fixtures` does not exist: the paper-profile doc commands cannot be "
                    "checked without the tiny checkpoints it writes")
    out = tmp_path_factory.mktemp("doc-fixtures")
    proc = subprocess.run([sys.executable, "-m", "harness", "fixtures", "--out", str(out), "--data-dir", str(src)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"python -m harness fixtures failed (exit {proc.returncode}):\n{_tail(proc)}")

    # paper.yaml evaluates every COCO-5k caption; the fixtures hold a few val2017 images, so the
    # others are links to them: the preflight checks that each file exists, a dry run reads none.
    from harness.fixtures import DATA_FILES
    from harness.prompts import load_prompts, reference_images

    data = out / "doc-data"
    for rel in DATA_FILES:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).symlink_to(out / "data" / rel)
    made = sorted((out / "data" / "coco" / "val2017").iterdir())
    assert made, "the fixtures wrote no COCO val2017 images"
    (data / "coco" / "val2017").mkdir()
    for ref in reference_images("coco5k", data, load_prompts("coco5k", data, None)):
        own = out / "data" / "coco" / "val2017" / ref.name
        ref.symlink_to(own if own.is_file() else made[0])
    yield PaperFixtures(out / "weights", data, out)
    shutil.rmtree(out, ignore_errors=True)  # 1 GB of checkpoints


def _env(weights: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):  # when the suite itself runs under make
        env.pop(var, None)
    if weights is not None:
        env["HARNESS_WEIGHTS"] = str(weights)
    return env


def _tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-n:])


def _config_files(argv: list[str], option: str) -> list[str]:
    """The values of ``option`` as argparse collects them (``--configfile`` takes several)."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(option + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == option:
            for value in argv[i + 1:]:
                if value.startswith("-"):
                    break
                values.append(value)
    return values


def _needs_weights(config_files: list[str]) -> bool:
    """A config that reads weights from ${HARNESS_WEIGHTS} (config/paper.yaml) needs the fixtures."""
    return any((ROOT / f).is_file() and "HARNESS_WEIGHTS" in (ROOT / f).read_text() for f in config_files)


def _use_fixtures(repo: Path, request) -> Path:
    fx: PaperFixtures = request.getfixturevalue("paper_fixtures")
    (repo / "data").symlink_to(fx.data, target_is_directory=True)
    return fx.weights


def _prepare(repo: Path, argv: list[str], config_files: list[str]) -> None:
    """Documented preconditions: the human-evaluation import reads the filled sheets (README: the
    annotators put their CSVs into humaneval.annotations_dir before this command)."""
    if not any("humaneval/results" in a for a in argv if not a.startswith("-")):
        return
    import yaml

    from harness.config import validate_config

    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    for f in config_files:
        if (repo / f).is_file() and f.endswith((".yaml", ".yml")):
            cfg = yaml.safe_load((repo / f).read_text())
    folder = repo / validate_config(cfg)["humaneval"]["annotations_dir"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "annotator-01.csv").write_text("placeholder: a dry run reads no sheet\n")


_DRY_RUNS: dict[tuple[str, bool], tuple[int, str]] = {}  # one dry run per distinct command


def dry_run(command: str, repo: Path, request) -> tuple[int, str]:
    argv = shlex.split(command)
    config_files = _config_files(argv, "--configfile") + _config_files(argv, "--configfiles")
    paper = _needs_weights(config_files)
    key = (command, paper)
    if key not in _DRY_RUNS:
        weights = _use_fixtures(repo, request) if paper else None
        if any(f.startswith("fixtures/") for f in config_files):  # README: `python -m harness fixtures --out fixtures`
            (repo / "fixtures").symlink_to(request.getfixturevalue("paper_fixtures").root, target_is_directory=True)
        _prepare(repo, argv, config_files)
        proc = subprocess.run(command + " -n", shell=True, cwd=repo, env=_env(weights), capture_output=True,
                              text=True, timeout=TIMEOUT)
        _DRY_RUNS[key] = (proc.returncode, _tail(proc))
    return _DRY_RUNS[key]


def _assert_dry_run(command: str, rc: int, log: str) -> None:
    hint = ""
    if "configfile" in log.lower():
        hint = ("\nhint: --configfile takes several values and swallows what follows it: put the targets "
                "before --configfile")
    assert rc == 0, f"`{command} -n` exited {rc}:\n{log}{hint}"
    assert "This was a dry-run" in log or "Nothing to be done" in log, f"`{command} -n` planned nothing:\n{log}"


# ---- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", doc_files())
def test_extraction_finds_every_command(rel):
    found = extract(rel)
    assert len({c.text for c in found}) >= MIN_COMMANDS.get(rel, 0), (
        f"{rel}: the extraction found only {[c.text for c in found]}; expected at least {MIN_COMMANDS[rel]}")
    shown = mentions(doc_region(rel))
    extracted = [c for c in found if c.kind in ("snakemake", "harness")]
    assert len(extracted) == len(shown), (
        f"{rel}: {len(shown)} snakemake / python -m harness commands are mentioned but {len(extracted)} were "
        f"extracted ({[c.text for c in extracted]}); write the command in a code block or a `code span`")


def test_extraction_reads_each_form(tmp_path):
    """The README forms the extraction must handle: trailing comments, continuations, wrapped spans."""
    text = (
        "```bash\nmake demo   # builds `make setup` first\n```\n\n"
        "    snakemake --cores all \\\n        reports/table1.md   # a comment\n\n"
        "Run `python -m harness scorer-speed --out\nr.md [--scale small]` or `snakemake --cores all r2.md`.\n\n"
        "```yaml\n      - run: make test && make regression\n```\n"
    )
    path = tmp_path / "README.md"
    path.write_text(text)
    got = [(c.line, c.text) for c in readme_commands(path)]
    assert got == [
        (2, "make demo"), (2, "make setup"), (5, "snakemake --cores all reports/table1.md"),
        (8, "python -m harness scorer-speed --out r.md [--scale small]"), (9, "snakemake --cores all r2.md"),
        (12, "make test"), (12, "make regression"),
    ], got


@_cases("snakemake")
def test_snakemake_command_dry_runs(cmd, repo, request):
    argv = shlex.split(cmd.text)
    swallowed = [f for f in _config_files(argv, "--configfile") + _config_files(argv, "--configfiles")
                 if not f.endswith((".yaml", ".yml", ".json"))]
    assert not swallowed, (f"`{cmd.text}`: --configfile takes several values, so {swallowed} is read as a config "
                           "file, not a target: put the targets before --configfile")
    if "profiles/slurm" in argv and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        message = "the SLURM executor (extra `slurm`) is not installed: `make setup-slurm`"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"`{cmd.text}`: {message} (.ci/run installs it before the tests)")
        pytest.skip(message)
    if argv[1:] == ["--lint"]:  # runs for real: it executes nothing
        proc = subprocess.run(cmd.text, shell=True, cwd=repo, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, _tail(proc)
        return
    if "--report" in argv:  # needs a finished run: the workflow test runs exactly this after one
        workflow_test = (ROOT / "tests" / "test_workflow.py").read_text()
        assert ", ".join(f'"{a}"' for a in argv[1:]) in workflow_test, (
            f"`{cmd.text}` is not what tests/test_workflow.py::test_report_contains_table1 runs after its DAG")
        return
    rc, log = dry_run(cmd.text, repo, request)
    _assert_dry_run(cmd.text, rc, log)


@_cases("harness")
def test_harness_command(cmd, repo, request):
    from harness.cli import build_parser
    from harness.config import load_config

    argv = shlex.split(cmd.text)[3:]
    if argv == ["--version"]:
        proc = subprocess.run(cmd.text, shell=True, cwd=repo, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0 and proc.stdout.startswith("cogview3-harness "), _tail(proc)
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`{cmd.text}`: the CLI rejects it:\n{err.getvalue()}")
    named = any(a == "--config" or a.startswith("--config=") for a in argv)
    if named:
        load_config(ROOT / args.config)  # exists and passes the schema
    if args.command in RUN_FOR_REAL:
        weights = _use_fixtures(repo, request) if _needs_weights([args.config]) else None
        proc = subprocess.run(cmd.text, shell=True, cwd=repo, env=_env(weights), capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert proc.returncode == 0, f"`{cmd.text}` exited {proc.returncode}:\n{_tail(proc)}"
    else:  # the module entry point resolves from the repository root and knows the subcommand
        proc = subprocess.run(f"python -m harness {args.command} --help", shell=True, cwd=repo, env=_env(),
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, _tail(proc)


@_cases("make")
def test_make_command(cmd, repo, request):
    assert shutil.which("make"), "make is not installed"
    proc = subprocess.run(cmd.text.replace("make", "make -n", 1), shell=True, cwd=repo, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"`{cmd.text}`: make -n exited {proc.returncode}:\n{_tail(proc)}"
    for line in proc.stdout.splitlines():  # the snakemake commands the target runs
        m = re.match(r"\S*/?snakemake\s+(.*)$", line.strip())
        if m:
            command = f"snakemake {m.group(1)}"
            rc, log = dry_run(command, repo, request)
            _assert_dry_run(f"{command}` (from `{cmd.text}", rc, log)
