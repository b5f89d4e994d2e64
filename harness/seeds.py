"""Per-sample seeds.

A seed depends only on (run seed, benchmark, prompt id, sample index): every system draws the same
seed for the same sample (paired comparisons), and neither batch size, shard count nor resumption
can change it.
"""

from __future__ import annotations

import hashlib


def sample_seed(run_seed: int, benchmark: str, prompt_id: str, sample: int) -> int:
    key = f"{int(run_seed)}\x1f{benchmark}\x1f{prompt_id}\x1f{int(sample)}".encode()
    # 63 bits: fits torch.Generator.manual_seed and a signed int64 everywhere it is stored.
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1
