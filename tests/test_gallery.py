"""The gallery (harness/gallery.py) through Snakemake on a small smoke config: every link resolves inside the folder,
headless Chromium loads every image and the category filter and the search change the visible rows, and the
gallery never reaches the blinded human-evaluation export. Marked slow (a DAG run): .ci/run runs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from tests.browser import chrome
from tests.conftest import ROOT
from tests.helpers import snakemake


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gallery")
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    keep = ("sdxl", "cogview3-base", "cogview3")
    cfg["systems"] = {k: v for k, v in cfg["systems"].items() if k in keep}
    for name in ("sdxl", "cogview3-base"):
        cfg["systems"][name]["steps"] = 2
    cfg["systems"]["cogview3"]["steps"] = 2
    cfg.update(num_prompts=4, metrics=["aesthetic", "clip_score"], tr_sweep=[200, 800])
    cfg["expansion"]["systems"] = ["sdxl"]
    cfg["humaneval"].update(comparisons=[["cogview3", "sdxl"]], prompts=["original"], annotators=1, attention_checks=0)
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = snakemake(tmp, "reports/gallery/index.html", "reports/humaneval/export", "--configfile", str(tmp / "c.yaml"))
    assert rc == 0, log
    return tmp, cfg


@pytest.mark.slow
def test_every_link_resolves_inside_the_gallery_and_every_view_is_there(built):
    tmp, _ = built
    folder = tmp / "reports" / "gallery"
    page = (folder / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    assert len(links) >= 2 * 4 * 3  # a thumbnail and its full image per prompt and column, at least
    for link in links:
        target = (folder / link).resolve()
        assert target.is_file() and target.is_relative_to(folder.resolve()), link  # self-contained: no link leaves it
    # columns: the table systems with CogView3's base stage; the T_r strip in T_r order; the expansion view with both
    # prompt texts
    head = re.search(r'<table class="gallery" id="bench-smoke-table"><thead><tr>(.*?)</tr>', page).group(1)
    assert re.findall(r"<th>(.*?)</th>", head) == ["Prompt", "cogview3-base", "cogview3", "sdxl"]  # config order
    strip = re.search(r'id="tr-strip-table"><thead><tr>(.*?)</tr>', page).group(1)
    assert re.findall(r"<th>(.*?)</th>", strip)[1:] == ["cogview3-base (base)", "T_r 200", "T_r 500 (form: paper)",
                                                        "T_r 800"]
    assert page.count('class="cap"') == 2 * 4 and "sdxl-expanded (expanded)" in page
    assert "Aes " in page and "CLIP score " in page  # each image's scores beside it
    for table in ("table1", "table3"):
        assert (folder / f"sheet-{table}.png").stat().st_size > 0


@pytest.mark.slow
def test_images_load_and_the_filter_and_search_change_the_rows_in_chromium(built, tmp_path):
    tmp, _ = built
    driver = chrome(tmp_path)
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        driver.get((tmp / "reports" / "gallery" / "index.html").as_uri())
        broken = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const srcs = [...document.querySelectorAll('img')].map(i => i.src)
                .concat([...document.querySelectorAll('a[href$=".png"]')].map(a => a.href));
            Promise.all(srcs.map(s => new Promise(ok => { const im = new Image();
                im.onload = () => ok(im.naturalWidth > 0 ? null : s); im.onerror = () => ok(s); im.src = s; })))
              .then(r => done(r.filter(x => x)));""")
        assert broken == []

        def visible():
            return driver.execute_script("return [...document.querySelectorAll('tr.prompt-row')].filter(r => !r.hidden).length")

        total = visible()
        assert total > 0 and driver.find_element(By.ID, "count").text == f"{total} rows"
        select = Select(driver.find_element(By.ID, "category"))
        category = select.options[1].get_attribute("value")
        select.select_by_value(category)
        by_category = visible()
        assert 0 < by_category < total
        assert all(r.get_attribute("data-category") == category
                   for r in driver.find_elements(By.CSS_SELECTOR, "tr.prompt-row") if r.is_displayed())
        select.select_by_value("")
        word = driver.find_element(By.CSS_SELECTOR, "tr.prompt-row").get_attribute("data-text").split()[1]
        driver.find_element(By.ID, "search").send_keys(word)
        found = visible()
        assert 0 < found < total
        driver.find_element(By.ID, "search").send_keys("zzzz-no-such-prompt")
        assert visible() == 0
    finally:
        driver.quit()


@pytest.mark.slow
def test_the_gallery_never_reaches_the_blinded_export(built):
    from harness.config import validate_config
    from harness.gallery import write_gallery

    tmp, cfg = built
    export = tmp / "reports" / "humaneval" / "export"
    assert export.is_dir() and not any("gallery" in p.name for p in export.rglob("*"))
    for path in export.rglob("*"):
        if path.suffix in (".html", ".csv", ".txt", ".json"):
            assert "gallery" not in path.read_text().lower(), path
    cfg = validate_config({**cfg, "results_dir": str(tmp / "results"), "reports_dir": str(tmp / "reports")})
    with pytest.raises(HarnessError, match="must not be written inside the blinded"):
        write_gallery(cfg, export / "gallery" / "index.html")
