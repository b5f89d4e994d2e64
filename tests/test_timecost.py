"""The time-cost benchmark: protocol, report, and the full-size random builds it times."""

import pytest
import torch

from harness.timecost import measure, run_timecost
from tests.conftest import smoke_config


def test_measure_warms_up_then_times_each_repeat():
    calls = []
    result = measure(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=4)
    assert len(calls) == 6 and len(result["times"]) == 4
    assert result["min_s"] <= result["mean_s"]


def test_report_has_ratios_from_the_same_run_and_says_it_is_not_comparable(tmp_path):
    cfg = smoke_config(tmp_path)
    keep = ("sdxl", "cogview3-distill-base4", "cogview3-distill-4+1")
    cfg["systems"] = {k: cfg["systems"][k] for k in keep}
    cfg["systems"]["sdxl"]["steps"] = 3
    out = run_timecost(cfg, tmp_path / "timecost.md", batch=2, warmup=1, repeats=1)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("> **These figures are not comparable to the paper's** (tiny random-weight models")
    rows = {l.split(" | ")[0][2:]: l.split(" | ") for l in lines if l.startswith("| ") and not l.startswith("| System")}
    assert set(rows) == {"sdxl", "cogview3-distill-4+1"}  # the base stage is part of the relay row
    assert rows["sdxl"][4] == "1.000" and rows["sdxl"][5] == "19.67 s"
    assert rows["cogview3-distill-4+1"][1] == "4+1" and rows["cogview3-distill-4+1"][6] == "0.075"
    # The full-size denoisers' FLOPs at this config's settings; no floor or MFU for CPU timings.
    assert float(rows["sdxl"][8]) > 0 and rows["sdxl"][9] == "1.000"
    from harness.flops import unet_flops_per_image

    flops = {s: unet_flops_per_image(cfg, s) for s in ("sdxl", "cogview3-distill-4+1")}  # 3 SDXL steps here
    assert rows["cogview3-distill-4+1"][9] == f"{flops['cogview3-distill-4+1'] / flops['sdxl']:.3f}"
    assert [rows["sdxl"][10], rows["sdxl"][11], rows["sdxl"][12]] == ["n/a", "n/a", "– |"]
    assert "Floor and MFU: n/a (cpu, tiny models: timings not comparable)." in out.read_text()


def test_report_on_a_known_gpu_has_the_floor_and_mfu(monkeypatch):
    from harness.config import load_config
    from harness.flops import unet_flops_per_image
    from harness.timecost import render
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "config" / "timecost.yaml")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    flops = {s: unet_flops_per_image(cfg, s) for s in ("sdxl", "cogview3")}
    floor = {s: f * 4 / 312e12 for s, f in flops.items()}  # about 8.67 s for SDXL
    timed = [{"system": s, "steps": "50", "mean_s": 2 * floor[s], "min_s": 2 * floor[s], "peak": "1 GiB"} for s in flops]
    text = render(cfg, timed, torch.device("cuda"), ["bfloat16", "float16"], 4, 3)
    rows = {l.split(" | ")[0][2:]: l.split(" | ") for l in text.splitlines()
            if l.startswith("| ") and not l.startswith("| System")}
    assert "UNet floor at 312 TFLOP/s (s / batch)" in text
    assert rows["sdxl"][10] == f"{floor['sdxl']:.3f}" and rows["sdxl"][11] == "50.0%"
    assert rows["cogview3"][9] == f"{flops['cogview3'] / flops['sdxl']:.3f}" and rows["cogview3"][11] == "50.0%"
    assert rows["sdxl"][12] == f"{floor['sdxl'] / 19.67:.1%} |"  # the paper's A100 time against the same floor


@pytest.mark.slow
def test_full_size_random_sdxl_runs_on_cpu():
    """The ``random`` weights path end to end (about 14 GB of RAM). CogView3's is not run on a CPU:
    T5-XXL alone is 19 GB in fp32; its UNet size is checked on the meta device."""
    from models.registry import build_system

    system = build_system("sdxl", {"model": "sdxl", "steps": 1, "resolution": 64}, {"sdxl": "random"}, "cpu", "float32")
    system.build()
    assert sum(p.numel() for p in system.pipe.unet.parameters()) == 2_567_463_684
    assert system.generate(["a red car"], [0])[0].size == (64, 64)
