"""Seeds, manifests, resumption and sharding of the generation runner, on the tiny SDXL."""

import json

import numpy as np
import pytest
from PIL import Image

from harness.errors import HarnessError
from harness.io import read_jsonl, sha256_file
from harness.manifests import merge_manifests, shard_manifest_path, system_dir
from harness.runner import run_generation
from harness.seeds import sample_seed
from models.registry import build_system
from tests.conftest import smoke_config


@pytest.fixture(scope="module")
def sdxl():
    cfg = smoke_config_for_module()
    spec = dict(cfg["systems"]["sdxl"], steps=4)  # fewer steps than the smoke profile: these tests run it often
    return build_system("sdxl", spec, cfg["weights"], "cpu", "float32", batch_invariant=True).build()


def smoke_config_for_module():
    import tempfile
    from pathlib import Path

    return smoke_config(Path(tempfile.mkdtemp()))


def images_bytes(cfg, system="sdxl", benchmark="smoke") -> dict[str, bytes]:
    d = system_dir(cfg["results_dir"], benchmark, system) / "images"
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.png"))}


def test_sample_seed_is_pinned_and_keyed_on_every_part():
    s = sample_seed(0, "drawbench", "017", 0)
    assert s == sample_seed(0, "drawbench", "017", 0)
    assert s == 9215156527329381939  # pinned: changing the derivation changes every image
    others = {sample_seed(1, "drawbench", "017", 0), sample_seed(0, "parti", "017", 0),
              sample_seed(0, "drawbench", "018", 0), sample_seed(0, "drawbench", "017", 1)}
    assert s not in others and len(others) == 4
    assert 0 <= s < 2**63


def test_manifest_rows_describe_each_image(tmp_path, sdxl):
    cfg = smoke_config(tmp_path, num_prompts=3, samples_per_prompt=2, batch_size=4)
    summary = run_generation(cfg, "smoke", "sdxl", system=sdxl, progress=False)
    assert (summary.total, summary.generated, summary.kept) == (6, 6, 0)
    rows = read_jsonl(summary.manifest)
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(f"s0{i}", s) for i in range(3) for s in range(2)]
    base = system_dir(cfg["results_dir"], "smoke", "sdxl")
    fp = json.loads((base / "system.json").read_text())
    for r in rows:
        assert sha256_file(base / r["image"]) == r["sha256"]
        assert r["seed"] == sample_seed(0, "smoke", r["prompt_id"], r["sample"])
        assert r["system_fingerprint"] == fp["digest"]
        assert r["prompt"] and r["wall_time_s"] > 0
        assert Image.open(base / r["image"]).size == (64, 64)
    assert fp["fingerprint"]["params"] == {"steps": 4, "guidance": 5.0, "resolution": 64, "expand": False, "ablation": None}
    assert r["original_prompt"] == r["prompt"]  # no expansion: the model saw the original text
    # two samples of one prompt are different images
    assert rows[0]["sha256"] != rows[1]["sha256"]


def test_png_bytes_do_not_depend_on_batch_size_or_shards(tmp_path, sdxl):
    a = smoke_config(tmp_path / "a", num_prompts=5, batch_size=1)
    run_generation(a, "smoke", "sdxl", system=sdxl, progress=False)
    b = smoke_config(tmp_path / "b", num_prompts=5, batch_size=3, shards=2)
    paths = [run_generation(b, "smoke", "sdxl", shard=i, shards=2, system=sdxl, progress=False).manifest for i in range(2)]
    merged = merge_manifests(paths, system_dir(b["results_dir"], "smoke", "sdxl") / "manifest.jsonl")
    assert len(merged) == 5
    assert images_bytes(a) == images_bytes(b)
    assert len(images_bytes(a)) == 5


def test_batched_mode_draws_the_same_images_up_to_float_rounding(tmp_path):
    """Without batch_invariant the noise is still per sample; only kernel rounding differs (<= 1-2 LSB)."""
    cfg = smoke_config(tmp_path, num_prompts=4, batch_invariant=False)
    sys = build_system("sdxl", dict(cfg["systems"]["sdxl"], steps=4), cfg["weights"], "cpu", "float32", batch_invariant=False)
    seeds = [sample_seed(0, "smoke", f"s0{i}", 0) for i in range(4)]
    prompts = ["a red car", "two cats", "a sign", "a dog"]
    batched = sys.generate(prompts, seeds)
    single = [sys.generate([p], [s])[0] for p, s in zip(prompts, seeds)]
    for x, y in zip(batched, single):
        diff = np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int))
        assert diff.max() <= 2 and diff.mean() < 0.01
    # ... and a different seed gives a clearly different image
    other = sys.generate([prompts[0]], [seeds[0] + 1])[0]
    assert np.abs(np.asarray(other, dtype=int) - np.asarray(single[0], dtype=int)).mean() > 1


class Interrupt(Exception):
    pass


class Crashing:
    """Wraps a system and raises after ``after`` generate() calls, as a killed job would stop."""

    def __init__(self, system, after):
        self.system, self.after, self.calls = system, after, 0

    def fingerprint(self):
        return self.system.fingerprint()

    def build(self):
        return self.system.build()

    def generate(self, prompts, seeds, inputs=None):
        if self.calls == self.after:
            raise Interrupt()
        self.calls += 1
        return self.system.generate(prompts, seeds, inputs)


def test_killed_run_resumes_losing_at_most_the_batch_in_flight(tmp_path, sdxl):
    full = smoke_config(tmp_path / "full", num_prompts=7, batch_size=2)
    run_generation(full, "smoke", "sdxl", system=sdxl, progress=False)

    cfg = smoke_config(tmp_path / "resumed", num_prompts=7, batch_size=2)
    with pytest.raises(Interrupt):
        run_generation(cfg, "smoke", "sdxl", system=Crashing(sdxl, after=2), progress=False)
    base = system_dir(cfg["results_dir"], "smoke", "sdxl")
    state = read_jsonl(base / ".state" / "shard-0-of-1.jsonl")
    assert len(state) == 4  # two finished batches survive the crash
    assert not shard_manifest_path(cfg["results_dir"], "smoke", "sdxl", 0, 1).exists()

    counting = Crashing(sdxl, after=-1)
    summary = run_generation(cfg, "smoke", "sdxl", system=counting, progress=False)
    assert (summary.generated, summary.kept) == (3, 4)
    assert counting.calls == 2  # 3 remaining images in batches of 2
    assert images_bytes(cfg) == images_bytes(full)

    again = Crashing(sdxl, after=0)  # any generate() call would raise
    summary = run_generation(cfg, "smoke", "sdxl", system=again, progress=False)
    assert (summary.generated, summary.kept) == (0, 7)


def generate_shards(cfg, shards, system):
    """Every shard of smoke/sdxl with ``shards`` shards, then the merge (as the DAG does); images made."""
    made = sum(run_generation(cfg, "smoke", "sdxl", shard, shards, system=system, progress=False).generated
               for shard in range(shards))
    if shards > 1:
        merge_manifests([shard_manifest_path(cfg["results_dir"], "smoke", "sdxl", i, shards) for i in range(shards)],
                        system_dir(cfg["results_dir"], "smoke", "sdxl") / "manifest.jsonl")
    return made


@pytest.mark.parametrize("before,after", [(1, 4), (4, 1), (4, 3)])
def test_images_are_kept_whatever_the_shard_count_that_made_them(tmp_path, sdxl, before, after):
    cfg = smoke_config(tmp_path, num_prompts=16, batch_size=4)
    assert generate_shards(cfg, before, sdxl) == 16
    made = images_bytes(cfg)
    never = Crashing(sdxl, after=0)  # any generate() call would raise: nothing may be made again
    assert generate_shards(cfg, after, never) == 0
    assert images_bytes(cfg) == made
    rows = read_jsonl(system_dir(cfg["results_dir"], "smoke", "sdxl") / "manifest.jsonl")
    assert len(rows) == 16 and {r["sha256"] for r in rows} == {sha256_file(
        system_dir(cfg["results_dir"], "smoke", "sdxl") / r["image"]) for r in rows}


def test_a_run_killed_under_one_shard_count_resumes_under_another(tmp_path, sdxl):
    cfg = smoke_config(tmp_path, num_prompts=16, batch_size=2)
    with pytest.raises(Interrupt):
        run_generation(cfg, "smoke", "sdxl", 0, 1, system=Crashing(sdxl, after=3), progress=False)  # 6 of 16 made
    counting = Crashing(sdxl, after=-1)
    assert generate_shards(cfg, 4, counting) == 10
    reference = smoke_config(tmp_path / "reference", num_prompts=16, batch_size=2)
    generate_shards(reference, 1, sdxl)
    assert images_bytes(cfg) == images_bytes(reference)


def test_changed_parameters_regenerate_and_altered_images_are_refused(tmp_path, sdxl):
    cfg = smoke_config(tmp_path, num_prompts=2)
    run_generation(cfg, "smoke", "sdxl", system=sdxl, progress=False)
    base = system_dir(cfg["results_dir"], "smoke", "sdxl")

    img = base / "images" / "s00_0.png"
    Image.new("RGB", (64, 64), "white").save(img)
    with pytest.raises(HarnessError, match=r"s00_0.png does not match the sha256 .* verify --repair"):
        run_generation(cfg, "smoke", "sdxl", system=sdxl, progress=False)
    img.unlink()
    summary = run_generation(cfg, "smoke", "sdxl", system=sdxl, progress=False)
    assert (summary.generated, summary.kept) == (1, 1)  # the deleted image comes back

    cfg2 = smoke_config(tmp_path, num_prompts=2)
    cfg2["systems"]["sdxl"]["steps"] = 2
    other = build_system("sdxl", cfg2["systems"]["sdxl"], cfg2["weights"], "cpu", "float32", batch_invariant=True)
    summary = run_generation(cfg2, "smoke", "sdxl", system=other, progress=False)
    assert (summary.generated, summary.kept) == (2, 0)


def test_merge_refuses_overlapping_shards(tmp_path, sdxl):
    cfg = smoke_config(tmp_path, num_prompts=2)
    m = run_generation(cfg, "smoke", "sdxl", system=sdxl, progress=False).manifest
    with pytest.raises(HarnessError, match="overlap"):
        merge_manifests([m, m], tmp_path / "merged.jsonl")
