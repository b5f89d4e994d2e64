import pytest
import yaml

from harness.config import validate_config
from harness.errors import ConfigError
from tests.conftest import ROOT


def base():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults():
    cfg = base()
    del cfg["shards"]
    out = validate_config(cfg)
    assert out["shards"] == 1
    assert out["tr_sweep"] == [200, 400, 500, 600, 800]


def test_paper_config_is_valid():
    validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(batchsize=4), "'batchsize': unknown key"),
        (lambda c: c.update(batch_size=0), "'batch_size': 0 is less than the minimum of 1"),
        (lambda c: c.update(device="gpu"), "'device'"),
        (lambda c: c.update(benchmarks=["imagenet"]), "'benchmarks.0'"),
        (lambda c: c.update(profile="fast"), "'profile'"),
        (lambda c: c["systems"]["sdxl"].update(steps=-1), "'systems.sdxl.steps': -1 is less than the minimum of 1"),
        (lambda c: c["systems"]["sdxl"].update(guidence=5.0), "'systems.sdxl.guidence': unknown key"),
        (lambda c: c["systems"]["sdxl"].update(resolution=100), "'systems.sdxl.resolution'"),
        (lambda c: c["systems"]["sdxl"].update(model="no-such-model"), "config key systems.sdxl.model: unknown name 'no-such-model'; known: cogview3-base"),
        (lambda c: c["systems"]["sdxl"].update(weights="nope"), "'systems.sdxl': weights entry 'nope' is missing"),
        (lambda c: c.update(metrics=["fidd"]), "'metrics.0': unknown metric 'fidd'"),
        (lambda c: c["weights"].pop("aesthetic"), "'weights.aesthetic': missing"),
        (lambda c: c.pop("systems"), "'systems' is a required property"),
        (lambda c: c["systems"].update({"Bad Name": {"model": "sdxl"}}), "'systems'"),
    ],
)
def test_bad_config_names_the_key(mutate, message):
    cfg = base()
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # one sentence, not a dump


def test_snakemake_stops_on_bad_config_with_one_message(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**base(), "batch_size": -3}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n", "reports/table1.md",
         "--configfile", str(tmp_path / "bad.yaml")],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "config key 'batch_size': -3 is less than the minimum of 1" in proc.stdout + proc.stderr
