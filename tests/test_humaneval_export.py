"""Human evaluation: statistics against published worked examples, the blinded export, strict import,
and recovery of known preferences from simulated annotators."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
from PIL import Image

from harness.errors import ConfigError
from harness.humaneval.agreement import (
    OUTCOMES,
    cluster_bootstrap_rates,
    fit_bradley_terry_ties,
    fleiss_kappa,
    gwet_ac1,
    krippendorff_alpha,
    wilson_interval,
)
from harness.humaneval.export import build_export, comparison_groups
from harness.humaneval.results import SheetError, analyse, import_annotations, read_filled_sheets
from harness.humaneval.simulate import simulate_sheets
from harness.io import atomic_write_jsonl, save_png
from tests.conftest import smoke_config


# ---- statistics -----------------------------------------------------------------------------
def test_fleiss_kappa_matches_the_published_example():
    # Fleiss (1971) as worked on Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    cats = list("12345")
    ratings = [[c for c, n in zip(cats, row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings, cats) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["1", "1"], ["1", "2", "2"]], cats)


def test_krippendorff_alpha_matches_krippendorff_2011():
    # "Computing Krippendorff's alpha-reliability" (2011), the 4 coders x 12 units example with
    # missing values: nominal 0.743, ordinal 0.815.
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
              [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
              [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
              [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[v for v in col if v is not None] for col in zip(*coders)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal", rank={v: v for v in range(1, 6)}) == pytest.approx(0.815, abs=5e-4)


def test_gwet_ac1_by_hand():
    # Two raters, 4 items: agree on 3 (win, win, lose), disagree on 1 (win/tie).
    # p_a = 3/4; pi = (win 5/8, tie 1/8, lose 2/8); p_e = sum pi(1-pi) / 2 = (15/64 + 7/64 + 12/64) / 2 = 17/64
    ratings = [["win", "win"], ["win", "win"], ["lose", "lose"], ["win", "tie"]]
    assert gwet_ac1(ratings) == pytest.approx((0.75 - 17 / 64) / (1 - 17 / 64))
    assert gwet_ac1([["win", "win"], ["tie", "tie"]]) == 1.0


def test_wilson_interval_equals_scipy():
    from scipy.stats import binomtest

    for k, n in [(8, 10), (0, 12), (77, 100), (199, 200)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_bradley_terry_two_players_is_the_closed_form():
    # Two players: the Davidson model is saturated, theta_a - theta_b = log(W/L), nu = T / sqrt(W L).
    data = [("a", "b", "win")] * 30 + [("a", "b", "tie")] * 10 + [("a", "b", "lose")] * 20
    fit = fit_bradley_terry_ties(data, reference="b")
    assert fit.theta["a"] == pytest.approx(math.log(30 / 20), abs=1e-5)
    assert fit.nu == pytest.approx(10 / math.sqrt(30 * 20), abs=1e-5)
    p = fit.probabilities("a", "b")
    assert (p["win"], p["tie"], p["lose"]) == pytest.approx((0.5, 1 / 6, 1 / 3), abs=1e-5)


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(1)
    theta = {"cv3": 0.0, "sdxl": -0.8, "sc": -0.3}
    nu = 0.5

    def probs(a, b):
        pa, pb = math.exp(theta[a]), math.exp(theta[b])
        t = nu * math.sqrt(pa * pb)
        return np.array([pa, t, pb]) / (pa + pb + t)

    data = [(a, b, OUTCOMES[rng.choice(3, p=probs(a, b))]) for a, b in [("cv3", "sdxl"), ("cv3", "sc"), ("sc", "sdxl")]
            for _ in range(3000)]
    fit = fit_bradley_terry_ties(data, reference="cv3")
    assert fit.theta["sdxl"] == pytest.approx(-0.8, abs=0.08)
    assert fit.theta["sc"] == pytest.approx(-0.3, abs=0.08)
    assert fit.nu == pytest.approx(0.5, abs=0.05)


def test_cluster_bootstrap_is_wider_than_wilson_when_annotators_agree():
    # 20 pairs, 5 identical ratings each: really 20 observations, not 100.
    pairs = [["win"] * 5] * 12 + [["lose"] * 5] * 8
    boot = cluster_bootstrap_rates(pairs, n_boot=4000, seed=0)
    lo, hi = wilson_interval(60, 100)
    assert (boot["win"][1] - boot["win"][0]) > 1.5 * (hi - lo)


# ---- export ---------------------------------------------------------------------------------
SYSTEMS = ("cogview3", "sdxl", "stable-cascade", "cogview3-expanded", "sdxl-expanded", "stable-cascade-expanded")


def fake_results(cfg, n_prompts: int, systems=SYSTEMS, sizes=None):
    """Manifests and PNGs as the runner writes them, with random pixels (no model needed)."""
    rng = np.random.default_rng(0)
    from harness.runner import system_dir

    for s in systems:
        d = system_dir(cfg["results_dir"], cfg["humaneval"]["benchmark"], s)
        rows = []
        size = (sizes or {}).get(s, 32)
        for i in range(n_prompts):
            img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            sha = save_png(img, d / "images" / f"p{i:03d}_0.png")
            rows.append({"prompt_id": f"p{i:03d}", "sample": 0, "image": f"images/p{i:03d}_0.png", "sha256": sha,
                         "prompt": f"prompt {i} expanded" if s.endswith("-expanded") else f"prompt {i}",
                         "original_prompt": f"prompt {i}", "category": "Colors" if i % 2 else "Text",
                         "system": s, "system_fingerprint": "x"})
        atomic_write_jsonl(d / "manifest.jsonl", rows)


def he_config(tmp_path, **humaneval):
    hv = {"benchmark": "smoke", "comparisons": [["cogview3", "sdxl"], ["cogview3", "stable-cascade"]],
          "prompts": ["original", "expanded"], "annotators": 3, "attention_checks": 2, "image_size": 24,
          "annotations_dir": str(tmp_path / "filled"), **humaneval}
    return smoke_config(tmp_path, humaneval=hv)


def export(tmp_path, cfg):
    return build_export(cfg, tmp_path / "reports" / "humaneval" / "export", tmp_path / "reports" / "humaneval" / "key.json")


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
    with pytest.raises(ConfigError, match=r"humaneval.ratings_per_pair"):
        export(tmp_path, he_config(tmp_path, ratings_per_pair=4))


# ---- import: one clear error per problem ------------------------------------------------------
@pytest.fixture()
def filled(tmp_path):
    cfg = he_config(tmp_path, prompts=["original"], comparisons=[["cogview3", "sdxl"]])
    fake_results(cfg, 4, systems=("cogview3", "sdxl"))
    key = export(tmp_path, cfg)
    paths = simulate_sheets(key, tmp_path / "filled")
    return cfg, key, paths


def _rewrite(path, edit):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0])
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("case, edit, message", [
    ("unknown pair", lambda rows: [{**rows[0], "pair_id": "pdeadbeef"}] + rows[1:], r"line 2: pair id 'pdeadbeef' is not in sheet"),
    ("duplicate", lambda rows: rows + [rows[0]], r"line \d+: pair id '\w+' appears again \(first on line 2\)"),
    ("missing answer", lambda rows: [{**rows[0], "aesthetics": ""}] + rows[1:], r"1 answers missing \(line 2 aesthetics\)"),
    ("bad answer", lambda rows: [{**rows[0], "alignment": "A"}] + rows[1:], r"line 2: alignment answer 'A' is not one of left, tie, right"),
    ("key mismatch", lambda rows: [{**r, "export_id": "0123456789ab"} for r in rows], r"made for export 0123456789ab, but the key is for export"),
    ("missing rows", lambda rows: rows[:-1], r"1 of \d+ pairs of sheet 'annotator-01' are missing"),
    ("moved images", lambda rows: [{**rows[0], "image_left": rows[0]["image_right"]}] + rows[1:], r"line 2: pair '\w+' does not match the key"),
])
def test_import_rejects_bad_sheets_with_one_clear_error(filled, case, edit, message):
    cfg, key, paths = filled
    _rewrite(paths[0], edit)
    with pytest.raises(SheetError, match=message) as err:
        read_filled_sheets(key, paths)
    assert str(paths[0]) in str(err.value)


def test_import_rejects_a_sheet_given_twice_and_missing_columns(filled, tmp_path):
    cfg, key, paths = filled
    copy = tmp_path / "again.csv"
    copy.write_bytes(paths[0].read_bytes())
    with pytest.raises(SheetError, match=r"again.csv: sheet 'annotator-01' was already read from"):
        read_filled_sheets(key, paths + [copy])
    _rewrite(paths[1], lambda rows: [{k: v for k, v in r.items()} for r in rows])
    text = paths[1].read_text().replace("aesthetics", "aesthetic")
    paths[1].write_text(text)
    with pytest.raises(SheetError, match=r"missing column\(s\) aesthetics"):
        read_filled_sheets(key, paths)


def test_import_unblinds_and_reports(filled, tmp_path):
    cfg, key, paths = filled
    out = tmp_path / "reports" / "humaneval" / "results.md"
    an = import_annotations(cfg, tmp_path / "reports" / "humaneval" / "key.json", paths[:2], out)
    text = out.read_text()
    assert text.splitlines()[0].startswith("> **Smoke profile: these numbers say nothing about image quality.**")
    assert "Simulated annotations" in text and "Sheets not returned (not in the numbers): annotator-03." in text
    # unblinding: an answer for the side that holds cogview3 is a win
    for r in an.ratings:
        k = next(x for x in key["sheets"][r.sheet] if x["pair_id"] == r.pair_id)
        assert r.outcome == ("tie" if r.answer == "tie" else "win" if r.answer == k["a_side"] else "lose")
    for name in ("results.csv", "results_bt.csv", "results_agreement.csv", "results_annotators.csv",
                 "results_categories.csv", "results_ratings.csv", "results.png"):
        assert (out.parent / name).stat().st_size > 0, name
    cats = list(csv.DictReader(open(out.parent / "results_categories.csv")))
    assert {c["category"] for c in cats} == {"Colors", "Text"}


def test_careless_annotator_is_flagged_and_excluded(tmp_path):
    cfg = he_config(tmp_path, prompts=["original"], comparisons=[["cogview3", "sdxl"]], attention_checks=6)
    fake_results(cfg, 6, systems=("cogview3", "sdxl"))
    key = export(tmp_path, cfg)
    paths = simulate_sheets(key, tmp_path / "filled", careless=["annotator-02"], seed=3)
    ratings, files = read_filled_sheets(key, paths)
    an = analyse(key, ratings, files, attention_min=0.9, n_boot=200)
    assert set(an.excluded) == {"annotator-02"}
    assert {r.sheet for r in an.ratings} == {"annotator-01", "annotator-03"}
    flags = {a["sheet"]: a["flags"] for a in an.annotators}
    assert flags["annotator-01"] == "" and flags["annotator-02"].startswith("attention")
    an_all = analyse(key, ratings, files, attention_min=0.9, exclude_failed_attention=False, n_boot=200)
    assert not an_all.excluded and {r.sheet for r in an_all.ratings} == {"annotator-01", "annotator-02", "annotator-03"}


# ---- recovery of a known preference model ---------------------------------------------------------
TRUTH = {0: {"alignment": (0.70, 0.10, 0.20), "aesthetics": (0.45, 0.25, 0.30)},
         1: {"alignment": (0.35, 0.15, 0.50), "aesthetics": (0.55, 0.30, 0.15)}}


def test_simulated_annotations_recover_the_true_win_rates(tmp_path):
    cfg = he_config(tmp_path, prompts=["original"], annotators=4, attention_checks=1)
    fake_results(cfg, 60, systems=("cogview3", "sdxl", "stable-cascade"))
    key = export(tmp_path, cfg)

    # One run: every win / tie / lose rate is within its 95% pair-bootstrap CI... is a 95% statement
    # per interval, so check coverage over many independent annotation rounds instead of one.
    covered, total, errors, kappas = 0, 0, [], []
    for seed in range(30):
        paths = simulate_sheets(key, tmp_path / f"f{seed}", truth=TRUTH, consistency=0.7, seed=seed)
        ratings, _ = read_filled_sheets(key, paths)
        real = [r for r in ratings if r.kind == "pair"]
        for gi in (0, 1):
            for q in ("alignment", "aesthetics"):
                rs = [r for r in real if r.group == gi and r.question == q]
                by_pair = {}
                for r in rs:
                    by_pair.setdefault(r.pair_id, []).append(r.outcome)
                ci = cluster_bootstrap_rates(list(by_pair.values()), n_boot=400, seed=seed)
                for j, o in enumerate(OUTCOMES):
                    rate = sum(r.outcome == o for r in rs) / len(rs)
                    errors.append(rate - TRUTH[gi][q][j])
                    covered += ci[o][0] <= TRUTH[gi][q][j] <= ci[o][1]
                    total += 1
        # Within one group (one set of true probabilities): pooling groups with different marginals
        # lowers the pooled chance agreement and inflates kappa above c^2 (0.537 here).
        for gi in (0, 1):
            kappas.append(fleiss_kappa(list(_by_item([r for r in real if r.group == gi], "alignment").values())))
    assert abs(np.mean(errors)) < 0.01  # unbiased
    assert 0.88 <= covered / total <= 0.995, covered / total  # nominal 95% (percentile bootstrap, 60 pairs)
    # two annotators agree beyond chance with kappa = consistency^2 (see harness.humaneval.simulate)
    assert np.mean(kappas) == pytest.approx(0.49, abs=0.04)

    # And the full import on one round: the report's rates sit near the truth.
    paths = simulate_sheets(key, tmp_path / "final", truth=TRUTH, consistency=0.7, seed=99)
    an = import_annotations(cfg, tmp_path / "reports" / "humaneval" / "key.json", paths,
                            tmp_path / "reports" / "humaneval" / "results.md")
    for row in an.rates:
        gi = [g["label"] for g in key["groups"]].index(row["comparison"])
        for j, o in enumerate(OUTCOMES):
            assert row[f"{o}_boot_lo"] - 0.05 <= TRUTH[gi][row["question"]][j] <= row[f"{o}_boot_hi"] + 0.05


def _by_item(ratings, question):
    out = {}
    for r in ratings:
        if r.question == question:
            out.setdefault(r.pair_id, []).append(r.outcome)
    return out


def test_snakemake_targets_explain_what_is_missing(tmp_path):
    import yaml

    from tests.conftest import ROOT
    from tests.test_pipeline import snakemake

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["humaneval"]["annotations_dir"] = str(tmp_path / "nothing-here")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = snakemake(tmp_path, "-n", "reports/humaneval/results.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc != 0 and "no filled sheets (*.csv) in" in log and "humaneval-simulate" in log, log
    rc, log = snakemake(tmp_path, "-n", "reports/humaneval/export", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0 and "humaneval_export" in log and "generate_shard" in log, log
    # Expansion off: the expanded comparison groups cannot exist, and the export says which key to change.
    cfg["expansion"]["systems"] = []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = snakemake(tmp_path, "-n", "reports/humaneval/export", "--configfile", str(tmp_path / "c.yaml"))
    assert rc != 0 and "humaneval.comparisons.0.0': no system 'cogview3-expanded'" in log, log
    rc, log = snakemake(tmp_path, "-n", "reports/table1.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0, log  # other targets do not care
