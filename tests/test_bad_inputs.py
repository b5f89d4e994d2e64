"""The bad-input table: each case is one hostile input, the command a user would run on it, its exit
code and the first line of its message. Nothing here may end silently with exit 0.

Config cases run ``python -m harness validate`` (what the Snakefile checks before any job); results
cases run the command that makes numbers from them (table1, regression, humaneval-export) or
``verify``. Every command runs in this process through :func:`harness.cli.main`.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from harness.cli import EXIT_USAGE, main
from harness.io import atomic_write_jsonl, read_jsonl
from harness.manifests import manifest_path, scores_path, seal_row, system_dir
from tests.conftest import ROOT, shared_data_dir, smoke_config
from tests.helpers import fake_results, fake_scores

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


# ---- building the inputs -------------------------------------------------------------------------


def config_file(tmp, change=None, text=None) -> list[str]:
    """``validate --config`` on the smoke config with ``change`` applied (or on ``text`` as written)."""
    cfg = json.loads(json.dumps(BASE))
    cfg.update(results_dir=str(tmp / "results"), reports_dir=str(tmp / "reports"),
               thresholds=str(ROOT / "config" / "thresholds.yaml"))
    if change:
        change(cfg)
    path = tmp / "c.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg, sort_keys=False))
    return ["validate", "--config", str(path)]


def setting(**values):
    return lambda cfg: cfg.update(values)


def system(name, spec):
    return lambda cfg: cfg["systems"].__setitem__(name, spec)


def relay(input_name):
    return system("cogview3", {"model": "cogview3-relay", "input": input_name, "weights": "cogview3-relay"})


def prompt_set(tmp, text, name="mine", suffix=".csv"):
    """A config naming a custom prompt set with ``text`` as its file."""
    path = tmp / f"prompts{suffix}"
    path.write_text(text)

    def change(cfg):
        cfg["prompt_sets"] = {name: str(path)}
        cfg["benchmarks"] = ["smoke", name]
        cfg["num_prompts"] = None
    return change


def pinned_copy(tmp, change_bytes):
    """A config whose data_dir holds drawbench.csv with ``change_bytes`` applied."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("prompt data not found (HARNESS_TEST_DATA)")
    folder = tmp / "data"
    folder.mkdir()
    (folder / "drawbench.csv").write_bytes(change_bytes((data / "drawbench.csv").read_bytes()))
    return setting(data_dir=str(folder), benchmarks=["drawbench"], humaneval={**BASE["humaneval"], "benchmark": "drawbench"})


def weights_file(tmp):
    """A paper-profile SDXL entry given as one file of the folder the loader reads."""
    path = tmp / "sdxl" / "sdxl.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"x")
    return lambda cfg: cfg["weights"].__setitem__("sdxl", str(path))


def results(tmp, damage=None, systems=("sdxl", "lcm-sdxl")) -> dict:
    """Fake results (sealed manifests, PNGs, score files) for a two-system config; its snapshot path."""
    cfg = smoke_config(tmp, metrics=["aesthetic"], tr_sweep=[], expansion={"enabled": False},
                       humaneval={"benchmark": "smoke", "comparisons": [list(systems)], "prompts": ["original"]})
    cfg["systems"] = {s: cfg["systems"][s] for s in systems}
    fake_results(cfg, 4, systems=systems)
    fake_scores(cfg, systems)
    if damage:
        damage(cfg)
    snapshot = tmp / "snapshot.json"
    snapshot.write_text(json.dumps(cfg))
    return cfg


def rewrite(cfg, system_name, change):
    path = manifest_path(cfg["results_dir"], "fake", system_name)
    atomic_write_jsonl(path, change(read_jsonl(path)))


def on_results(command, damage, *extra):
    def build(tmp):
        results(tmp, damage)
        return [command, "--config-snapshot", str(tmp / "snapshot.json"), *extra]
    return build


def edit_row(cfg):
    def change(rows):
        rows[1]["prompt"] = "prompt 1, edited"
        return rows
    rewrite(cfg, "sdxl", change)


def drop_row(cfg):
    rewrite(cfg, "sdxl", lambda rows: rows[:2] + rows[3:])


def extra_row(cfg):
    rewrite(cfg, "sdxl", lambda rows: rows + [seal_row({**rows[0], "prompt_id": "p999", "prompt_index": 999})])


def resealed_prompt(cfg):
    def change(rows):
        rows[0]["original_prompt"] = rows[0]["prompt"] = "another prompt"
        return [seal_row(r) for r in rows]
    rewrite(cfg, "sdxl", change)


def stale_score(cfg):
    path = scores_path(cfg["results_dir"], "fake", "sdxl", "aesthetic")
    data = json.loads(path.read_text())
    data["rows"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))


def no_score(cfg):
    scores_path(cfg["results_dir"], "fake", "lcm-sdxl", "aesthetic").unlink()


def image_of(cfg, pid="p002"):
    return system_dir(cfg["results_dir"], "fake", "sdxl") / "images" / f"{pid}_0.png"


def truncate_image(cfg):
    data = image_of(cfg).read_bytes()
    image_of(cfg).write_bytes(data[: len(data) // 2])


def delete_image(cfg):
    image_of(cfg).unlink()


def unsealed(cfg):
    rewrite(cfg, "sdxl", lambda rows: [{k: v for k, v in r.items() if k != "row_sha256"} for r in rows])


def sheet(tmp, header):
    """humaneval-import of one sheet with ``header`` against a real export of fake results."""
    cfg = smoke_config(tmp, humaneval={"benchmark": "smoke", "comparisons": [["cogview3", "sdxl"]],
                                       "prompts": ["original"], "annotators": 1, "attention_checks": 0,
                                       "image_size": 16, "annotations_dir": str(tmp / "filled")})
    fake_results(cfg, 2, systems=("cogview3", "sdxl"))
    snapshot = tmp / "snapshot.json"
    snapshot.write_text(json.dumps(cfg))
    assert main(["humaneval-export", "--config-snapshot", str(snapshot), "--out", str(tmp / "export"),
                 "--key", str(tmp / "key.json")]) == 0
    exported = (tmp / "export" / "sheets" / "annotator-01.csv").read_text().splitlines()
    lines = [header] + exported[1:]
    (tmp / "filled.csv").write_text("\n".join(lines) + "\n")
    return ["humaneval-import", "--config-snapshot", str(snapshot), "--key", str(tmp / "key.json"),
            "--out", str(tmp / "results.md"), str(tmp / "filled.csv")]


COLUMNS = "export_id,sheet,item,pair_id,prompt,image_left,image_right,alignment,aesthetics"


class Refusing(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.dumps({"error": {"message": "Invalid API key provided", "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def expansion_401(tmp, url):
    def change(cfg):
        cfg["expansion"] = {"enabled": True, "backend": "openai", "base_url": url, "model": "m",
                            "api_key_env": "HARNESS_TEST_KEY", "systems": ["sdxl"], "retries": 5}
    argv = config_file(tmp, change)
    return ["expand", "--config", argv[2], "--benchmark", "smoke"]


# ---- the table ---------------------------------------------------------------------------------------

# (id, build(tmp) -> argv, exit code, regex the first line of the message must match from its start)
CASES = [
    # config file and schema
    ("yaml-syntax", lambda t: config_file(t, text="profile: smoke\nsystems:\n  sdxl: {model: sdxl\nmetrics: []\n"),
     2, r"error: config file .*c\.yaml line 4, column \d+ is not valid YAML \(.*\); fix that line"),
    ("config-file-missing", lambda t: ["validate", "--config", str(t / "nope.yaml")], 2,
     r"error: config file .*nope\.yaml does not exist"),
    ("unknown-top-level-key", lambda t: config_file(t, setting(sedd=1)), 2,
     r"error: config key 'sedd': unknown key; known keys here: "),
    ("bad-device", lambda t: config_file(t, setting(device="gpu")), 2, r"error: config key 'device': 'gpu' does not match"),
    ("samples-zero", lambda t: config_file(t, setting(samples_per_prompt=0)), 2,
     r"error: config key 'samples_per_prompt': 0 is less than the minimum of 1"),
    ("unknown-metric", lambda t: config_file(t, setting(metrics=["fidd"])), 2,
     r"error: config key 'metrics.0': unknown metric 'fidd'; known: "),
    ("metric-without-weights", lambda t: config_file(t, lambda c: c["weights"].pop("hpsv2")), 2,
     r"error: config key 'weights.hpsv2': missing; metric 'hpsv2' needs its checkpoint path or `tiny`"),
    ("unknown-benchmark", lambda t: config_file(t, setting(benchmarks=["drawbench2"])), 2,
     r"error: config key 'benchmarks.0': unknown benchmark 'drawbench2'; known: "),
    # semantic checks
    ("duplicate-sweep-point", lambda t: config_file(t, setting(tr_sweep=[200, 500, 500])), 2,
     r"error: config key 'tr_sweep.2': T_r 500 is listed twice \(also tr_sweep.1\); each T_r is one row of Table 3"),
    ("relay-input-is-sdxl", lambda t: config_file(t, relay("sdxl")), 2,
     r"error: config key 'systems.cogview3.input': 'sdxl' is a 'sdxl' system, but a 'cogview3-relay' system relays "
     r"the latents of a base stage of model cogview3-base"),
    ("relay-input-is-a-relay", lambda t: config_file(t, relay("cogview3-official")), 2,
     r"error: config key 'systems.cogview3.input': 'cogview3-official' is a 'cogview3-relay' system"),
    ("relay-input-itself", lambda t: config_file(t, relay("cogview3")), 2,
     r"error: config key 'systems.cogview3.input': 'cogview3' names itself"),
    ("relay-inputs-in-a-circle", lambda t: config_file(t, lambda c: (relay("cogview3-official")(c), system(
        "cogview3-official", {"model": "cogview3-relay", "input": "cogview3", "weights": "cogview3-relay"})(c))), 2,
     r"error: config key 'systems.cogview3.input': the inputs go round in a circle "
     r"\(cogview3 -> cogview3-official -> cogview3\)"),
    ("relay-input-unknown", lambda t: config_file(t, relay("cogview3-bsae")), 2,
     r"error: config key 'systems.cogview3.input': 'cogview3-bsae' is not a system in this config"),
    ("input-on-a-text-to-image-model", lambda t: config_file(t, system("sdxl", {"model": "sdxl", "input": "cogview3-base"})),
     2, r"error: config key 'systems.sdxl.input': model 'sdxl' reads no input images; remove the key"),
    ("num-prompts-beyond-the-set", lambda t: config_file(t, setting(num_prompts=20)), 2,
     r"error: config key 'num_prompts': 20, but prompt set 'smoke' has only 16 prompts"),
    ("float16-on-cpu", lambda t: config_file(t, setting(device="cpu", dtype="float16")), 2,
     r"error: config key 'dtype': float16 on a CPU"),
    ("thresholds-missing", lambda t: config_file(t, setting(thresholds=str(t / "thresholds.yaml"))), 2,
     r"error: config key 'thresholds': .*thresholds\.yaml does not exist; point it at a thresholds file"),
    # prompt files
    ("crlf-prompt-file", lambda t: config_file(t, pinned_copy(t, lambda b: b.replace(b"\n", b"\r\n"))), 2,
     r"error: prompt set 'drawbench': .*CRLF"),
    ("altered-prompt-file", lambda t: config_file(t, pinned_copy(t, lambda b: b.replace(b"A red", b"A blue", 1))), 2,
     r"error: prompt set 'drawbench': file .*drawbench\.csv has sha256 [0-9a-f]{64}, expected"),
    ("custom-empty-prompt", lambda t: config_file(t, prompt_set(t, "id,prompt\na,a cat\nb,   \n")), 2,
     r"error: prompt set 'mine': .*prompts\.csv line 3: "),
    ("custom-overlong-prompt", lambda t: config_file(t, prompt_set(t, "id,prompt\na,\"a cat\nb,a dog\n" + "c,x\n" * 400)),
     2, r"error: prompt set 'mine': .*prompts\.csv line 2: .*\b1\d{3}|prompt set 'mine': .*characters"),
    ("custom-duplicate-id", lambda t: config_file(t, prompt_set(t, "id\tprompt\na\ta cat\na\ta dog\n", suffix=".tsv")), 2,
     r"error: prompt set 'mine': .*prompts\.tsv line 3: "),
    ("custom-unknown-column", lambda t: config_file(t, prompt_set(t, "id,promt\na,a cat\n")), 2,
     r"error: prompt set 'mine': .*prompts\.csv.*promt"),
    ("custom-file-missing", lambda t: config_file(t, lambda c: (c.__setitem__("prompt_sets", {"mine": str(t / "no.csv")}),
                                                             c.__setitem__("benchmarks", ["mine"]),
                                                             c.__setitem__("num_prompts", None))), 2,
     r"error: prompt set 'mine': "),
    ("custom-name-of-a-builtin", lambda t: config_file(t, setting(prompt_sets={"drawbench": str(t / "x.csv")})), 2,
     r"error: config key 'prompt_sets.drawbench': "),
    # results: what makes numbers refuses what it cannot trust
    ("manifest-row-deleted", on_results("table1", drop_row, "--out", "/dev/null"), 2,
     r"error: manifest .*fake/sdxl/manifest\.jsonl \(fake/sdxl\) does not cover the config's 4 \(prompt id, sample\) "
     r"pairs: 1 missing \(p002/0\)"),
    ("manifest-row-added", on_results("regression", extra_row, "--out", "/dev/null"), 2,
     r"error: manifest .*\(fake/sdxl\) does not cover the config's 4 \(prompt id, sample\) pairs: 1 not in the "
     r"config's prompts \(p999/0\)"),
    ("manifest-prompt-edited", on_results("table1", edit_row, "--out", "/dev/null"), 2,
     r"error: manifest .*fake/sdxl/manifest\.jsonl line 2 \(prompt 'p001' sample 0\) was edited after generation "
     r"\(its fields no longer match its row_sha256\); the image is not at fault"),
    ("manifest-edited-and-resealed", on_results("humaneval-export", resealed_prompt, "--out", "x", "--key", "k.json"), 2,
     r"error: manifest .*\(fake/sdxl\) row p000/0 has the prompt 'another prompt', but the prompt set has 'prompt 0'"),
    ("manifest-unsealed", on_results("table1", unsealed, "--out", "/dev/null"), 2,
     r"error: manifest .*fake/sdxl/manifest\.jsonl line 1 \(prompt 'p000' sample 0\) has no row_sha256 seal"),
    ("score-file-stale", on_results("table1", stale_score, "--out", "/dev/null"), 2,
     r"error: score file .*fake/sdxl/scores/aesthetic\.json scores 1 images that are not the ones fake/sdxl's manifest "
     r"lists now \(p000/0\): it is stale"),
    ("score-file-missing", on_results("regression", no_score, "--out", "/dev/null"), 2,
     r"error: scores file .*fake/lcm-sdxl/scores/aesthetic\.json is missing; run `snakemake .*` first"),
    ("image-truncated", on_results("verify", truncate_image), 2,
     r"error: 1 problem in .*results \(checked 2 manifests, 8 images \(8 hashed\), 2 score files\):"),
    ("image-truncated-table", on_results("table1", truncate_image, "--out", "/dev/null"), 2,
     r"error: image .*fake/sdxl/images/p002_0\.png \(fake/sdxl\) was changed after generation \(its sha256 differs "
     r"from its sealed manifest row\); regenerate exactly the damaged images: python -m harness verify --repair"),
    ("weights-file-not-folder", lambda t: config_file(t, weights_file(t)), 2,
     r"error: weights\.sdxl \(.*sdxl\.safetensors\): diffusers folder: .*sdxl\.safetensors is a file, but a folder "
     r"is expected here: give the folder that holds it \(.*/sdxl\), not one of its files"),
    ("image-deleted", on_results("table1", delete_image, "--out", "/dev/null"), 2,
     r"error: image .*fake/sdxl/images/p002_0\.png listed in .*manifest\.jsonl is missing; regenerate exactly the "
     r"missing images: python -m harness verify --repair"),
    # annotation sheets
    ("sheet-unknown-column", lambda t: sheet(t, COLUMNS + ",notes"), 2,
     r"error: .*filled\.csv: unknown column\(s\) 'notes'; the sheet must keep exactly the exported columns"),
    ("sheet-missing-column", lambda t: sheet(t, COLUMNS.replace(",aesthetics", ",aesthetic")), 2,
     r"error: .*filled\.csv: missing column\(s\) aesthetics"),
]


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("build,code,first_line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, build, code, first_line):
    argv = build(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    assert re.match(first_line, err[0]), err[0]


def test_an_expansion_server_refusing_the_key_fails_at_once_with_its_message(tmp_path, capsys, refusing_server,
                                                                              monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_KEY", "sk-test-do-not-print")
    assert main(expansion_401(tmp_path, refusing_server)) == EXIT_USAGE
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert first.startswith("error: prompt expansion") and "401" in first and "Invalid API key provided" in first, first
    assert "sk-test-do-not-print" not in err
