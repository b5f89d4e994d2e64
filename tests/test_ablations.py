"""Derived ablation systems (harness/ablations.py): the T_r sweep, the expansion twins, and the Table 3 dry run."""

import json
import subprocess
import sys

import pytest

from harness.ablations import derive_systems, expansion_pairs, is_paper_form, tr_sweep_points
from harness.config import validate_config
from harness.errors import ConfigError
from models.cogview3.schedule import relay_timesteps
from tests.conftest import ROOT, smoke_config


def test_tr_sweep_derives_one_relay_per_point_on_the_same_base(tmp_path):
    cfg = smoke_config(tmp_path)
    points = tr_sweep_points(cfg)
    assert points == [(200, "cogview3-tr200"), (400, "cogview3-tr400"), (500, "cogview3-tr500"), (600, "cogview3-tr600"),
                      (800, "cogview3-tr800"), (500, "cogview3-form-paper-tr500")]
    for t_r, name in points:
        spec = cfg["systems"][name]
        assert spec["t_r"] == t_r and spec["input"] == "cogview3-base" and spec["steps"] == 10
        assert spec["ablation"] == "tr_sweep"
    assert "ablation" not in cfg["systems"]["cogview3"]
    assert {k: v for k, v in cfg["systems"]["cogview3-tr500"].items() if k != "ablation"} == cfg["systems"]["cogview3"]
    # the extra row: the paper's T_r = 500 / 10 steps, by Algorithm 1 (form: paper) instead of the closed form
    paper = {k: v for k, v in cfg["systems"]["cogview3-form-paper-tr500"].items() if k != "ablation"}
    assert paper == {**cfg["systems"]["cogview3"], "form": "paper"}
    assert [is_paper_form(cfg, name) for _, name in points] == [False] * 5 + [True]
    # every point runs exactly the same 10 relay steps, from t = T_r - 1 (relay_timesteps)
    from harness.systems import grid_note, params

    for t_r, name in points:
        grid = relay_timesteps(t_r, params(cfg, name)["steps"])
        assert len(grid) == 10 and grid[0] == t_r - 1
        assert grid_note(cfg, name).startswith(f"T_r={t_r}: 10 steps at t={t_r - 1}, ")
    assert relay_timesteps(200, 10) == list(range(199, 0, -20))
    assert relay_timesteps(800, 10) == list(range(799, 0, -80))
    assert grid_note(cfg, "cogview3-form-paper-tr500").endswith("; form: paper (Algorithm 1's running estimate)")
    assert "form" not in grid_note(cfg, "cogview3-tr500")


def test_no_paper_form_row_where_the_source_cannot_or_already_runs_algorithm_1(tmp_path):
    import yaml

    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for change, want in (({"form": "paper"}, True), ({"blending": "time"}, False)):
        systems = {**raw["systems"], "cogview3": {**raw["systems"]["cogview3"], **change}}
        cfg = smoke_config(tmp_path, systems=systems)
        names = [name for _, name in tr_sweep_points(cfg)]
        assert names == ["cogview3-tr200", "cogview3-tr400", "cogview3-tr500", "cogview3-tr600", "cogview3-tr800"]
        assert "cogview3-form-paper-tr500" not in cfg["systems"]
        assert all(is_paper_form(cfg, name) == want for name in names)  # the sweep samples as its source does


def test_the_paper_form_row_generates_other_images_than_the_closed_form(tmp_path):
    """The row is a real relay run: the same base images, the same seeds, Algorithm 1's steps."""
    import numpy as np
    from PIL import Image

    from harness.manifests import system_dir
    from tests.helpers import generate

    import yaml

    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["systems"]
    systems = {"cogview3-base": {**raw["cogview3-base"], "steps": 2}, "cogview3": raw["cogview3"]}
    cfg = smoke_config(tmp_path, num_prompts=1, expansion={"enabled": False}, systems=systems)
    for name in ("cogview3-base", "cogview3-tr500", "cogview3-form-paper-tr500"):
        generate(cfg, name)
    images = {name: [np.asarray(Image.open(p), dtype=np.int16) for p in
                     sorted((system_dir(cfg["results_dir"], "smoke", name) / "images").glob("*.png"))]
              for name in ("cogview3-tr500", "cogview3-form-paper-tr500")}
    assert len(images["cogview3-tr500"]) == len(images["cogview3-form-paper-tr500"]) == 1
    official, paper = images["cogview3-tr500"][0], images["cogview3-form-paper-tr500"][0]
    assert official.shape == paper.shape and np.abs(official - paper).max() > 0
    # the default form stays out of the fingerprint: relay results made before `form` existed keep their digest
    fingerprint = {name: json.loads((system_dir(cfg["results_dir"], "smoke", name) / "system.json").read_text())
                   ["fingerprint"]["params"] for name in images}
    assert "form" not in fingerprint["cogview3-tr500"] and fingerprint["cogview3-form-paper-tr500"]["form"] == "paper"


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
    raw["systems"] = {k: v for k, v in cfg["systems"].items() if not v.get("ablation")}
    raw["systems"]["cogview3-form-paper-tr500"] = dict(raw["systems"]["sdxl"])
    with pytest.raises(ConfigError, match="'systems.cogview3-form-paper-tr500': the name is taken by Table 3's form"):
        derive_systems(raw)
    with pytest.raises(ConfigError, match="'systems.cogview3.form': 'paper' \\(Algorithm 1\\) .* blending 'time'"):
        smoke_config(tmp_path, systems={**raw["systems"], "cogview3": {**cfg["systems"]["cogview3"], "form": "paper",
                                                                        "blending": "time"}})
    with pytest.raises(ConfigError, match="'systems.cogview3.steps': 11 relay steps do not fit below t_r=10"):
        smoke_config(tmp_path, systems={**raw["systems"], "cogview3": {**cfg["systems"]["cogview3"], "t_r": 10,
                                                                        "steps": 11}})


def test_table3_dry_run_plans_one_base_pass_and_one_relay_per_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "-n",
         "reports/table3.md"], capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = [line.split("system=")[1].split(",")[0] for line in proc.stdout.splitlines()
               if "wildcards:" in line and "system=" in line]  # generation jobs: the only ones per system
    assert sorted(planned) == sorted(["cogview3-base", "cogview3-tr200", "cogview3-tr400", "cogview3-tr500",
                                      "cogview3-tr600", "cogview3-tr800", "cogview3-form-paper-tr500"])
    # k=5 points: 1 base + 5 relays, + 1 relay for the form: paper row
