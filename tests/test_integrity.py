"""Integrity and coverage: damage is found where it is, named as what it is, and repaired exactly.

Results are written as the runner writes them (sealed rows, real PNGs) by ``tests.helpers.fake_results``
(random pixels, no model); the repair test generates with a tiny SDXL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from harness import integrity
from harness.errors import HarnessError
from harness.io import atomic_write_jsonl, read_jsonl
from harness.manifests import manifest_path, scores_path, seal_row, system_dir
from harness.render import Cell, mark_short_cells
from harness.scores import ScoreReader
from tests.conftest import ROOT, smoke_config
from tests.helpers import fake_results, fake_scores, generate

SYSTEMS = ("sdxl", "lcm-sdxl")


def small_config(tmp_path, systems):
    cfg = smoke_config(tmp_path, metrics=["aesthetic"], tr_sweep=[], expansion={"enabled": False},
                       humaneval={"benchmark": "smoke", "comparisons": [list(systems[-2:])], "prompts": ["original"]})
    cfg["systems"] = {s: cfg["systems"][s] for s in systems}
    return cfg


@pytest.fixture
def cfg(tmp_path):
    cfg = small_config(tmp_path, SYSTEMS)
    fake_results(cfg, 4, systems=SYSTEMS)
    fake_scores(cfg, SYSTEMS)
    return cfg


def image(cfg, system="sdxl", pid="p002"):
    return system_dir(cfg["results_dir"], "fake", system) / "images" / f"{pid}_0.png"


def rewrite_manifest(cfg, system, change):
    path = manifest_path(cfg["results_dir"], "fake", system)
    atomic_write_jsonl(path, change(read_jsonl(path)))


def messages(result):
    return [f.message for f in result.findings]


def test_clean_results_pass_and_an_unchanged_recheck_hashes_nothing(cfg):
    first = integrity.check(cfg)
    assert first.findings == [] and first.images == 8 and first.hashed == 8 and first.score_files == 2
    again = integrity.check(cfg)
    assert again.findings == [] and again.hashed == 0
    os.utime(image(cfg), ns=(time.time_ns(), time.time_ns()))  # touched, same bytes: hashed again, still fine
    touched = integrity.check(cfg)
    assert touched.findings == [] and touched.hashed == 1


@pytest.mark.parametrize("damage,expected", [
    ("truncate", "was changed after generation"),
    ("overwrite", "was changed after generation"),
    ("delete", "is missing"),
])
def test_a_damaged_image_is_found_even_when_the_stat_cache_knew_it(cfg, damage, expected):
    integrity.check(cfg)  # fills the stat cache
    path = image(cfg)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "overwrite":  # same size, other bytes
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        path.unlink()
    result = integrity.check(cfg)
    assert len(result.damage) == 1 and expected in result.damage[0].message and "p002" in result.damage[0].message
    assert result.damage[0].images == ([] if damage == "delete" else [path])


def test_an_edited_manifest_row_is_blamed_on_the_manifest_not_the_image(cfg):
    def edit(rows):
        rows[1]["prompt"] = "prompt 1, edited"
        return rows
    rewrite_manifest(cfg, "sdxl", edit)
    [finding] = integrity.check(cfg).damage
    assert "line 2 (prompt 'p001' sample 0) was edited after generation" in finding.message
    assert "the image is not at fault" in finding.message
    with pytest.raises(HarnessError, match="was edited after generation.*verify --repair"):
        ScoreReader(cfg).read("fake", "sdxl", "aesthetic")


def test_a_short_manifest_is_an_error_naming_the_system_and_the_missing_id(cfg):
    rewrite_manifest(cfg, "sdxl", lambda rows: rows[:2] + rows[3:])
    [finding] = integrity.check(cfg).damage
    assert "(fake/sdxl) does not cover the config's 4 (prompt id, sample) pairs: 1 missing (p002/0)" in finding.message
    reader = ScoreReader(cfg)
    reader.read("fake", "lcm-sdxl", "aesthetic")
    with pytest.raises(HarnessError, match=r"fake/sdxl.*1 missing \(p002/0\).*verify --repair"):
        reader.read("fake", "sdxl", "aesthetic")


def test_a_resealed_prompt_edit_is_caught_against_the_prompt_set(cfg):
    def edit(rows):  # edited *and* resealed: the seal cannot tell, the prompt set can
        rows[0]["original_prompt"] = rows[0]["prompt"] = "a different prompt"
        return [seal_row(r) for r in rows]
    rewrite_manifest(cfg, "sdxl", edit)
    [finding] = integrity.check(cfg).damage
    assert "has the prompt 'a different prompt', but the prompt set has 'prompt 0'" in finding.message


def test_a_score_file_of_other_images_is_stale_and_its_report_is_rebuilt(cfg, tmp_path):
    path = scores_path(cfg["results_dir"], "fake", "sdxl", "aesthetic")
    data = json.loads(path.read_text())
    data["rows"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    result = integrity.check(cfg)
    assert result.damage == [] and len(result.stale) == 1 and "is stale" in result.stale[0].message
    with pytest.raises(HarnessError, match="scores 1 images that are not the ones fake/sdxl's manifest lists now"):
        ScoreReader(cfg).read("fake", "sdxl", "aesthetic")

    table = tmp_path / "reports" / "table1.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("old table")
    notices = integrity.start_of_run(cfg, {"table1": [str(table)]})
    assert not path.exists() and not table.exists()
    assert any(n.endswith("rescored in this run") for n in notices) and any("stale score files to" in n for n in notices)
    assert any("removed" in n and "table1.md" in n for n in notices)


def test_a_deleted_score_file_removes_the_reports_built_from_it(cfg, tmp_path):
    table = tmp_path / "reports" / "table1.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("old table")
    assert integrity.start_of_run(cfg, {"table1": [str(table)]}) == []
    assert table.exists()  # nothing missing: nothing removed
    scores_path(cfg["results_dir"], "fake", "lcm-sdxl", "aesthetic").unlink()
    assert integrity.start_of_run(cfg, {"table1": [str(table)]}, dry_run=True)[0].endswith("a run rebuilds it")
    assert table.exists()
    [notice] = integrity.start_of_run(cfg, {"table1": [str(table)]})
    assert "fake/lcm-sdxl" in notice and not table.exists()


def test_damage_at_the_start_of_a_run_is_moved_aside_and_redone_by_that_run(cfg, tmp_path):
    table = tmp_path / "reports" / "table1.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("old table")
    path = image(cfg)
    path.write_bytes(b"truncated")
    manifest = manifest_path(cfg["results_dir"], "fake", "sdxl")
    dry = integrity.start_of_run(cfg, {"table1": [str(table)]}, dry_run=True)
    assert dry[0].endswith("a run would regenerate it") and path.exists() and manifest.exists() and table.exists()

    notices = integrity.start_of_run(cfg, {"table1": [str(table)]})
    assert "p002" in notices[0] and notices[0].endswith("regenerated in this run")
    assert not path.exists() and not manifest.exists() and not table.exists()  # Snakemake reruns generation
    quarantined = {p.name: p.read_bytes() for p in (tmp_path / "results" / ".harness" / "quarantine").rglob("*")
                   if p.is_file()}
    assert quarantined["p002_0.png"] == b"truncated" and "manifest.jsonl" in quarantined  # nothing deleted
    [recovered] = manifest.parent.glob(".state/recovered-*-manifest.jsonl")  # the runner resumes from it
    assert len(read_jsonl(recovered)) == 4
    assert integrity.check(cfg).damage == []


def test_tables_refuse_a_truncated_image_even_when_nothing_else_ran(cfg):
    reader = ScoreReader(cfg)
    path = image(cfg)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HarnessError, match=r"p002_0.png \(fake/sdxl\) was changed after generation"):
        reader.read("fake", "sdxl", "aesthetic")


def test_a_relay_image_made_from_an_older_base_image_is_stale(tmp_path):
    cfg = small_config(tmp_path, ("cogview3-base", "cogview3", "sdxl"))
    fake_results(cfg, 4, systems=("cogview3-base", "cogview3", "sdxl"))
    base = {r["prompt_id"]: r["sha256"] for r in read_jsonl(manifest_path(cfg["results_dir"], "fake", "cogview3-base"))}
    rewrite_manifest(cfg, "cogview3", lambda rows: [
        seal_row({**r, "input_sha256": base[r["prompt_id"]] if r["prompt_id"] != "p001" else "f" * 64}) for r in rows])
    [finding] = integrity.check(cfg).damage
    assert "p001" in finding.message and "made from another version of its input image (cogview3-base)" in finding.message


def test_mark_short_cells_flags_a_cell_over_fewer_prompts():
    rows = [["a", Cell("1.0", n=8)], ["b", Cell("2.0", n=7)], ["c", Cell("–")]]
    assert mark_short_cells(rows) == 1
    assert rows[1][1].fmt() == "2.0 **(N=7, fewer than the 8 of other cells in this column)**"
    assert rows[0][1].fmt() == "1.0"


def test_repair_regenerates_exactly_the_damaged_image(tmp_path):
    cfg = small_config(tmp_path, SYSTEMS)
    cfg.update(num_prompts=3)
    cfg["systems"]["sdxl"]["steps"] = 2
    generate(cfg, "sdxl")
    folder = system_dir(cfg["results_dir"], "smoke", "sdxl")
    damaged = folder / "images" / "s01_0.png"
    original = damaged.read_bytes()
    others = {p: p.stat().st_mtime_ns for p in folder.glob("images/*.png") if p != damaged}
    damaged.write_bytes(b"not a png")
    result = integrity.check(cfg)
    assert [f.images for f in result.damage] == [[damaged]]

    after = integrity.repair(cfg, result, log=lambda *_: None)
    assert after.findings == []
    assert damaged.read_bytes() == original
    assert {p: p.stat().st_mtime_ns for p in others} == others  # the intact images were kept, not remade
    [kept] = list((tmp_path / "results" / ".harness" / "quarantine").rglob("s01_0.png"))
    assert kept.read_bytes() == b"not a png"


def test_the_rerun_after_the_start_check_makes_only_the_damaged_image_even_without_a_state_file(tmp_path):
    from harness.runner import run_generation

    cfg = small_config(tmp_path, SYSTEMS)
    cfg.update(num_prompts=3)
    cfg["systems"]["sdxl"]["steps"] = 2
    generate(cfg, "sdxl")
    folder = system_dir(cfg["results_dir"], "smoke", "sdxl")
    (folder / ".state" / "shard-0-of-1.jsonl").unlink()  # results copied without the runner's state
    (folder / "images" / "s01_0.png").write_bytes(b"truncated")
    integrity.start_of_run(cfg, {})
    assert not (folder / "manifest.jsonl").exists()
    summary = run_generation(cfg, "smoke", "sdxl", progress=False)  # what Snakemake's rerun does
    assert (summary.generated, summary.kept) == (1, 2)
    assert integrity.check(cfg).damage == []


def test_a_stale_snakemake_lock_is_removed_only_when_no_run_holds_the_folder(tmp_path):
    from harness.resume import claim_run

    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from harness.resume import claim_run; "
                               f"claim_run({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (locks / "0.input.lock").write_text("x")  # the live run's own Snakemake lock
        with pytest.raises(HarnessError, match=rf"another run of this workflow is alive in .* \(pid {holder.pid} "):
            claim_run(tmp_path)
        assert (locks / "0.input.lock").exists()  # a live run: its lock is real
    finally:
        holder.kill()
        holder.wait()
    [notice] = claim_run(tmp_path)
    assert "removed 1 stale Snakemake lock files" in notice and not (locks / "0.input.lock").exists()


@pytest.mark.parametrize("argv,runs", [
    (["snakemake", "--cores", "all", "reports/table1.md"], True),
    (["snakemake", "-c", "2", "-p", "reports/table1.md"], True),
    (["snakemake", "-n", "reports/table1.md"], False),
    (["snakemake", "-np"], False),
    (["snakemake", "--dry-run"], False),
    (["snakemake", "--unlock"], False),
    (["snakemake", "--lint"], False),
    (["snakemake", "--cores", "1", "--report", "report.html"], False),
    (["snakemake", "--list-changes=params"], False),
])
def test_only_invocations_that_run_jobs_claim_the_folder(argv, runs):
    from harness.resume import executes

    assert executes(argv) is runs


def test_a_second_writer_of_a_generation_shard_is_refused(tmp_path):
    from harness.io import exclusive_lock

    lock = tmp_path / "shard.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; from harness.io import exclusive_lock\n"
                               f"with exclusive_lock({str(lock)!r}, 'x'):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HarnessError, match=rf"generation of smoke/sdxl shard 0 is locked by another process \(pid {holder.pid}"):
            with exclusive_lock(lock, "generation of smoke/sdxl shard 0", wait_s=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(lock, "x", wait_s=0):  # the kernel released it with the holder
        pass
