import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hidden hub call must fail fast, never hang

import torch  # noqa: E402

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The pinned prompt files: $HARNESS_TEST_DATA, else ../shared/data beside the checkout."""
    for candidate in (os.environ.get("HARNESS_TEST_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "drawbench.csv").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("prompt data not found: set HARNESS_TEST_DATA or place shared/data beside the checkout")
    return path


def smoke_config(tmp_path: Path, **overrides) -> dict:
    """The default smoke config, validated, with outputs under tmp_path."""
    import yaml

    from harness.config import validate_config

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(results_dir=str(tmp_path / "results"), reports_dir=str(tmp_path / "reports"))
    cfg.update(overrides)
    return validate_config(cfg)
