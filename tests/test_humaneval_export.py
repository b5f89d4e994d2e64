"""The blinded human-evaluation export (harness/humaneval/export.py): pairs, sheets, attention checks, config errors."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from harness.errors import ConfigError
from harness.humaneval.export import comparison_groups
from tests.helpers import export, fake_results, he_config


def test_export_pairs_sheets_and_blinding(tmp_path):
    cfg = he_config(tmp_path, pairs_per_group=5)
    fake_results(cfg, 7, sizes={"stable-cascade": 64, "stable-cascade-expanded": 64})
    key = export(tmp_path, cfg)
    out = tmp_path / "reports" / "humaneval" / "export"

    assert [g["label"] for g in key["groups"]] == [
        "cogview3 vs sdxl (original prompts)", "cogview3 vs sdxl (expanded prompts)",
        "cogview3 vs stable-cascade (original prompts)", "cogview3 vs stable-cascade (expanded prompts)"]
    real = [r for r in key["sheets"]["annotator-01"] if r["kind"] == "pair"]
    # equal pairs per group, and the same prompts in every group
    per_group = {gi: sorted(r["prompt_id"] for r in real if r["group"] == gi) for gi in range(4)}
    assert all(len(v) == 5 for v in per_group.values()) and len({tuple(v) for v in per_group.values()}) == 1
    # every annotator rates every pair, plus their own attention checks, in their own order
    for s, rows in key["sheets"].items():
        assert sorted(r["pair_id"] for r in rows if r["kind"] == "pair") == sorted(r["pair_id"] for r in real)
        assert sum(r["kind"] == "attention" for r in rows) == 2
    orders = [[r["pair_id"] for r in rows] for rows in key["sheets"].values()]
    assert orders[0] != orders[1] != orders[2]
    sides = [r["a_side"] for rows in key["sheets"].values() for r in rows]
    assert 0.25 < sides.count("left") / len(sides) < 0.75
    # the expanded group shows the original prompt; the expanded systems' images
    exp = next(r for r in real if r["group"] == 1)
    assert "expanded" not in exp["prompt"] and {exp["left_system"], exp["right_system"]} == {"cogview3-expanded", "sdxl-expanded"}

    # Blinding: no system name in anything an annotator gets; images one size, no metadata.
    handed = [p for p in out.rglob("*") if p.suffix in (".csv", ".html", ".txt")]
    for p in handed:
        text = p.read_text()
        for name in ("cogview3", "sdxl", "stable-cascade", "expanded", "decoy"):
            assert name not in text, (p, name)
    pngs = list((out / "images").glob("*.png"))
    for p in pngs:
        with Image.open(p) as im:
            assert im.size == (24, 24) and not im.info, p
    assert all(re.fullmatch(r"[0-9a-f]{16}\.png", p.name) for p in pngs)
    with open(out / "sheets" / "annotator-02.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * 4 + 2 and all(r["alignment"] == "" and r["export_id"] == key["export_id"] for r in rows)
    assert (tmp_path / "reports" / "humaneval" / "keys" / f"{key['export_id']}.json").is_file()

    # Deterministic: same config, same key and bytes; another seed, another layout.
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert export(tmp_path, cfg)["export_id"] == key["export_id"]
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    cfg["humaneval"]["seed"] = 1
    assert export(tmp_path, cfg)["export_id"] != key["export_id"]


def test_attention_checks_pit_an_image_against_a_degraded_decoy(tmp_path):
    cfg = he_config(tmp_path, prompts=["original"], comparisons=[["cogview3", "sdxl"]], attention_checks=3)
    fake_results(cfg, 4, systems=("cogview3", "sdxl"))
    key = export(tmp_path, cfg)
    out = tmp_path / "reports" / "humaneval" / "export"
    checks = [r for rows in key["sheets"].values() for r in rows if r["kind"] == "attention"]
    assert len(checks) == 9
    for r in checks:
        good, bad = (r["image_left"], r["image_right"]) if r["expected"] == "left" else (r["image_right"], r["image_left"])
        assert r[f"{r['expected']}_system"] == "cogview3"
        g = np.asarray(Image.open(out / good), dtype=float)
        b = np.asarray(Image.open(out / bad), dtype=float)
        # the decoy is blurred: far less pixel-to-pixel variation than the real (random) image
        assert np.abs(np.diff(b, axis=1)).mean() < 0.5 * np.abs(np.diff(g, axis=1)).mean()


def test_ratings_per_pair_spreads_pairs_evenly(tmp_path):
    cfg = he_config(tmp_path, annotators=5, ratings_per_pair=2, attention_checks=0, prompts=["original"])
    fake_results(cfg, 9, systems=("cogview3", "sdxl", "stable-cascade"))
    key = export(tmp_path, cfg)
    counts = {}
    for rows in key["sheets"].values():
        for r in rows:
            counts[r["pair_id"]] = counts.get(r["pair_id"], 0) + 1
    assert len(counts) == 18 and set(counts.values()) == {2}
    lengths = [len(rows) for rows in key["sheets"].values()]
    assert max(lengths) - min(lengths) <= 1


def test_export_config_errors_name_the_key(tmp_path):
    cfg = he_config(tmp_path, pairs_per_group=50)
    fake_results(cfg, 3)
    with pytest.raises(ConfigError, match=r"humaneval.pairs_per_group.*share only 3"):
        export(tmp_path, cfg)
    cfg = he_config(tmp_path, comparisons=[["cogview3", "lcm-sdxl"]])
    cfg["systems"].pop("lcm-sdxl-expanded", None)
    with pytest.raises(ConfigError, match=r"humaneval.comparisons.0.1.*'lcm-sdxl-expanded'.*expansion.systems"):
        comparison_groups(cfg)
    cfg = he_config(tmp_path, ratings_per_pair=4)
    fake_results(cfg, 3)
    with pytest.raises(ConfigError, match=r"humaneval.ratings_per_pair"):
        export(tmp_path, cfg)


def test_snakemake_targets_explain_what_is_missing(tmp_path):
    import yaml

    from tests.conftest import ROOT
    from tests.helpers import snakemake

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["humaneval"]["annotations_dir"] = str(tmp_path / "nothing-here")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = snakemake(tmp_path, "-n", "reports/humaneval/results.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc != 0 and "no filled sheets (*.csv) in" in log and "humaneval-simulate" in log, log
    rc, log = snakemake(tmp_path, "-n", "reports/humaneval/export", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0 and "humaneval_export" in log and "rule generate:" in log, log
    # Expansion off: the expanded comparison groups cannot exist, and the export says which key to change.
    cfg["expansion"]["systems"] = []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = snakemake(tmp_path, "-n", "reports/humaneval/export", "--configfile", str(tmp_path / "c.yaml"))
    assert rc != 0 and "humaneval.comparisons.0.0': no system 'cogview3-expanded'" in log, log
    rc, log = snakemake(tmp_path, "-n", "reports/table1.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0, log  # other targets do not care
