"""The install routes: the lock, the CUDA-driver route, and what a scorer needs at run time.

- The lock pins protobuf (a T5 folder as THUDM/CogVideoX-2b ships it has only spiece.model, which
  transformers 5 converts only with protobuf; without it the error is about tiktoken).
- pyproject's ranges, requirements/base.txt and requirements/constraints-cu126.txt agree with the lock.
- Every scorer module imports and every tiny scorer builds with the packages the lock dropped
  (datasets, pyarrow, clip-anytorch, ...) blocked, and with hpsv2x's clint blocked (checked in a
  subprocess with those modules set to None in sys.modules, so the test holds in a venv that still
  has them installed).
- A missing image-reward, or a missing run-time import of it, raises a HarnessError naming the exact
  pip command, and leaves no half-imported package behind.
- The CUDA route renders the exact pip command lines (``make -n``); download.pytorch.org cannot be
  reached from CI, so the +cu126 wheels themselves are not installed here (see constraints-cu126.txt).
- README's "Install on a CUDA machine" shows only these commands.

The real installs (the Makefile route and the ``pip install -c requirements/lock.txt -e .`` route, each in
a fresh venv: ``pip freeze`` equal to the lock) were run by hand; the ``slow`` test re-resolves the pip
route with ``pip install --dry-run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from harness import deps
from harness.errors import HarnessError
from tests.conftest import ROOT

REQ = ROOT / "requirements"
#: installed only so that an __init__ of image-reward / hpsv2x imports; the scorers import none of them
DROPPED = ("datasets", "pyarrow", "clip-anytorch", "multiprocess", "xxhash", "dill")
#: import names to block: the dropped packages, hpsv2x and its clint (the hpsv2 metrics run on open_clip),
#: pkg_resources (only clip needed it, hence the old setuptools<81 cap)
BLOCKED_IMPORTS = ("datasets", "pyarrow", "clip", "multiprocess", "xxhash", "dill", "hpsv2", "clint", "pkg_resources")
CUDA_RUNTIME = re.compile(r"^(nvidia-|cuda-)")
CUDA_VARIANTS = ("cu126",)


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements/constraints file: canonical name -> version."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}: {req.name} is pinned twice"
        pins[name] = spec.version
    return pins


def read_requirements(path: Path) -> list[Requirement]:
    return [Requirement(line.split("#", 1)[0].strip()) for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


LOCK = read_pins(REQ / "lock.txt")


def importlib_find(name: str):
    import importlib.util

    return importlib.util.find_spec(name)


def _python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---- the lock ------------------------------------------------------------------------------------


def test_lock_pins_protobuf_everywhere():
    assert "protobuf" in LOCK, "requirements/lock.txt lacks protobuf: T5 folders with only spiece.model fail to load"
    base = {canonicalize_name(r.name): r for r in read_requirements(REQ / "base.txt")}
    assert "protobuf" in base and base["protobuf"].specifier.contains(LOCK["protobuf"])
    ranges = {canonicalize_name(Requirement(d).name): Requirement(d) for d in pyproject()["dependencies"]}
    assert "protobuf" in ranges and ranges["protobuf"].specifier.contains(LOCK["protobuf"])


def test_installed_protobuf_is_the_locked_one():
    from importlib.metadata import version

    assert version("protobuf") == LOCK["protobuf"]


def test_protobuf_is_not_older_than_sentencepieces_generated_code():
    """transformers reads spiece.model through sentencepiece's sentencepiece_model_pb2, which refuses a
    protobuf runtime older than the protoc that generated it (sentencepiece 0.2.3: 7.36.1; 6.33.6 fails)."""
    import importlib.util

    source = Path(importlib.util.find_spec("sentencepiece.sentencepiece_model_pb2").origin).read_text()
    m = re.search(r"^# Protobuf Python Version: (\S+)$", source, re.M)
    if m is None:
        pytest.skip("this sentencepiece's generated code names no protobuf version")
    ranges = {canonicalize_name(Requirement(d).name): Requirement(d) for d in pyproject()["dependencies"]}
    assert Version(LOCK["protobuf"]) >= Version(m.group(1))
    floor = min(Version(s.version) for s in ranges["protobuf"].specifier if s.operator == ">=")
    assert floor >= Version(m.group(1)), f"pyproject admits protobuf {floor}, older than the gencode {m.group(1)}"


def test_t5_spiece_folder_converts_with_protobuf_and_not_without(tmp_path):
    """A folder with only spiece.model (as CogVideoX-2b's tokenizer/) loads; blocking protobuf breaks it."""
    import io

    import sentencepiece as spm
    from transformers import T5Tokenizer

    corpus = ["a photo of a red cat on a blue car", "a painting of a green dog under the sky",
              "the sign on the house by the river"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, model_type="unigram",
                                   vocab_size=30, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   minloglevel=2, num_threads=1)
    (tmp_path / "spiece.model").write_bytes(model.getvalue())
    tok = T5Tokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert len(tok) > 100 and tok("a red cat").input_ids[-1] == tok.eos_token_id  # 100 sentinels + the pieces

    proc = _python(f"""
        import sys
        sys.modules["google.protobuf"] = None
        from transformers import T5Tokenizer
        try:
            T5Tokenizer.from_pretrained({str(tmp_path)!r}, local_files_only=True)
        except Exception as err:
            print("FAILED", type(err).__name__, err)
        else:
            print("LOADED")
    """)
    assert "FAILED" in proc.stdout, proc.stdout + proc.stderr  # the failure mode the pin prevents


def test_pyproject_ranges_base_and_nodeps_admit_the_lock():
    project = pyproject()
    wanted = [Requirement(d) for d in project["dependencies"]]
    wanted += [Requirement(d) for extra in project["optional-dependencies"].values() for d in extra]
    wanted += read_requirements(REQ / "base.txt") + read_requirements(REQ / "nodeps.txt")
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in LOCK, f"{req} is not pinned in requirements/lock.txt"
        assert req.specifier.contains(LOCK[name], prereleases=True), f"{req} excludes the locked {name}=={LOCK[name]}"


def test_dropped_packages_stay_dropped():
    base = {canonicalize_name(r.name) for r in read_requirements(REQ / "base.txt")}
    ranges = {canonicalize_name(Requirement(d).name) for d in pyproject()["dependencies"]}
    for name in DROPPED:
        assert name not in LOCK and name not in base and name not in ranges, name


# ---- what the scorers import ----------------------------------------------------------------------


def test_every_scorer_imports_and_builds_without_the_dropped_packages():
    if importlib_find("ImageReward") is None:
        pytest.skip("image-reward is not installed (make setup installs it)")
    proc = _python(f"""
        import importlib, sys
        for name in {BLOCKED_IMPORTS!r}:
            sys.modules[name] = None  # an import of any of them now fails
        from harness.scorers.registry import SCORERS, build_scorer
        for module in sorted({{v.split(":")[0] for v in SCORERS.values()}}):
            importlib.import_module(module)
        for metric in SCORERS:
            build_scorer(metric, {{metric: "tiny"}}, "cpu", "float32").build()
        import ImageReward
        assert isinstance(ImageReward.ImageReward, type), ImageReward.ImageReward  # the model class, as upstream
        try:
            ImageReward.load
        except AttributeError as err:
            assert "imagereward_compat" in str(err), err
        else:
            raise AssertionError("ImageReward.load exists: the package __init__ ran")
        print("OK", sorted(m for m in ("ImageReward.ReFL", "ImageReward.utils", "diffusers") if m in sys.modules))
    """)
    assert proc.returncode == 0 and "OK []" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_missing_imagereward_names_the_install_command():
    proc = _python("""
        import sys
        sys.modules["ImageReward"] = None  # as if image-reward were not installed
        from harness.errors import HarnessError
        from harness.scorers.registry import build_scorer
        try:
            build_scorer("imagereward", {"imagereward": "tiny"}, "cpu", "float32").build()
        except HarnessError as err:
            print("HarnessError:", err)
    """)
    assert f"`{deps.INSTALL_NODEPS}`" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert "image-reward" in proc.stdout and "ModuleNotFoundError" not in proc.stdout + proc.stderr


def test_missing_imagereward_dependency_names_it_and_leaves_nothing_half_imported():
    if importlib_find("ImageReward") is None:
        pytest.skip("image-reward is not installed (make setup installs it)")
    proc = _python("""
        import sys
        sys.modules["fairscale"] = None  # image-reward's vit.py imports it at module level
        from harness.errors import HarnessError
        from harness.scorers.imagereward_compat import import_imagereward
        try:
            import_imagereward()
        except HarnessError as err:
            print("HarnessError:", err)
        print("left:", sorted(m for m in sys.modules if m.startswith("ImageReward")))
    """)
    assert "`pip install -c requirements/lock.txt fairscale`" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert "left: []" in proc.stdout


def test_install_commands_of_missing_modules():
    assert deps.install_command("ImageReward.models") == deps.INSTALL_NODEPS
    assert deps.install_command("hpsv2") == deps.INSTALL_NODEPS
    assert deps.install_command("google.protobuf") == "pip install -c requirements/lock.txt protobuf"
    deps.require("torch", "a test")
    with pytest.raises(HarnessError, match=re.escape("a test needs the Python package no_such_module_xyz")):
        deps.require("no_such_module_xyz.sub", "a test")


# ---- the CUDA-driver route -------------------------------------------------------------------------


def make_n(*args: str, venv: Path) -> subprocess.CompletedProcess:
    assert shutil.which("make"), "make is not installed"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "TORCH_CUDA")}
    return subprocess.run(["make", "-n", "setup", f"VENV={venv}", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def setup_lines(venv: Path, cuda: str | None) -> list[str]:
    """The command lines `make setup` must run (README "Install on a CUDA machine" shows them without make)."""
    pip, c = f"{venv}/bin/pip", f"requirements/constraints-{cuda}.txt" if cuda else "requirements/lock.txt"
    lines = [f"python3.11 -m venv {venv}"]
    if cuda:
        lines.append(f"{pip} install -q --no-deps --index-url https://download.pytorch.org/whl/{cuda} -c {c} "
                     "torch torchvision")
    return lines + [
        f"{pip} install -q -c {c} -r requirements/base.txt",
        f"{pip} install -q --no-deps -c {c} -r requirements/nodeps.txt",
        f"{pip} install -q --no-deps --no-build-isolation -e .",
        f"echo '{cuda or ''}' > {venv}/bin/.installed",
    ]


@pytest.mark.parametrize("cuda", [None, *CUDA_VARIANTS])
def test_make_setup_renders_the_route(tmp_path, cuda):
    venv = tmp_path / "venv"
    proc = make_n(*([f"TORCH_CUDA={cuda}"] if cuda else []), venv=venv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == setup_lines(venv, cuda)
    assert not venv.exists()


def test_make_setup_refuses_an_unknown_variant_and_a_switch(tmp_path):
    venv = tmp_path / "venv"
    proc = make_n("TORCH_CUDA=cu118", venv=venv)
    assert proc.returncode != 0 and "no requirements/constraints-cu118.txt" in proc.stderr
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / ".installed").write_text("\n")  # set up with PyPI's torch
    proc = make_n("TORCH_CUDA=cu126", venv=venv)
    assert proc.returncode != 0 and f"rm -rf {venv}" in proc.stderr
    assert make_n(venv=venv).returncode == 0  # an up-to-date or re-run setup on the same route is fine
    (venv / "bin" / ".installed").write_text("cu126\n")
    os.utime(venv / "bin" / ".installed", (0, 0))  # older than the requirements: make re-runs the setup ...
    assert make_n(venv=venv).stdout.splitlines() == setup_lines(venv, "cu126")  # ... on the stamp's route


@pytest.mark.parametrize("cuda", CUDA_VARIANTS)
def test_cuda_constraints_are_the_lock_with_torch_rebuilt(cuda):
    """Same versions as the lock, torch/torchvision with the +cuXXX tag, the CUDA 13 runtime left to torch."""
    pins = read_pins(REQ / f"constraints-{cuda}.txt")
    want = {n: v for n, v in LOCK.items() if not CUDA_RUNTIME.match(n)}
    want.update(torch=f"{LOCK['torch']}+{cuda}", torchvision=f"{LOCK['torchvision']}+{cuda}")
    assert pins == want
    for req in read_requirements(REQ / "base.txt"):  # base.txt's torch==2.14.1 admits 2.14.1+cu126
        name = canonicalize_name(req.name)
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    assert Version(pins["torch"]).local == cuda


# ---- README -----------------------------------------------------------------------------------------


def readme_install_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^#+ Install on a CUDA machine\s*$(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert m, "README.md has no 'Install on a CUDA machine' section"
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", m.group(1), re.M | re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def test_readme_install_section_shows_only_tested_commands():
    pip_lines = set()
    for cuda in (None, *CUDA_VARIANTS):  # the make route's pip lines, as a user types them in an active venv
        for line in setup_lines(Path(".venv"), cuda)[1:-1]:
            pip_lines.add(line.replace(".venv/bin/pip", "pip").replace(" -q", ""))
    allowed = {"make setup", "make test", "python3.11 -m venv .venv", ". .venv/bin/activate",
               deps.INSTALL_HARNESS, deps.INSTALL_NODEPS, deps.INSTALL_HARNESS.replace("-e .", '-e ".[test]"'),
               *{f"make setup TORCH_CUDA={c}" for c in CUDA_VARIANTS},
               'python -c "import torch; print(torch.__version__, torch.cuda.is_available())"'}
    for cuda in CUDA_VARIANTS:
        for cmd in (deps.INSTALL_HARNESS, deps.INSTALL_HARNESS.replace("-e .", '-e ".[test]"'), deps.INSTALL_NODEPS):
            allowed.add(cmd.replace("requirements/lock.txt", f"requirements/constraints-{cuda}.txt"))
    commands = readme_install_commands()
    assert len(commands) >= 6
    for cmd in commands:
        assert cmd in allowed | pip_lines, f"README shows an untested command: {cmd}"


# ---- slow: resolve the pip route for real -------------------------------------------------------------


@pytest.mark.slow
def test_pip_route_resolves_to_the_lock(tmp_path):
    """`pip install -c requirements/lock.txt -e ".[test,slurm]"` (dry run, ignoring what is installed) picks
    exactly the lock, less the two --no-deps packages: the lock pins every extra (`slurm`: the SLURM
    executor, `make setup-slurm`); ~30 s with the local package mirror."""
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--no-build-isolation", "--report", str(report), "-c", "requirements/lock.txt",
                           "-e", ".[test,slurm]"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    got.pop("cogview3-harness")
    nodeps = {canonicalize_name(r.name) for r in read_requirements(REQ / "nodeps.txt")}
    assert got == {n: v for n, v in LOCK.items() if n not in nodeps}
