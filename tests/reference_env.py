"""Runs reference code that cannot be installed beside the project's pins (requirements/reference.txt:
t2v-metrics and transformers 4.49, in .venv/reference by `make reference-env`) in a subprocess on the project's
torch. Without that folder a test skips, and under CI (``CI`` set) fails: CI must not lose an equality test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_ENV = Path(os.environ.get("HARNESS_REFERENCE_ENV", ROOT / ".venv" / "reference"))


def run_reference(script: str, *args: str, cwd: Path) -> object:
    """``python tests/<script> ARGS...`` with the reference packages first on the path; its last stdout line is JSON."""
    if not (REFERENCE_ENV / ".installed").is_file():
        message = f"{REFERENCE_ENV} is not set up: run `make reference-env` (requirements/reference.txt)"
        pytest.fail(message + "; CI must not skip an equality test") if os.environ.get("CI") else pytest.skip(message)
    env = dict(os.environ, PYTHONPATH=str(REFERENCE_ENV), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([sys.executable, str(ROOT / "tests" / script), *args], capture_output=True, text=True,
                         env=env, cwd=cwd)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def reference_scores(script: str, folder: Path, tmp: Path, images, prompts) -> list[float]:
    """Score ``images`` (saved as PNG under ``tmp``) against ``prompts`` with the reference script ``script``, which
    reads the weights ``folder`` and a request file ``{"images": [paths], "prompts": [...]}``."""
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp / f"image{i}.png"))
        image.save(paths[-1])
    request = tmp / "request.json"
    request.write_text(json.dumps({"images": paths, "prompts": list(prompts)}))
    return run_reference(script, str(folder), str(request), cwd=tmp)
