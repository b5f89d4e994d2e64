"""End to end on the smoke profile: Snakemake export -> a real browser fills a sheet on the static
page (keyboard only, with a reload in the middle) -> its CSV download -> Snakemake import."""

from __future__ import annotations

import csv
import json
import time

import pytest
import yaml

from tests.browser import chrome
from tests.conftest import ROOT
from tests.helpers import snakemake


def _config(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["num_prompts"] = 3
    cfg["systems"]["sdxl"]["steps"] = 4  # the flow is under test here, not the samplers
    cfg["systems"]["cogview3-base"]["steps"] = 4
    cfg["expansion"]["systems"] = ["cogview3", "sdxl"]
    cfg["humaneval"].update(comparisons=[["cogview3", "sdxl"]], prompts=["original", "expanded"], annotators=2,
                            attention_checks=1, image_size=64, annotations_dir=str(tmp_path / "filled"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _wait_for(predicate, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


@pytest.mark.slow  # 77 s of the default suite's budget on 2 cores; .ci/run runs it beside the gallery's
def test_export_annotate_in_chromium_and_import(tmp_path):
    cfg_path = _config(tmp_path)
    rc, log = snakemake(tmp_path, "reports/humaneval/export", "--configfile", str(cfg_path))
    assert rc == 0, log
    export = tmp_path / "reports" / "humaneval" / "export"
    key = json.loads((tmp_path / "reports" / "humaneval" / "key.json").read_text())
    rows = {r["pair_id"]: r for r in key["sheets"]["annotator-01"]}
    assert len(rows) == 3 * 2 + 1  # 3 prompts x (original, expanded) + 1 attention check

    # The annotator's plan: prompt alignment always for cogview3's side; aesthetics a tie on odd
    # items, otherwise for the other side; attention checks answered correctly.
    def plan(r):
        if r["kind"] == "attention":
            return r["expected"], r["expected"]
        other = "right" if r["a_side"] == "left" else "left"
        return r["a_side"], ("tie" if r["item"] % 2 else other)

    keys = {("alignment", "left"): "1", ("alignment", "tie"): "2", ("alignment", "right"): "3",
            ("aesthetics", "left"): "4", ("aesthetics", "tie"): "5", ("aesthetics", "right"): "6"}
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chrome(downloads)
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        page = (export / "annotator-01.html").as_uri()
        driver.get(page)
        body = driver.find_element(By.TAG_NAME, "body")

        def current():
            pos = driver.find_element(By.ID, "position").text  # "pair i of n"
            left = driver.find_element(By.ID, "img-left").get_attribute("src").rsplit("/", 1)[1]
            item = int(pos.split()[1])
            r = next(r for r in rows.values() if r["item"] == item)
            assert r["image_left"].endswith(left) and driver.find_element(By.ID, "prompt").text == r["prompt"]
            # the images load from beside the page (no server)
            assert driver.execute_script("return document.getElementById('img-left').naturalWidth") == 64
            return r

        assert driver.find_element(By.ID, "progress").text == f"0 / {len(rows)} answered"
        half = len(rows) // 2
        for _ in range(half):
            r = current()
            a1, a2 = plan(r)
            body.send_keys(keys[("alignment", a1)])
            body.send_keys(keys[("aesthetics", a2)])  # completing a pair moves to the next one
        assert driver.find_element(By.ID, "progress").text == f"{half} / {len(rows)} answered"

        # Autosave: a reload (or a crash of the tab) keeps the answers and the position.
        driver.get(page)
        body = driver.find_element(By.TAG_NAME, "body")
        assert driver.find_element(By.ID, "progress").text == f"{half} / {len(rows)} answered"
        assert driver.find_element(By.ID, "position").text.startswith(f"pair {half + 1} of")
        body.send_keys(Keys.ARROW_LEFT)
        assert driver.find_element(By.ID, "position").text.startswith(f"pair {half} of")
        chosen = driver.find_elements(By.CSS_SELECTOR, "#questions button.chosen")
        assert len(chosen) == 2  # the earlier answers are shown
        body.send_keys("n")  # next unanswered
        for _ in range(len(rows) - half):
            r = current()
            a1, a2 = plan(r)
            body.send_keys(keys[("alignment", a1)])
            body.send_keys(keys[("aesthetics", a2)])
        assert driver.find_element(By.ID, "progress").text == f"{len(rows)} / {len(rows)} answered"
        body.send_keys("e")
        filled = _wait_for(lambda: [p for p in downloads.glob("*.csv")])
    finally:
        driver.quit()

    assert [p.name for p in filled] == ["annotator-01.filled.csv"]
    (tmp_path / "filled").mkdir()
    (tmp_path / "filled" / "annotator-01.filled.csv").write_bytes(filled[0].read_bytes())
    with open(filled[0], newline="") as f:
        got = list(csv.DictReader(f))
    assert {g["pair_id"]: (g["alignment"], g["aesthetics"]) for g in got} == {pid: plan(r) for pid, r in rows.items()}

    # The second annotator fills the sheet by hand in a spreadsheet (here: the CSV from the export).
    with open(export / "sheets" / "annotator-02.csv", newline="") as f:
        sheet2 = list(csv.DictReader(f))
    for row in sheet2:
        r = next(x for x in key["sheets"]["annotator-02"] if x["pair_id"] == row["pair_id"])
        row["alignment"], row["aesthetics"] = plan(r)
    with open(tmp_path / "filled" / "annotator-02.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(sheet2[0]))
        w.writeheader()
        w.writerows(sheet2)

    rc, log = snakemake(tmp_path, "reports/humaneval/results.md", "--configfile", str(cfg_path))
    assert rc == 0, log
    results = tmp_path / "reports" / "humaneval"
    md = (results / "results.md").read_text()
    assert md.splitlines()[0].startswith("> **Smoke profile: these numbers say nothing about image quality.**")
    rates = {(r["comparison"], r["question"]): r for r in csv.DictReader(open(results / "results.csv"))}
    # the plan unblinds to: alignment always a win for cogview3; aesthetics ties on odd items, losses otherwise
    for variant in ("original", "expanded"):
        assert float(rates[(f"cogview3 vs sdxl ({variant} prompts)", "alignment")]["win"]) == 1.0
        aest = rates[(f"cogview3 vs sdxl ({variant} prompts)", "aesthetics")]
        assert float(aest["win"]) == 0.0 and float(aest["tie"]) + float(aest["lose"]) == 1.0
    annot = {a["sheet"]: a for a in csv.DictReader(open(results / "results_annotators.csv"))}
    assert float(annot["annotator-01"]["attention_passed"]) == 1.0 and annot["annotator-01"]["flags"] == ""
    assert (results / "results.png").stat().st_size > 0
