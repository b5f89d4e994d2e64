"""Synthetic annotators with known preferences, to check the import end to end.

Preference model, per comparison group and question: true outcome probabilities (win, tie, lose) for
system A. Each pair gets a latent outcome drawn from them; each annotator reports that latent
outcome with probability ``consistency`` and otherwise an independent draw from the same
probabilities. So every single rating has exactly the group's probabilities (the win rates to
recover), and within one group two annotators agree beyond chance with Fleiss' kappa = consistency^2 (derivation:
P(agree) = c^2 + (1 - c^2) sum p^2, chance = sum p^2).

"Careless" annotators answer uniformly at random, including on attention checks, which honest
simulated annotators always pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from harness.humaneval.agreement import OUTCOMES
from harness.humaneval.export import ANSWERS, QUESTIONS, seeded_rng, sheet_rows, write_sheet_csv

#: default truth for the CLI: A preferred, more so on alignment (any values work)
DEFAULT_TRUTH = {"alignment": (0.6, 0.15, 0.25), "aesthetics": (0.5, 0.2, 0.3)}


def _answer_for(outcome: str, a_side: str) -> str:
    if outcome == "tie":
        return "tie"
    other = "right" if a_side == "left" else "left"
    return a_side if outcome == "win" else other


def simulate_sheets(
    key: dict[str, Any],
    out_dir: str | Path,
    truth: Mapping[int, Mapping[str, Sequence[float]]] | Mapping[str, Sequence[float]] = DEFAULT_TRUTH,
    consistency: float = 0.6,
    careless: Sequence[str] = (),
    sheets: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``<sheet>.simulated.csv`` filled sheets; returns their paths.

    ``truth``: either question -> (p_win, p_tie, p_lose) for every group, or group index -> that.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = seeded_rng(seed, "simulate", key["export_id"])

    def probs(group: int, q: str) -> np.ndarray:
        t = truth[group][q] if group in truth else truth[q]  # type: ignore[index]
        p = np.asarray(t, dtype=np.float64)
        if p.shape != (3,) or abs(p.sum() - 1) > 1e-9 or (p < 0).any():
            raise ValueError(f"truth for group {group} {q}: need (p_win, p_tie, p_lose) summing to 1, got {t}")
        return p

    # One latent outcome per (pair, question), shared by every annotator who sees the pair.
    latent: dict[tuple[str, str], str] = {}
    for rows in key["sheets"].values():
        for r in rows:
            if r["kind"] == "pair":
                for q in QUESTIONS:
                    latent.setdefault((r["pair_id"], q), OUTCOMES[rng.choice(3, p=probs(r["group"], q))])

    written = []
    for sheet in sheets or list(key["sheets"]):
        rows = sheet_rows(key, sheet)
        for row, k in zip(rows, key["sheets"][sheet]):
            for q in QUESTIONS:
                if sheet in careless:
                    row[q] = ANSWERS[rng.integers(3)]
                elif k["kind"] == "attention":
                    row[q] = k["expected"]
                else:
                    p = probs(k["group"], q)
                    outcome = latent[(k["pair_id"], q)] if rng.random() < consistency else OUTCOMES[rng.choice(3, p=p)]
                    row[q] = _answer_for(outcome, k["a_side"])
        path = out_dir / f"{sheet}.simulated.csv"
        write_sheet_csv(path, rows)
        written.append(path)
    return written
