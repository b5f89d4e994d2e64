"""Tokenizers built offline, in code.

Offline, several ``from_pretrained`` calls return *empty* tokenizers instead of failing
(docs/reference.md §10.3), so every builder here checks the vocabulary size it
produced, and :func:`check_tokenizer_size` is used on tokenizers loaded from folders too.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77


def check_tokenizer_size(tokenizer, minimum: int, source: str) -> None:
    """Fail loudly on the silently-empty tokenizers that offline hub calls return."""
    size = len(tokenizer)
    if size < minimum:
        raise RuntimeError(
            f"tokenizer from {source} has only {size} tokens (expected at least {minimum}); "
            "it was probably loaded offline from an incomplete folder: check that the folder holds "
            "the tokenizer files (vocab/merges or tokenizer.json / spiece.model)"
        )


def _open_clip_bpe_path() -> Path:
    # The BPE merges ship inside the open-clip-torch wheel; find the file without importing
    # open_clip (its __init__ pulls in timm and torchvision).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary")
    path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise RuntimeError(f"CLIP BPE file missing from the open_clip install: {path}")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to 256+n.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


@functools.lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(_open_clip_bpe_path()).read().decode("utf-8").split("\n")
    # Same slice as CLIP's SimpleTokenizer: 49152 - 256 - 2 merges after the header line.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """The real 49,408-token CLIP BPE tokenizer (ids identical to openai/clip-vit-large-patch14).

    ``pad_token="!"`` gives SDXL's second tokenizer (OpenCLIP bigG pads with id 0).
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    tok = CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        model_max_length=CLIP_MAX_LENGTH,  # built without files it would be 1e30 and pipelines overflow
        pad_token=pad_token,
    )
    check_tokenizer_size(tok, CLIP_VOCAB_SIZE, "open_clip's bundled BPE")
    return tok


TINY_T5_CORPUS = (
    "a photo of a red car parked next to a blue house",
    "three cats sitting on a wooden table in the morning light",
    "a sign that says hello world written in bold letters",
    "an astronaut riding a horse on the surface of the moon",
    "a bowl of fruit with apples oranges and bananas, oil painting",
    "the view of a city skyline at night with many bright lights",
    "a small green frog on top of a large brown mushroom",
    "two dogs playing in the snow under a grey sky, photograph",
)


TINY_T5_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.'-!?\"&:;()"


def tiny_t5_pieces() -> list[tuple[str, float]]:
    """The tiny T5's Unigram vocabulary: every corpus word (``▁word``) and every single character.

    Built by counting, not by ``tokenizers.trainers.UnigramTrainer``: that trainer returns a different
    vocabulary in different processes (ties broken by hash order), which made every CogView3 smoke
    image change from run to run. Scores are log relative frequencies; ties sort by the piece itself.
    Single characters cover any word outside the corpus, so only characters outside the alphabet
    become ``<unk>``.
    """
    import math
    from collections import Counter

    counts: Counter[str] = Counter()
    for line in TINY_T5_CORPUS:
        for word in line.replace(",", " ,").split():
            counts["\u2581" + word] += 1
            counts.update(word)
    counts["\u2581"] += sum(1 for line in TINY_T5_CORPUS for _ in line.split())
    for ch in TINY_T5_ALPHABET:
        counts[ch] += 1
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(piece, math.log(n / total)) for piece, n in ordered]


def t5_tokenizer_tiny(model_max_length: int):
    """A small T5 (Unigram) tokenizer built in memory; same class and special ids as T5 v1.1.

    pad=0, eos=1, unk=2 as in the real vocabulary, plus the 100 ``<extra_id_*>`` sentinels.
    """
    from transformers import T5TokenizerFast

    # The special pieces come first so that their ids are T5's; their scores do not matter.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + tiny_t5_pieces()
    tok = T5TokenizerFast(vocab=pieces, extra_ids=100, model_max_length=model_max_length)
    check_tokenizer_size(tok, 100 + 3 + 20, "the in-memory tiny T5 tokenizer")
    return tok
