"""Table 1 assembly (harness/tables.py): it refuses scores from mixed scorer versions."""

import json

import pytest

from harness.errors import HarnessError
from harness.manifests import scores_path
from harness.scoring import run_scoring
from harness.tables import write_table1
from tests.conftest import smoke_config
from tests.helpers import generate


def table1_text(cfg, tmp_path):
    return write_table1(cfg, tmp_path / "reports" / "table1.md").read_text()


def test_table_refuses_mixed_scorer_versions(tmp_path):
    cfg = smoke_config(tmp_path, num_prompts=2, metrics=["aesthetic"])
    cfg["systems"] = {"sdxl": dict(cfg["systems"]["sdxl"], steps=3), "sdxl-b": dict(cfg["systems"]["sdxl"], steps=3)}
    for name in ("sdxl", "sdxl-b"):
        generate(cfg, name)
        run_scoring(cfg, "smoke", name, "aesthetic")
    assert "(N=2)" in table1_text(cfg, tmp_path)

    path = scores_path(cfg["results_dir"], "smoke", "sdxl-b", "aesthetic")
    data = json.loads(path.read_text())
    data["scorer_digest"] = "0123456789abcdef"
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="scored by different scorer versions"):
        table1_text(cfg, tmp_path)
