"""Prompt expansion (harness/expansion.py): the cache, the OpenAI-compatible and the local transformers expanders."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from harness.errors import HarnessError
from harness.expansion import FEW_SHOT, SYSTEM_PROMPT, OfflineExpander, OpenAIExpander, run_expansion
from tests.conftest import smoke_config


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
