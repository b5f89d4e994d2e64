"""Prompt expansion (CogView3 §2.3): a language model rewrites short prompts into detailed captions.

One interface, three backends (config ``expansion.backend``):

* ``openai``: an OpenAI-compatible chat endpoint (``base_url``, ``model``, key from the environment
  variable ``api_key_env``), sampled as the official preset: temperature 0.01, top_p 0.7,
  max_tokens 300, 5 tries;
* ``transformers``: a local causal LM with a chat template (``model_path``), greedy decoding (the
  official temperature 0.01 is greedy in all but name, and greedy is reproducible);
* ``offline``: deterministic, no model: the prompt plus details picked by a hash of its text. For the
  smoke profile and tests; it exercises every path an LM expander takes.

The system prompt and few-shot examples are written for this project after the official script's
rules (docs/reference.md §6), not copied from it.

Expansions are cached in ``<results>/.cache/expansions/<benchmark>.jsonl`` keyed by (expander
fingerprint, prompt text), outside Snakemake's outputs, so a rerun or an offline replay never calls
the model again. ``<results>/<benchmark>/expansions.jsonl`` is the snapshot systems with
``expand: true`` read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.errors import HarnessError
from harness.io import append_jsonl, atomic_write_jsonl, read_jsonl

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are part of a team of bots that create images. You work with an assistant bot that draws "
    "anything you say. When given a short image description, rewrite it as one richly detailed "
    "caption that an image model can follow. Rules: write in English whatever the input language is; "
    "give exactly one caption and nothing else, with no explanations, lists or quotation marks; keep "
    "everything the user asked for and invent nothing that contradicts it; describe what is visible: "
    "the subject and its appearance, the setting, the medium and style, the composition, colours, "
    "lighting and fine details, rather than moods or abstract ideas; any text the image must show goes "
    "in double quotes exactly as given; use 100 to 200 words."
)
USER_TEMPLATE = 'Create an imaginative image descriptive caption for the user input : "{prompt}"'
FEW_SHOT = (
    ("一只在雨中撑伞的橘猫",
     "An orange tabby cat stands upright on a rain-soaked cobblestone street, holding a small red umbrella "
     "in one paw. Raindrops bead on the umbrella's taut fabric and splash in shallow puddles that mirror the "
     "warm glow of shop windows behind it. The cat's fur is slightly damp at the tips, its green eyes wide "
     "and curious. Soft evening light, muted blue-grey tones contrasted with amber reflections, shallow depth "
     "of field, in the style of a detailed digital painting."),
    ("a lighthouse",
     "A tall white lighthouse with a red lantern room rises from a rocky headland above a restless sea. Waves "
     "break against dark granite boulders, throwing white spray into the air. The sky is a gradient of deep "
     "violet at the top to pale gold at the horizon as the sun sets, and the lighthouse beam cuts a pale cone "
     "through thin sea mist. Tufts of grass cling to the cliff edge. Photographed with a wide-angle lens, "
     "crisp detail, rich saturated colours."),
    ("画一辆复古自行车",
     "A vintage bicycle leans against a weathered brick wall in a quiet alley. Its frame is painted a faded "
     "mint green with cream pinstripes, a woven wicker basket full of sunflowers hangs from the handlebars, "
     "and its brown leather saddle is cracked with age. Morning sunlight falls at a low angle, casting the "
     "spokes' long thin shadows across the cobblestones. Ivy climbs the wall beside it. Warm, nostalgic film "
     "photograph look with soft grain and gentle contrast."),
    ('a sign that says "open late"',
     'A hand-painted wooden sign hangs from an iron bracket outside a small corner café, reading "open late" '
     "in looping white script on a deep navy background. Tiny string lights wrap the bracket and glow against "
     "the dusk. Behind the sign, the café window shows warm interior light, stacked cups and a chalkboard "
     "menu. The street is wet from recent rain, reflecting the lights in streaks of gold. Cinematic "
     "composition, sharp focus on the lettering, soft bokeh background."),
)


def clean(text: str) -> str:
    """The official post-processing: newlines to spaces, whitespace collapsed."""
    return re.sub(r"\s+", " ", text.replace("\n", " ")).strip()


def chat_messages(prompt: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for user, assistant in FEW_SHOT:
        messages += [{"role": "user", "content": USER_TEMPLATE.format(prompt=user)},
                     {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": USER_TEMPLATE.format(prompt=prompt)})
    return messages


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class Expander(ABC):
    backend: str

    @abstractmethod
    def expand_one(self, prompt: str) -> str: ...

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the output: backend, model, sampling, instructions."""

    def digest(self) -> str:
        return _digest(self.fingerprint())

    def expand(self, prompts: Sequence[str]) -> list[str]:
        out = []
        for p in prompts:
            text = clean(self.expand_one(p))
            if not text:
                raise HarnessError(f"expander {self.backend} returned an empty expansion for prompt {p!r}")
            out.append(text)
        return out


class OfflineExpander(Expander):
    """Deterministic expansion without a model: details chosen by sha256 of the prompt."""

    backend = "offline"
    VERSION = 1
    SUBJECT = ("shown in sharp detail at the centre of the frame", "placed slightly off-centre following the rule of thirds",
               "seen from a low angle that makes it feel monumental", "framed close up with every texture visible")
    MEDIUM = ("a high-resolution photograph taken with a 50 mm lens", "a detailed digital painting",
              "an oil painting with visible brush strokes", "a watercolour illustration on textured paper")
    LIGHT = ("soft golden-hour sunlight from the left", "diffuse overcast daylight", "warm lamplight against a dark background",
             "crisp midday sun with short shadows")
    COLOUR = ("a warm palette of ambers and deep reds", "cool blues and silvery greys", "muted earthy browns and greens",
              "vivid saturated primary colours")
    DETAIL = ("fine surface textures, subtle reflections and a gently blurred background",
              "small background elements that give a sense of place and scale",
              "delicate highlights on edges and a shallow depth of field",
              "balanced composition with clear separation between subject and background")

    def expand_one(self, prompt: str) -> str:
        h = hashlib.sha256(prompt.encode()).digest()
        pick = lambda options, i: options[h[i] % len(options)]  # noqa: E731
        return (f"{prompt.strip().rstrip('.')}, {pick(self.SUBJECT, 0)}. The image is {pick(self.MEDIUM, 1)}, lit by "
                f"{pick(self.LIGHT, 2)}, with {pick(self.COLOUR, 3)}. It shows {pick(self.DETAIL, 4)}, everything "
                f"the description asks for clearly visible and nothing that contradicts it.")

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": self.VERSION}


class _Transient(Exception):
    """One failed attempt that a later attempt may fix: 429, 5xx, a timeout, a dropped connection."""

    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.what, self.retry_after = what, retry_after


class OpenAIExpander(Expander):
    """An OpenAI-compatible ``/chat/completions`` endpoint (GLM-4-Plus in the official script).

    ``retries`` is the number of attempts in all. Only 429, 5xx, timeouts and connection errors are
    retried, with exponential backoff (or the server's numeric Retry-After on 429/503, capped); any
    other answer (400, 401, 403, 404, 422, a 200 without ``choices[0].message.content``) fails at once
    with the server's own message. The API key is read from the environment at each request, and
    every text that could echo it (server messages, log records, errors, expansions) has it replaced
    by ``***``. ``sleep`` is injectable so tests need not wait.
    """

    backend = "openai"
    BACKOFF_MAX_S = 30
    RETRY_AFTER_MAX_S = 60
    MESSAGE_CHARS = 300

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.01,
                 top_p: float = 0.7, max_tokens: int = 300, retries: int = 5, timeout_s: float = 60,
                 sleep: Callable[[float], None] | None = None):
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        self.retries, self.timeout_s = retries, timeout_s
        self.sleep = sleep if sleep is not None else time.sleep
        self._session = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @staticmethod
    def _redact(text: str, key: str) -> str:
        return text.replace(key, "***") if key else text

    def _server_message(self, resp, key: str) -> str:
        """The server's own error message (OpenAI/Zhipu/FastAPI JSON shapes, else the text), key redacted."""
        msg = None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict) and err.get("message"):
                msg = err["message"]
            elif isinstance(err, str) and err:
                msg = err
            elif data.get("message"):
                msg = data["message"]
            elif data.get("detail"):
                msg = data["detail"]
        if msg is None:
            msg = resp.text
        if not isinstance(msg, str):
            msg = json.dumps(msg, ensure_ascii=False)
        msg = clean(self._redact(msg, key))  # redact before cutting: a cut must not leave part of the key
        if len(msg) > self.MESSAGE_CHARS:
            msg = msg[: self.MESSAGE_CHARS] + "..."
        return f'"{msg}"' if msg else "(empty body)"

    @staticmethod
    def _retry_after(resp) -> float | None:
        if resp.status_code not in (429, 503):
            return None
        try:
            value = float(resp.headers.get("Retry-After", ""))
        except ValueError:  # absent, or an HTTP date: back off as usual
            return None
        return value if value >= 0 else None

    @staticmethod
    def _status(resp) -> str:
        return f"HTTP {resp.status_code} {resp.reason}" if resp.reason else f"HTTP {resp.status_code}"

    def _refused(self, resp, message: str) -> str:
        status = resp.status_code
        if status in (401, 403):
            todo = (f"the key was refused: check the API key in the environment variable {self.api_key_env} "
                    f"(config key 'expansion.api_key_env') and that it may use model {self.model!r}")
        elif status == 404:
            todo = (f"no such endpoint or model: check config keys 'expansion.base_url' ({self.base_url}) and "
                    f"'expansion.model' ({self.model!r})")
        elif 300 <= status < 400:  # not followed: a redirected POST becomes a GET without its body
            todo = (f"the endpoint moved to {resp.headers.get('Location', '(no Location header)')}: put its new "
                    "base in config key 'expansion.base_url'")
        elif status in (400, 422):
            todo = ("the server refused the request, its message says why (config keys 'expansion.model', "
                    "'expansion.temperature', 'expansion.top_p', 'expansion.max_tokens')")
        else:
            todo = "the server refused the request, its message says why"
        return f"prompt expansion: POST {self.url} answered {self._status(resp)}: {message}; {todo}; not retried"

    def _post_once(self, body: dict, key: str) -> str:
        """One attempt: the completion text, or _Transient (worth retrying), or HarnessError (not)."""
        import requests

        if self._session is None:
            self._session = requests.Session()
        try:
            resp = self._session.post(self.url, json=body, timeout=self.timeout_s,
                                      headers={"Authorization": f"Bearer {key}"}, allow_redirects=False)
        except requests.Timeout as err:
            raise _Transient(f"no answer within {self.timeout_s} s (config key 'expansion.timeout_s'): "
                             f"{self._redact(str(err), key)}") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
            raise _Transient(f"connection failed: {self._redact(str(err), key)}") from None
        except requests.RequestException as err:
            raise HarnessError(self._redact(f"prompt expansion: POST {self.url} could not be sent ({err}); check "
                                            "config key 'expansion.base_url'; not retried", key)) from None
        status = resp.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"{self._status(resp)}: {self._server_message(resp, key)}", self._retry_after(resp))
        if not 200 <= status < 300:
            raise HarnessError(self._redact(self._refused(resp, self._server_message(resp, key)), key))
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            got = clean(self._redact(resp.text, key))
            got = (got[: self.MESSAGE_CHARS] + "...") if len(got) > self.MESSAGE_CHARS else got
            raise HarnessError(self._redact(
                f"prompt expansion: POST {self.url} answered {self._status(resp)} without choices[0].message.content, "
                f"it returned: {got or '(empty body)'}; check that config key 'expansion.base_url' names an "
                "OpenAI-compatible API (the part before /chat/completions); not retried", key))
        return self._redact(content, key)

    def _wait(self, state) -> float:
        err = state.outcome.exception()
        if isinstance(err, _Transient) and err.retry_after is not None:
            return min(err.retry_after, self.RETRY_AFTER_MAX_S)
        return min(2 ** (state.attempt_number - 1), self.BACKOFF_MAX_S)

    def _log_retry(self, state) -> None:
        log.warning("prompt expansion: attempt %d/%d to POST %s failed: %s; retrying in %.1f s", state.attempt_number,
                    self.retries, self.url, state.outcome.exception().what, state.next_action.sleep)

    def expand_one(self, prompt: str) -> str:
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        key = os.environ.get(self.api_key_env)
        if not key:
            raise HarnessError(f"prompt expansion: environment variable {self.api_key_env} (config key "
                               "'expansion.api_key_env') holds no API key; set it, or replay from the cache")
        body = {"model": self.model, "messages": chat_messages(prompt), "stream": False, **self.sampling}
        retrying = Retrying(stop=stop_after_attempt(max(1, self.retries)), wait=self._wait, sleep=self.sleep,
                            retry=retry_if_exception_type(_Transient), before_sleep=self._log_retry, reraise=True)
        try:
            return retrying(self._post_once, body, key)
        except _Transient as err:
            raise HarnessError(self._redact(
                f"prompt expansion: POST {self.url} failed {self.retries} attempt(s) in a row, the last with "
                f"{err.what}; the server is overloaded, rate-limited or unreachable: try again later, or raise "
                "config keys 'expansion.retries' / 'expansion.timeout_s'", key)) from None

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": self.backend, "base_url": self.base_url, "model": self.model, **self.sampling,
                "instructions": _digest([SYSTEM_PROMPT, USER_TEMPLATE, FEW_SHOT])}


class TransformersExpander(Expander):
    """A local causal LM (any transformers model with a chat template), greedy decoding."""

    backend = "transformers"

    def __init__(self, model_path: str, max_tokens: int = 300, device: str = "auto"):
        self.model_path = Path(model_path)
        self.max_tokens = max_tokens
        self.device = device
        self._model = None

    def _load(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from models.base import resolve_device

        if not self.model_path.is_dir():
            raise HarnessError(f"config key 'expansion.model_path': {self.model_path} is not a folder; give a local "
                               "transformers causal LM (config.json, weights, tokenizer with a chat template)")
        self._tok = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        if not getattr(self._tok, "chat_template", None):
            raise HarnessError(f"{self.model_path}: its tokenizer has no chat template; use a chat/instruct model")
        dev = resolve_device(self.device)
        self._model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True).eval().to(dev)

    def expand_one(self, prompt: str) -> str:
        import torch

        if self._model is None:
            self._load()
        ids = self._tok.apply_chat_template(chat_messages(prompt), add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        ids = {k: v.to(self._model.device) for k, v in ids.items()}
        with torch.inference_mode():
            out = self._model.generate(**ids, max_new_tokens=self.max_tokens, do_sample=False,
                                       pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id)
        return self._tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    @staticmethod
    def model_files(path: Path):
        """The files ``from_pretrained`` reads from a local causal-LM folder (weights, config, tokenizer)."""
        from models.layouts import model_folder, tokenizer_folder

        hint = "config key 'expansion.model_path' must name a local transformers causal-LM folder with a tokenizer."
        return model_folder("expansion.model_path", path, "model", "language model", hint).merge(
            tokenizer_folder("expansion.model_path", path, "tokenizer"))

    def fingerprint(self) -> dict[str, Any]:
        from models.weights import files_digest

        files = self.model_files(self.model_path).require().files
        return {"backend": self.backend, "model": files_digest(files, self.model_path), "max_tokens": self.max_tokens,
                "decoding": "greedy", "instructions": _digest([SYSTEM_PROMPT, USER_TEMPLATE, FEW_SHOT])}


def build_expander(config: dict[str, Any]) -> Expander:
    exp = config["expansion"]
    if exp["backend"] == "offline":
        return OfflineExpander()
    if exp["backend"] == "openai":
        return OpenAIExpander(exp["base_url"], exp["model"], exp["api_key_env"], exp["temperature"], exp["top_p"],
                              exp["max_tokens"], exp["retries"], exp["timeout_s"])
    return TransformersExpander(exp["model_path"], exp["max_tokens"], config["device"])


def cache_path(results_dir, benchmark: str) -> Path:
    return Path(results_dir) / ".cache" / "expansions" / f"{benchmark}.jsonl"


def expansions_path(results_dir, benchmark: str) -> Path:
    return Path(results_dir) / benchmark / "expansions.jsonl"


def run_expansion(config: dict[str, Any], benchmark: str, expander: Expander | None = None) -> Path:
    """Expand every prompt of ``benchmark`` (cache first) and write the snapshot systems read."""
    from harness.prompts import load_prompts

    expander = expander or build_expander(config)
    fp = expander.digest()
    cache = cache_path(config["results_dir"], benchmark)
    known = {}
    if cache.is_file():
        for row in read_jsonl(cache, drop_damaged=True):
            if row["expander"] == fp:
                known[row["prompt"]] = row["expanded"]
    prompts = load_prompts(benchmark, config["data_dir"], config["num_prompts"])
    todo = list(dict.fromkeys(p.text for p in prompts if p.text not in known))
    for text in todo:  # one line per prompt: an interrupted run keeps what it paid for
        known[text] = expander.expand([text])[0]
        append_jsonl(cache, [{"expander": fp, "prompt": text, "expanded": known[text]}])
    log.info("%s: %d expansions from the cache, %d new (%s)", benchmark, len(prompts) - len(todo), len(todo), expander.backend)
    out = expansions_path(config["results_dir"], benchmark)
    atomic_write_jsonl(out, [{"prompt_id": p.id, "prompt": p.text, "expanded": known[p.text], "expander": fp,
                              "backend": expander.backend} for p in prompts])
    return out


def load_expansions(config: dict[str, Any], benchmark: str) -> tuple[dict[str, str], str]:
    """prompt id -> expanded text from the snapshot, and the expander digest it was made with."""
    path = expansions_path(config["results_dir"], benchmark)
    if not path.is_file():
        raise HarnessError(f"expanded prompts {path} are missing; run `snakemake {path}` "
                           f"(or `python -m harness expand --benchmark {benchmark}`) first")
    rows = read_jsonl(path)
    digests = {r["expander"] for r in rows}
    if len(digests) != 1:
        raise HarnessError(f"{path} mixes {len(digests)} expanders; rerun the expansion")
    return {r["prompt_id"]: r["expanded"] for r in rows}, digests.pop()
