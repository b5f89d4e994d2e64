"""Prompt expansion (harness/expansion.py): the cache, the OpenAI-compatible and the local transformers expanders."""

import json
import threading
import time
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


# --- The OpenAI client's failure handling: fail at once on what retrying cannot fix, retry the rest, never leak
# the key. A real local HTTP server answers each request from a script and records what it received.

OK = (200, {"choices": [{"message": {"content": "A detailed caption."}}]})


class ScriptedAPI:
    """A ThreadingHTTPServer on 127.0.0.1 answering POSTs from ``script``: (status, body[, headers[, delay_s]])
    per request, the last one repeated; ``requests`` records (path, headers, json body) of each."""

    def __init__(self):
        from http.server import ThreadingHTTPServer

        self.script, self.requests = [OK], []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                api.requests.append((self.path, dict(self.headers), json.loads(raw or b"null")))
                status, body, *rest = api.script[min(len(api.requests), len(api.script)) - 1]
                headers, delay = (rest[0] if rest else {}), (rest[1] if len(rest) > 1 else 0)
                if delay:
                    time.sleep(delay)
                payload = (json.dumps(body) if isinstance(body, (dict, list)) else body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (the timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v4"
        self.url = f"{self.base_url}/chat/completions"


@pytest.fixture
def api():
    server = ScriptedAPI()
    threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def slept():
    return []


def _expander(api, slept, monkeypatch, **kw):
    monkeypatch.setenv("EXPANSION_TEST_KEY", "sk-test-key")
    kw = {"retries": 5, "timeout_s": 5, **kw}
    return OpenAIExpander(api.base_url, "glm-4-plus", api_key_env="EXPANSION_TEST_KEY", sleep=slept.append, **kw)


@pytest.mark.parametrize("status, body, said, todo", [
    (401, {"error": {"message": "Invalid token", "type": "invalid_request_error"}}, "Invalid token",
     "environment variable EXPANSION_TEST_KEY (config key 'expansion.api_key_env')"),
    (403, {"error": {"code": "1113", "message": "Your account is in arrears"}}, "Your account is in arrears",
     "environment variable EXPANSION_TEST_KEY"),
    (400, {"error": {"message": "max_tokens must be at most 4095"}}, "max_tokens must be at most 4095",
     "refused the request, its message says why"),
    (404, {"message": "model glm-4-plus does not exist"}, "model glm-4-plus does not exist",
     "'expansion.base_url' (http://127.0.0.1:"),
    (422, {"detail": [{"loc": ["body", "top_p"], "msg": "must be < 1"}]}, "must be < 1", "its message says why"),
    (404, "<html><body>Not Found: no route /v4/chat/completions</body></html>", "Not Found: no route", "expansion.model"),
])
def test_openai_expander_fails_at_once_on_request_errors_with_the_servers_message(api, slept, monkeypatch, status,
                                                                                   body, said, todo):
    api.script = [(status, body), OK]
    with pytest.raises(HarnessError) as err:
        _expander(api, slept, monkeypatch).expand(["a red cube"])
    msg = str(err.value)
    assert len(api.requests) == 1 and slept == []  # not retried, no backoff
    assert msg.startswith(f"prompt expansion: POST {api.url} answered HTTP {status} ")
    assert said in msg and todo in msg and "not retried" in msg and "\n" not in msg


def test_openai_expander_fails_at_once_on_a_malformed_200(api, slept, monkeypatch):
    api.script = [(200, {"id": "x", "choices": []}), OK]
    with pytest.raises(HarnessError, match=r"answered HTTP 200 OK without choices\[0\]\.message\.content, it returned: "
                                           r'\{"id": "x", "choices": \[\]\}') as err:
        _expander(api, slept, monkeypatch).expand(["a red cube"])
    assert api.url in str(err.value) and len(api.requests) == 1 and slept == []
    api.requests.clear()
    api.script = [(200, "<html>a login page</html>"), OK]  # not JSON at all
    with pytest.raises(HarnessError, match="it returned: <html>a login page</html>"):
        _expander(api, slept, monkeypatch).expand(["a red cube"])
    assert len(api.requests) == 1


def test_openai_expander_retries_429_then_returns_the_expansion(api, slept, monkeypatch, caplog):
    api.script = [(429, {"error": {"message": "Rate limit reached for requests"}}), OK]
    assert _expander(api, slept, monkeypatch).expand(["a red cube"]) == ["A detailed caption."]
    assert len(api.requests) == 2 and slept == [1]
    assert api.requests[0][2] == api.requests[1][2]  # the same request again
    [rec] = [r for r in caplog.records if r.name == "harness.expansion"]
    assert rec.levelname == "WARNING"
    assert "attempt 1/5" in rec.getMessage() and "HTTP 429" in rec.getMessage()
    assert "Rate limit reached for requests" in rec.getMessage()


def test_openai_expander_retries_5xx_with_exponential_backoff(api, slept, monkeypatch, caplog):
    api.script = [(500, {"error": {"message": "internal error"}}), (503, "upstream overloaded"), OK]
    assert _expander(api, slept, monkeypatch).expand(["a red cube"]) == ["A detailed caption."]
    assert len(api.requests) == 3 and slept == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.name == "harness.expansion" and r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert "attempt 1/5" in warnings[0] and "HTTP 500" in warnings[0] and "internal error" in warnings[0]
    assert "attempt 2/5" in warnings[1] and "HTTP 503" in warnings[1] and "upstream overloaded" in warnings[1]


def test_openai_expander_gives_up_after_retries_attempts(api, slept, monkeypatch):
    api.script = [(503, {"error": {"message": "service busy"}})]
    with pytest.raises(HarnessError) as err:
        _expander(api, slept, monkeypatch, retries=3).expand(["a red cube"])
    assert len(api.requests) == 3 and slept == [1, 2]
    msg = str(err.value)
    assert msg.startswith(f"prompt expansion: POST {api.url} failed 3 attempt(s) in a row, the last with HTTP 503")
    assert "service busy" in msg and "'expansion.retries'" in msg


def test_openai_expander_retries_a_timeout(api, slept, monkeypatch):
    api.script = [(*OK, {}, 1.0), OK]  # the first answer comes after timeout_s
    assert _expander(api, slept, monkeypatch, timeout_s=0.2).expand(["a red cube"]) == ["A detailed caption."]
    assert len(api.requests) == 2 and slept == [1]

    api.requests.clear()
    api.script = [(*OK, {}, 1.0)]
    with pytest.raises(HarnessError, match=r"failed 2 attempt\(s\) in a row, the last with no answer within 0.2 s"):
        _expander(api, slept, monkeypatch, timeout_s=0.2, retries=2).expand(["a red cube"])
    assert len(api.requests) == 2


def test_openai_expander_retries_a_refused_connection(slept, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("EXPANSION_TEST_KEY", "sk-test-key")
    exp = OpenAIExpander(f"http://127.0.0.1:{port}/v4", "m", api_key_env="EXPANSION_TEST_KEY", retries=2,
                         sleep=slept.append)
    with pytest.raises(HarnessError, match=r"failed 2 attempt\(s\) in a row, the last with connection failed"):
        exp.expand(["a red cube"])
    assert slept == [1]


def test_openai_expander_honours_a_numeric_retry_after_capped(api, slept, monkeypatch):
    api.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}),
                  (503, "maintenance", {"Retry-After": "3600"}),  # capped
                  (503, "maintenance", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}),  # a date: usual backoff
                  (500, "oops", {"Retry-After": "9"}),  # only 429 and 503 carry it
                  OK]
    assert _expander(api, slept, monkeypatch).expand(["a red cube"]) == ["A detailed caption."]
    assert len(api.requests) == 5
    assert slept == [7, OpenAIExpander.RETRY_AFTER_MAX_S, 4, 8]


def test_the_api_key_never_leaks_into_logs_errors_files_or_the_fingerprint(api, tmp_path, monkeypatch, caplog, capsys):
    import logging
    import traceback

    from harness.expansion import build_expander

    key = "sk-test-SECRET-8f3a2c"
    monkeypatch.setenv("LEAK_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    echo = f"Incorrect API key provided: {key}. You can find your API key at https://example.invalid/keys"

    def config(n):
        return smoke_config(tmp_path, num_prompts=n, expansion={
            "enabled": True, "backend": "openai", "base_url": api.base_url, "model": "glm-4-plus",
            "api_key_env": "LEAK_TEST_KEY", "retries": 3, "timeout_s": 5, "systems": []})

    def expander(cfg):
        exp = build_expander(cfg)
        exp.sleep = lambda s: None
        return exp

    # Two prompts expanded after 503s whose bodies echo the key (warnings logged, cache and snapshot written),
    # and a reply that echoes it too.
    api.script = [(503, {"error": {"message": echo}}),
                  (200, {"choices": [{"message": {"content": f"A caption. {key}"}}]}),
                  (503, echo, {"Retry-After": "1"}), OK]
    run_expansion(config(2), "smoke", expander(config(2)))
    errors = []
    # A third prompt: 401 echoing the key, at once.
    api.script = [(401, {"error": {"message": echo, "code": "invalid_api_key"}})]
    with pytest.raises(HarnessError) as err:
        run_expansion(config(3), "smoke", expander(config(3)))
    errors.append(err.value)
    # 503s echoing the key until the retries run out.
    api.script = [(503, {"detail": echo})]
    with pytest.raises(HarnessError) as err:
        run_expansion(config(3), "smoke", expander(config(3)))
    errors.append(err.value)

    assert len(api.requests) == 4 + 1 + 3
    assert {headers["Authorization"] for _, headers, _ in api.requests} == {f"Bearer {key}"}  # the key was sent
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "expansions.jsonl" for p in files) and any(".cache" in p.parts for p in files)

    out = capsys.readouterr()
    texts = {"log": caplog.text, "records": "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text}" for r in caplog.records),
             "stdout": out.out, "stderr": out.err,
             "fingerprint": json.dumps(expander(config(3)).fingerprint()),
             **{f"error {i}": "".join(traceback.format_exception(e)) + repr(e) for i, e in enumerate(errors)},
             **{str(p.relative_to(tmp_path)): p.read_bytes().decode("utf-8", "replace") for p in files}}
    leaks = [where for where, text in texts.items() if key in text]
    assert leaks == []
    # and not by dropping what the server said: redacted in place
    assert "Incorrect API key provided: ***" in str(errors[0]) and "HTTP 401" in str(errors[0])
    assert "Incorrect API key provided: ***" in str(errors[1]) and "HTTP 503" in str(errors[1])
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 + 2 and all("Incorrect API key provided: ***" in r.getMessage() for r in warnings)
