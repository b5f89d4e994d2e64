"""The regression gate: passes on the golden, fails (exit 1) on a breached threshold, JUnit for CI."""

import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from harness.cli import main
from harness.errors import ConfigError
from harness.regression import run_regression
from harness.scoring import run_scoring
from tests.conftest import smoke_config
from tests.helpers import generate


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate")
    cfg = smoke_config(tmp, num_prompts=2, metrics=["aesthetic"], tr_sweep=[], expansion={"enabled": False})
    cfg["systems"] = {"a": dict(cfg["systems"]["sdxl"], steps=2), "b": dict(cfg["systems"]["sdxl"], steps=3)}
    for name in cfg["systems"]:
        generate(cfg, name)
    run_scoring(cfg, "smoke", ["a", "b"], "aesthetic")
    return tmp, cfg


def gate(tmp, cfg, checks, golden="golden.json", update=False):
    (tmp / "thresholds.yaml").write_text(yaml.safe_dump({"golden": str(tmp / golden), "checks": checks}))
    cfg = dict(cfg, thresholds=str(tmp / "thresholds.yaml"))
    return run_regression(cfg, tmp / "reports" / "regression.md", update_golden=update)


def test_gate_passes_on_its_golden_and_fails_on_a_broken_threshold(scored):
    tmp, cfg = scored
    band = {"benchmark": "smoke", "system": "*", "metric": "*", "rel_tolerance": 1e-4, "tolerance": 1e-6}
    assert gate(tmp, cfg, [band], update=True)
    golden = json.loads((tmp / "golden.json").read_text())["values"]
    assert set(golden) == {"smoke/a/aesthetic", "smoke/b/aesthetic"} and golden["smoke/a/aesthetic"]["n"] == 2

    value = golden["smoke/a/aesthetic"]["value"]
    broken = {"benchmark": "smoke", "system": "a", "metric": "aesthetic", "min": value + 1.0}
    assert not gate(tmp, cfg, [band, broken])
    report = (tmp / "reports" / "regression.md").read_text()
    assert "**FAIL: 1 of 3 checks breached**" in report and f"< min {value + 1.0}" in report
    suite = ET.parse(tmp / "reports" / "regression.junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    assert json.loads((tmp / "reports" / "regression.json").read_text())["passed"] is False


def test_gate_catches_a_moved_value_and_a_check_that_matches_nothing(scored):
    tmp, cfg = scored
    band = {"benchmark": "smoke", "system": "*", "metric": "*", "rel_tolerance": 1e-4, "tolerance": 1e-6}
    gate(tmp, cfg, [band], golden="g2.json", update=True)
    data = json.loads((tmp / "g2.json").read_text())
    data["values"]["smoke/b/aesthetic"]["value"] *= 1.001  # as if a sampler change moved b's images
    (tmp / "g2.json").write_text(json.dumps(data))
    assert not gate(tmp, cfg, [band], golden="g2.json")
    assert "moved" in (tmp / "reports" / "regression.md").read_text()
    assert not gate(tmp, cfg, [{"benchmark": "smoke", "system": "typo", "metric": "*", "max": 1}], golden="g2.json")
    assert "matches no computed value" in (tmp / "reports" / "regression.md").read_text()


def test_cli_exit_code_and_bad_threshold_files(scored, capsys):
    tmp, cfg = scored
    (tmp / "c.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items()}))
    (tmp / "t.yaml").write_text(yaml.safe_dump({"golden": str(tmp / "none.json"),
                                                "checks": [{"metric": "aesthetic", "max": -100.0}]}))
    raw = yaml.safe_load((tmp / "c.yaml").read_text())
    raw["thresholds"] = str(tmp / "t.yaml")
    (tmp / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["regression", "--config", str(tmp / "c.yaml"), "--out", str(tmp / "r.md")]) == 1
    assert "FAIL" in capsys.readouterr().out
    (tmp / "t.yaml").write_text(yaml.safe_dump({"checks": [{"metric": "aesthetic", "maximum": 1}]}))
    with pytest.raises(ConfigError, match="checks.0: unknown key 'maximum'"):
        gate(tmp, cfg, [{"metric": "aesthetic", "maximum": 1}])


def test_versus_check_bounds_the_paired_difference(scored):
    """``versus`` gates value(system) − value(versus): it holds at the measured gain and breaches above it, and
    names a versus system that has no value instead of passing."""
    tmp, cfg = scored
    gate(tmp, cfg, [{"benchmark": "smoke", "system": "*", "metric": "*", "rel_tolerance": 1e-4}], golden="g3.json",
         update=True)
    golden = json.loads((tmp / "g3.json").read_text())["values"]
    gain = golden["smoke/a/aesthetic"]["value"] - golden["smoke/b/aesthetic"]["value"]
    assert gain != 0.0  # 2 vs 3 sampler steps: different images
    pair = {"benchmark": "smoke", "system": "a", "versus": "b", "metric": "aesthetic"}
    assert gate(tmp, cfg, [dict(pair, min=gain - 1e-6, max=gain + 1e-6)], golden="g3.json")
    assert f"{gain:.6g}" in (tmp / "reports" / "regression.md").read_text()
    assert not gate(tmp, cfg, [dict(pair, min=gain + 1e-3)], golden="g3.json")
    report = (tmp / "reports" / "regression.md").read_text()
    assert "smoke/a − b/aesthetic" in report and f"< min {gain + 1e-3}" in report
    assert not gate(tmp, cfg, [dict(pair, versus="c", min=0.0)], golden="g3.json")
    assert "smoke/c/aesthetic has no value" in (tmp / "reports" / "regression.md").read_text()
    # max_p: the paired bootstrap of Table 1 on the per-prompt scores; a system against itself (what CFG switched
    # off makes of cogview3 against cogview3-unguided) has p = 1
    assert not gate(tmp, cfg, [dict(pair, versus="a", min=-1.0, max_p=0.5)], golden="g3.json")
    assert "p=1 > max_p 0.5" in (tmp / "reports" / "regression.md").read_text()
    from harness.regression import per_prompt_reader
    from harness.stats import paired_bootstrap
    read = per_prompt_reader(cfg)
    test = paired_bootstrap(read("smoke/a/aesthetic"), read("smoke/b/aesthetic"))
    assert gate(tmp, cfg, [dict(pair, min=-1.0, max_p=test.p_value)], golden="g3.json")
    assert f"paired bootstrap: {test.fmt(4)}" in (tmp / "reports" / "regression.md").read_text()
    with pytest.raises(ConfigError, match="no golden band"):
        gate(tmp, cfg, [dict(pair, tolerance=0.1)])
    with pytest.raises(ConfigError, match="max_p bounds the paired test"):
        gate(tmp, cfg, [{"system": "a", "metric": "aesthetic", "min": 0.0, "max_p": 0.1}])
    with pytest.raises(ConfigError, match="name one system each"):
        gate(tmp, cfg, [dict(pair, system="*", min=0.0)])
