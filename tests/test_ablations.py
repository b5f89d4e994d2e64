"""Derived ablation systems (harness/ablations.py): the T_r sweep, the expansion twins, and the Table 3 dry run."""

import json
import subprocess
import sys

import pytest

from harness.ablations import derive_systems, expansion_pairs, tr_sweep_points
from harness.config import validate_config
from harness.errors import ConfigError
from tests.conftest import ROOT, smoke_config


def test_tr_sweep_derives_one_relay_per_point_on_the_same_base(tmp_path):
    cfg = smoke_config(tmp_path)
    points = tr_sweep_points(cfg)
    assert points == [(200, "cogview3-tr200"), (400, "cogview3-tr400"), (500, "cogview3-tr500"), (600, "cogview3-tr600"),
                      (800, "cogview3-tr800")]
    for t_r, name in points:
        spec = cfg["systems"][name]
        assert spec["t_r"] == t_r and spec["input"] == "cogview3-base" and spec["steps"] == 10
    assert cfg["systems"]["cogview3-tr200"]["ablation"] == "tr_sweep" and "ablation" not in cfg["systems"]["cogview3"]
    assert {k: v for k, v in cfg["systems"]["cogview3-tr500"].items() if k != "ablation"} == cfg["systems"]["cogview3"]
    # about 10 relay steps each, from the full schedule (Fig. 6)
    from models.cogview3.schedule import relay_timesteps

    assert relay_timesteps(200, 10) == list(range(199, 0, -20))
    assert all(9 <= len(relay_timesteps(t, 10)) <= 11 for t in (200, 400, 500, 600, 800))


def test_expansion_twins_follow_the_stage_chain_and_validation_is_idempotent(tmp_path):
    cfg = smoke_config(tmp_path)
    assert expansion_pairs(cfg) == [("cogview3", "cogview3-expanded"), ("sdxl", "sdxl-expanded"),
                                    ("stable-cascade", "stable-cascade-expanded"), ("lcm-sdxl", "lcm-sdxl-expanded")]
    twin = cfg["systems"]["cogview3-expanded"]
    assert twin["input"] == "cogview3-base-expanded" and twin["expand"] is True
    assert cfg["systems"]["cogview3-base-expanded"]["expand"] is True
    again = validate_config(json.loads(json.dumps(cfg)))  # the Snakefile's snapshot is validated again by the CLI
    assert again["systems"] == cfg["systems"]


def test_ablation_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'expansion.systems.0': 'nope' is not a system"):
        smoke_config(tmp_path, expansion={"enabled": True, "systems": ["nope"]})
    with pytest.raises(ConfigError, match=r"'expansion.base_url': required by backend 'openai'"):
        smoke_config(tmp_path, expansion={"enabled": True, "backend": "openai", "systems": []})
    cfg = smoke_config(tmp_path)
    raw = {k: v for k, v in cfg.items()}
    raw["systems"] = {k: v for k, v in cfg["systems"].items() if not v.get("ablation")}
    raw["systems"]["cogview3-tr200"] = dict(raw["systems"]["sdxl"])
    with pytest.raises(ConfigError, match="'systems.cogview3-tr200': the name is taken by the T_r sweep"):
        derive_systems(raw)


def test_table3_dry_run_plans_one_base_pass_and_one_relay_per_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "-n",
         "reports/table3.md"], capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = [line.split("system=")[1].split(",")[0] for line in proc.stdout.splitlines()
               if "wildcards:" in line and "system=" in line]  # generation jobs: the only ones per system
    assert sorted(planned) == sorted(["cogview3-base", "cogview3-tr200", "cogview3-tr400", "cogview3-tr500",
                                      "cogview3-tr600", "cogview3-tr800"])  # k=5 points: 1 base + 5 relays
