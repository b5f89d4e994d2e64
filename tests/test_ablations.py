"""Derived ablation systems, paired statistics, prompt expansion and the table renderers."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from harness.ablations import derive_systems, expansion_pairs, tr_sweep_points
from harness.config import validate_config
from harness.errors import ConfigError, HarnessError
from harness.expansion import FEW_SHOT, SYSTEM_PROMPT, OfflineExpander, OpenAIExpander, run_expansion
from harness.stats import paired_bootstrap
from tests.conftest import ROOT, smoke_config


def test_tr_sweep_derives_one_relay_per_point_on_the_same_base(tmp_path):
    cfg = smoke_config(tmp_path)
    points = tr_sweep_points(cfg)
    assert points == [(200, "cogview3-tr200"), (400, "cogview3-tr400"), (500, "cogview3-tr500"), (600, "cogview3-tr600"),
                      (800, "cogview3-tr800")]
    for t_r, name in points:
        spec = cfg["systems"][name]
        assert spec["t_r"] == t_r and spec["input"] == "cogview3-base" and spec["steps"] == 10
    assert cfg["systems"]["cogview3-tr200"]["ablation"] == "tr_sweep" and "ablation" not in cfg["systems"]["cogview3"]
    assert {k: v for k, v in cfg["systems"]["cogview3-tr500"].items() if k != "ablation"} == cfg["systems"]["cogview3"]
    # about 10 relay steps each, from the full schedule (Fig. 6)
    from models.cogview3.schedule import relay_timesteps

    assert relay_timesteps(200, 10) == list(range(199, 0, -20))
    assert all(9 <= len(relay_timesteps(t, 10)) <= 11 for t in (200, 400, 500, 600, 800))


def test_expansion_twins_follow_the_stage_chain_and_validation_is_idempotent(tmp_path):
    cfg = smoke_config(tmp_path)
    assert expansion_pairs(cfg) == [("cogview3", "cogview3-expanded"), ("sdxl", "sdxl-expanded"),
                                    ("stable-cascade", "stable-cascade-expanded"), ("lcm-sdxl", "lcm-sdxl-expanded")]
    twin = cfg["systems"]["cogview3-expanded"]
    assert twin["input"] == "cogview3-base-expanded" and twin["expand"] is True
    assert cfg["systems"]["cogview3-base-expanded"]["expand"] is True
    again = validate_config(json.loads(json.dumps(cfg)))  # the Snakefile's snapshot is validated again by the CLI
    assert again["systems"] == cfg["systems"]


def test_ablation_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'expansion.systems.0': 'nope' is not a system"):
        smoke_config(tmp_path, expansion={"enabled": True, "systems": ["nope"]})
    with pytest.raises(ConfigError, match=r"'expansion.base_url': required by backend 'openai'"):
        smoke_config(tmp_path, expansion={"enabled": True, "backend": "openai", "systems": []})
    cfg = smoke_config(tmp_path)
    raw = {k: v for k, v in cfg.items()}
    raw["systems"] = {k: v for k, v in cfg["systems"].items() if not v.get("ablation")}
    raw["systems"]["cogview3-tr200"] = dict(raw["systems"]["sdxl"])
    with pytest.raises(ConfigError, match="'systems.cogview3-tr200': the name is taken by the T_r sweep"):
        derive_systems(raw)


def test_table3_dry_run_plans_one_base_pass_and_one_relay_per_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "-n",
         "reports/table3.md"], capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = [line.split("system=")[1].split(",")[0] for line in proc.stdout.splitlines()
               if "wildcards:" in line and "system=" in line and "shard=" in line]
    assert sorted(planned) == sorted(["cogview3-base", "cogview3-tr200", "cogview3-tr400", "cogview3-tr500",
                                      "cogview3-tr600", "cogview3-tr800"])  # k=5 points: 1 base + 5 relays


def test_paired_bootstrap_detects_a_shift_and_covers_the_truth():
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 1.0, 200)  # large variation the two systems share
    a = {f"p{i}": e + 0.1 + rng.normal(0, 0.05) for i, e in enumerate(prompt_effect)}
    b = {f"p{i}": e + rng.normal(0, 0.05) for i, e in enumerate(prompt_effect)}
    d = paired_bootstrap(a, b, seed=1)
    assert d.diff.lo < 0.1 < d.diff.hi and d.diff.lo > 0.08 and d.p_value < 0.01 and d.diff.n == 200
    same = paired_bootstrap(b, {k: v + rng.normal(0, 0.05) for k, v in b.items()}, seed=1)
    assert same.diff.lo < 0 < same.diff.hi and same.p_value > 0.05
    # unpaired, the shared prompt variation (sd 1) would swamp the 0.1 difference
    assert (d.diff.hi - d.diff.lo) < 0.05
    with pytest.raises(ValueError, match="share no prompts"):
        paired_bootstrap({"x": 1.0}, {"y": 1.0})


class CountingExpander(OfflineExpander):
    def __init__(self):
        self.calls = 0

    def expand_one(self, prompt):
        self.calls += 1
        return super().expand_one(prompt)


def test_expansions_are_cached_and_replayed_without_the_model(tmp_path):
    cfg = smoke_config(tmp_path, num_prompts=4)
    exp = CountingExpander()
    out = run_expansion(cfg, "smoke", exp)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert exp.calls == 4 and len(rows) == 4 and all(r["expanded"].startswith(r["prompt"].rstrip(".")) for r in rows)
    assert rows[0]["expanded"] == OfflineExpander().expand([rows[0]["prompt"]])[0]  # deterministic
    out.unlink()
    run_expansion(cfg, "smoke", exp)
    assert exp.calls == 4  # replayed from the cache
    with open(tmp_path / "results" / ".cache" / "expansions" / "smoke.jsonl", "a") as f:
        f.write('{"expander": "x", "pro')  # a crash mid-append
    run_expansion(smoke_config(tmp_path, num_prompts=5), "smoke", exp)
    assert exp.calls == 5


def test_openai_expander_sends_the_official_sampling_and_our_instructions(monkeypatch):
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"] = self.path
            seen["auth"] = self.headers["Authorization"]
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            payload = json.dumps({"choices": [{"message": {"content": "A red cube\non a table.\n"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TEST_KEY", "sk-test")
        exp = OpenAIExpander(f"http://127.0.0.1:{server.server_port}/v4", "glm-4-plus", api_key_env="TEST_KEY")
        assert exp.expand(["a red cube"]) == ["A red cube on a table."]  # newlines -> spaces, collapsed
    finally:
        server.shutdown()
    body = seen["body"]
    assert seen["path"] == "/v4/chat/completions" and seen["auth"] == "Bearer sk-test"
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["model"]) == (0.01, 0.7, 300, "glm-4-plus")
    msgs = body["messages"]
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT} and len(msgs) == 2 + 2 * len(FEW_SHOT)
    assert msgs[-1]["content"] == 'Create an imaginative image descriptive caption for the user input : "a red cube"'

    monkeypatch.delenv("TEST_KEY")
    with pytest.raises(HarnessError, match="environment variable TEST_KEY"):
        exp.expand(["x"])


def test_truncation_counts_use_each_systems_text_limit(tmp_path):
    from harness.expansion_report import truncation_counts

    cfg = smoke_config(tmp_path)
    short, long = "a cat", " ".join(["a very detailed red cat"] * 30)  # 150 words: over 77 CLIP tokens, under 225 T5
    clip = truncation_counts(cfg, "sdxl", [short, short], [short, long])
    assert (clip["limit"], clip["original"], clip["expanded"]) == (77, 0, 1)
    t5 = truncation_counts(cfg, "cogview3", [short, short], [long, long + " " + long])
    assert t5["limit"] == 225 and t5["original"] == 0 and t5["expanded"] >= 1


def test_table_renderers_write_csv_latex_and_the_paper_difference(monkeypatch):
    from harness import paper
    from harness.stats import Estimate
    from harness.tables import Cell, Table, render_csv, render_latex, render_markdown

    monkeypatch.setattr(paper, "paper_values", lambda: {"table1": {"drawbench": {"sdxl": {"hpsv2": 0.280}}}})
    assert paper.paper_value("table1", "drawbench", "sdxl", "hpsv2") == 0.28
    assert paper.paper_value("table1", "drawbench", "sdxl", "aesthetic") is None
    est = Estimate(0.2876, 0.2800, 0.2950, 200)
    cell = Cell(est.fmt(), estimate=est, paper=0.280)
    assert cell.fmt() == "0.288 [0.280, 0.295] (N=200) (paper 0.280, Δ +0.008)"
    table = Table("Table 1: a_b", ["Model", "Steps", "HPS v2"], [["sdxl", "50", cell]],
                  [{"table": "table1", "benchmark": "drawbench", "system": "sdxl", "metric": "hpsv2", "mean": 0.2876,
                    "ci_low": 0.28, "ci_high": 0.295, "n": 200, "paper": 0.28, "diff_vs_paper": 0.0075}])
    assert render_markdown(table, "> banner").splitlines()[0] == "> banner"
    csv_lines = render_csv(table).splitlines()
    assert csv_lines[0].startswith("table,benchmark,system,metric,mean,ci_low,ci_high,n,paper,diff_vs_paper")
    assert csv_lines[1].startswith("table1,drawbench,sdxl,hpsv2,0.2876,0.28,0.295,200,0.28,0.0075")
    tex = render_latex(table, "> **Smoke**")
    assert r"sdxl & 50 & $0.288_{\pm 0.007}$ \\" in tex and r"Table 1: a\_b" in tex and tex.startswith("% Smoke")


def _tiny_chat_lm(folder, chat_template=True):
    """A tiny GPT-2 with a word-level tokenizer and a chat template, saved like a hub folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from harness.expansion import chat_messages

    words = sorted({w for m in chat_messages("a red car") for w in m["content"].lower().split()})
    vocab = {t: i for i, t in enumerate(["<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", *words])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    if chat_template:
        tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] | lower }} <eos> {% endfor %}"
                             "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=2048, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=1, bos_token_id=1))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model.eval(), tok  # eval: GPT-2's dropout would make the reference decoding random


def test_transformers_expander_runs_a_local_chat_lm_greedily(tmp_path):
    import torch

    from harness.errors import HarnessError
    from harness.expansion import TransformersExpander, chat_messages

    model, tok = _tiny_chat_lm(tmp_path / "lm")
    expander = TransformersExpander(str(tmp_path / "lm"), max_tokens=6, device="cpu")
    got = expander.expand_one("a red car")

    # Reference: the chat-formatted prompt by hand, then argmax decoding token by token.
    text = "".join(f"<|{m['role']}|> {m['content'].lower()} <eos> " for m in chat_messages("a red car")) + "<|assistant|> "
    ids = torch.tensor([tok(text)["input_ids"]])
    n = ids.shape[1]
    with torch.inference_mode():
        for _ in range(6):
            nxt = model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            if nxt.item() == tok.eos_token_id:
                break
    assert got == tok.decode(ids[0, n:], skip_special_tokens=True)
    assert expander.fingerprint()["decoding"] == "greedy" and len(expander.digest()) == 16

    _tiny_chat_lm(tmp_path / "base", chat_template=False)
    with pytest.raises(HarnessError, match="has no chat template"):
        TransformersExpander(str(tmp_path / "base"), device="cpu").expand_one("a red car")
    with pytest.raises(HarnessError, match=r"expansion.model_path.*is not a folder"):
        TransformersExpander(str(tmp_path / "missing"), device="cpu").expand_one("a red car")
