"""The micro world's models in the real systems' on-disk layouts, trained by the project's own training code.

This module holds what is particular to the world: its text encoder (a frozen random T5 v1.1 with a
word-level SentencePiece vocabulary, in THUDM/CogVideoX-2b's ``tokenizer/`` + ``text_encoder/`` layout, so
the CogView3 systems load it unchanged through :class:`models.cogview3.conditioning.T5TextEncoder`).
"""

from __future__ import annotations

from pathlib import Path

from harness.micro.world import training_pair

#: the tokenizer's vocabulary is read off this many captions of the training stream (seed 0): every word
#: of the grammar occurs in them (tests/test_micro_world.py checks the evaluation set encodes without <unk>)
TOKENIZER_CORPUS = 3000
#: the frozen text encoder's random weights come from this seed
TEXT_ENCODER_SEED = 0


def text_corpus(n: int = TOKENIZER_CORPUS) -> list[str]:
    """The captions the word-level tokenizer is built from: the first ``n`` of training stream 0."""
    return [training_pair(0, i)[0] for i in range(n)]


def write_text_encoder(folder: str | Path, seed: int = TEXT_ENCODER_SEED) -> Path:
    """The world's T5 (word-level vocabulary, random frozen weights) as ``folder/tokenizer`` and
    ``folder/text_encoder`` in CogVideoX-2b's layout; the config's ``weights.t5`` points at ``folder``."""
    from harness.fixtures import write_t5

    folder = Path(folder)
    write_t5(folder, text_corpus(), word_level=True, seed=seed)
    return folder
