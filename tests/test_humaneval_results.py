"""Importing filled human-evaluation sheets (harness/humaneval/results.py): one clear error per problem, unblinding, exclusion."""

from __future__ import annotations

import csv

import pytest

from harness.humaneval.results import SheetError, analyse, import_annotations, read_filled_sheets
from harness.humaneval.simulate import simulate_sheets
from tests.helpers import export, fake_results, he_config


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
