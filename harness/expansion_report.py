"""The prompt-expansion ablation (paper Fig. 7/8): each system with and without expanded prompts.

Cells: mean [95% CI] over prompts without and with expansion, and the paired difference (with −
without) on the same prompts and seeds. Below: how many prompts each system's text encoder truncates
(225 T5 tokens for CogView3, 77 CLIP tokens for the SDXL family and Stable Cascade), original vs
expanded, counted with the system's own tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.ablations import expansion_pairs
from harness.errors import HarnessError
from harness.io import atomic_write_text
from harness.prompts import BENCHMARKS
from harness.render import banner
from harness.scorers.registry import scorer_class
from harness.scores import ScoreReader
from harness.stats import bootstrap_mean, paired_bootstrap
from harness.tables import image_metrics


def expansion_benchmarks(config: dict[str, Any]) -> list[str]:
    """``expansion.benchmarks``, or every configured prompt set without reference images."""
    chosen = config["expansion"].get("benchmarks")
    return list(chosen) if chosen else [b for b in config["benchmarks"] if not BENCHMARKS[b].has_references]


def truncation_counts(config: dict[str, Any], system: str, originals: list[str], expanded: list[str]) -> dict[str, Any]:
    """Prompts longer than the system's text limit, before and after expansion."""
    from models.registry import model_class

    spec = config["systems"][system]
    cls = model_class(spec["model"])
    tok = cls.text_tokenizer(spec, config["weights"])
    count = lambda texts: sum(len(ids) > cls.TEXT_LIMIT for ids in tok(list(texts), truncation=False)["input_ids"])  # noqa: E731
    return {"limit": cls.TEXT_LIMIT, "tokenizer": type(tok).__name__, "original": count(originals),
            "expanded": count(expanded), "n": len(originals)}


def write_expansion_report(config: dict[str, Any], out: str | Path) -> Path:
    from harness.expansion import load_expansions
    from harness.prompts import load_prompts

    pairs = expansion_pairs(config)
    if not pairs:
        raise HarnessError("the expansion ablation needs `expansion: {enabled: true, systems: [...]}` in the config")
    metrics = image_metrics(config)
    reader = ScoreReader(config)
    lines = [banner(config), "", "# Prompt expansion ablation (paper Fig. 7/8)", "",
             f"Expander: `{config['expansion']['backend']}`. Cells: mean [95% CI over prompts] (N); "
             "Δ = with − without, paired bootstrap on the same prompts and seeds.", ""]
    for bench in expansion_benchmarks(config):
        lines += [f"## {BENCHMARKS[bench].title}", "",
                  "| System | Metric | without expansion | with expansion | Δ (with − without), p |", "|---|---|---|---|---|"]
        for system, twin in pairs:
            for metric in metrics:
                a, b = reader.read(bench, twin, metric).per_prompt(), reader.read(bench, system, metric).per_prompt()
                d = paired_bootstrap(a, b, seed=config["seed"])
                lines.append(f"| {system} | {scorer_class(metric).heading()} | {bootstrap_mean(list(b.values()), seed=config['seed']).fmt()} | "
                             f"{bootstrap_mean(list(a.values()), seed=config['seed']).fmt()} | {d.fmt()} |")
        lines += ["", f"### Prompts truncated by the text encoder ({BENCHMARKS[bench].title})", "",
                  "| System | Text encoder limit (tokens) | Tokenizer | original prompts over the limit | expanded prompts over the limit |",
                  "|---|---|---|---|---|"]
        prompts = load_prompts(bench, config["data_dir"], config["num_prompts"])
        expanded, digest = load_expansions(config, bench)
        originals, texts = [p.text for p in prompts], [expanded[p.id] for p in prompts]
        for system, _ in pairs:
            c = truncation_counts(config, system, originals, texts)
            lines.append(f"| {system} | {c['limit']} | {c['tokenizer']} | {c['original']} / {c['n']} | {c['expanded']} / {c['n']} |")
        lines += ["", f"Expansions: `{Path(config['results_dir']) / bench / 'expansions.jsonl'}` (expander `{digest}`).", ""]
    lines.append(reader.fingerprint_note())
    out = Path(out)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
