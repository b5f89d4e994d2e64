"""Import filled A/B sheets: validate, unblind, and compute win rates, Bradley-Terry and agreement.

Validation is strict and each problem is one error naming the file, row and value: a sheet from
another export (key mismatch), an unknown sheet or pair id, a row whose pair or images do not match
the key, a pair answered twice, a sheet returned twice, a missing or invalid answer. Nothing is
dropped silently: sheets not returned and annotators excluded for failed attention checks are listed
at the top of the report.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.humaneval.agreement import (
    OUTCOMES,
    cluster_bootstrap_rates,
    fit_bradley_terry_ties,
    fleiss_kappa,
    gwet_ac1,
    krippendorff_alpha,
    wilson_interval,
)
from harness.humaneval.export import ANSWERS, QUESTIONS, SHEET_COLUMNS
from harness.io import atomic_write_text, records_csv
from harness.render import profile_banner

SIMULATED_LINE = ("> **Simulated annotations** ({files}): these sheets were filled by "
                  "`python -m harness humaneval-simulate` from a known preference model, not by people.")


class SheetError(HarnessError):
    """A filled sheet that cannot be imported; the message names the file and row."""


def load_key(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"human-eval key {path} does not exist; run `snakemake --cores all reports/humaneval/export` first")
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class Rating:
    sheet: str
    pair_id: str
    kind: str  # pair | attention
    group: int | None
    question: str
    answer: str  # left | tie | right, as the annotator saw it
    outcome: str  # win | tie | lose for system A (attention: for the on-prompt image)
    prompt_id: str
    category: str
    correct: bool | None = None  # attention checks only


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in SHEET_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise SheetError(f"{path}: missing column(s) {', '.join(missing)}; expected the columns of the exported sheet "
                                 f"({', '.join(SHEET_COLUMNS)})")
            unknown = [c for c in reader.fieldnames or [] if c not in SHEET_COLUMNS]
            if unknown:  # an answer typed into a column the import would not read must not vanish
                raise SheetError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; the sheet must keep exactly "
                                 f"the exported columns ({', '.join(SHEET_COLUMNS)}): remove or rename them (answers go "
                                 "in the alignment and aesthetics columns)")
            return list(reader)
    except UnicodeDecodeError as err:
        raise SheetError(f"{path}: not UTF-8 text ({err}); export the sheet as UTF-8 CSV") from err


def read_filled_sheets(key: dict[str, Any], paths: Sequence[str | Path]) -> tuple[list[Rating], dict[str, Path]]:
    """Validate every filled sheet against the key and unblind it."""
    if not paths:
        raise SheetError("no filled sheets given; put the annotators' CSV files into humaneval.annotations_dir")
    by_sheet: dict[str, Path] = {}
    ratings: list[Rating] = []
    for path in map(Path, paths):
        rows = _read_csv(path)
        if not rows:
            raise SheetError(f"{path}: the sheet has no rows")
        ids = {r["export_id"] for r in rows}
        if ids != {key["export_id"]}:
            other = sorted(ids - {key["export_id"]})
            raise SheetError(
                f"{path}: made for export {', '.join(other)!s}, but the key is for export {key['export_id']}; "
                f"import it with the key it was made with (reports/humaneval/keys/<export_id>.json)"
            )
        sheets = {r["sheet"] for r in rows}
        if len(sheets) != 1:
            raise SheetError(f"{path}: rows from several sheets ({', '.join(sorted(sheets))}); send one file per annotator")
        sheet = sheets.pop()
        if sheet not in key["sheets"]:
            raise SheetError(f"{path}: unknown sheet {sheet!r}; this export has {', '.join(key['sheets'])}")
        if sheet in by_sheet:
            raise SheetError(f"{path}: sheet {sheet!r} was already read from {by_sheet[sheet]}; keep one file per sheet")
        by_sheet[sheet] = path
        ratings += _unblind_sheet(key, sheet, rows, path)
    return ratings, by_sheet


def _unblind_sheet(key: dict[str, Any], sheet: str, rows: list[dict[str, str]], path: Path) -> list[Rating]:
    expected = {r["pair_id"]: r for r in key["sheets"][sheet]}
    seen: dict[str, int] = {}
    missing_answers: list[str] = []
    out: list[Rating] = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        pid = row["pair_id"]
        if pid not in expected:
            raise SheetError(f"{path} line {line}: pair id {pid!r} is not in sheet {sheet!r} of export {key['export_id']}")
        if pid in seen:
            raise SheetError(f"{path} line {line}: pair id {pid!r} appears again (first on line {seen[pid]}); "
                             "keep one row per pair")
        seen[pid] = line
        k = expected[pid]
        if row["image_left"] != k["image_left"] or row["image_right"] != k["image_right"] or row["item"] != str(k["item"]):
            raise SheetError(f"{path} line {line}: pair {pid!r} does not match the key (item or images changed); "
                             "rows must keep the exported item, pair id and image columns")
        for q in QUESTIONS:
            ans = row[q].strip().lower()
            if ans == "":
                missing_answers.append(f"line {line} {q}")
                continue
            if ans not in ANSWERS:
                raise SheetError(f"{path} line {line}: {q} answer {row[q]!r} is not one of {', '.join(ANSWERS)}")
            outcome = "tie" if ans == "tie" else ("win" if ans == k["a_side"] else "lose")
            out.append(Rating(
                sheet=sheet, pair_id=pid, kind=k["kind"], group=k["group"], question=q, answer=ans, outcome=outcome,
                prompt_id=k["prompt_id"], category=k.get("category", ""),
                correct=(ans == k["expected"]) if k["kind"] == "attention" else None,
            ))
    absent = [pid for pid in expected if pid not in seen]
    if absent:
        raise SheetError(f"{path}: {len(absent)} of {len(expected)} pairs of sheet {sheet!r} are missing "
                         f"(e.g. {absent[0]}); send back the whole exported sheet")
    if missing_answers:
        shown = ", ".join(missing_answers[:6]) + (" ..." if len(missing_answers) > 6 else "")
        raise SheetError(f"{path}: {len(missing_answers)} answers missing ({shown}); every pair needs both answers "
                         f"({', '.join(ANSWERS)})")
    return out


# ---- analysis -------------------------------------------------------------------------------
@dataclass
class Analysis:
    key: dict[str, Any]
    ratings: list[Rating]  # after exclusions
    files: dict[str, Path]
    annotators: list[dict[str, Any]]
    excluded: dict[str, str]
    rates: list[dict[str, Any]] = field(default_factory=list)
    bt: list[dict[str, Any]] = field(default_factory=list)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)


def _annotator_quality(key, ratings: list[Rating], attention_min: float) -> list[dict[str, Any]]:
    """Per sheet: attention checks passed, position bias, tie share and agreement with the others."""
    real = [r for r in ratings if r.kind == "pair"]
    by_item: dict[tuple[str, str], list[Rating]] = defaultdict(list)
    for r in real:
        by_item[(r.pair_id, r.question)].append(r)
    out = []
    for sheet in sorted({r.sheet for r in ratings}):
        mine = [r for r in real if r.sheet == sheet]
        checks = [r for r in ratings if r.sheet == sheet and r.kind == "attention"]
        agree = []
        for r in mine:
            others = Counter(o.outcome for o in by_item[(r.pair_id, r.question)] if o.sheet != sheet)
            if others:
                top = max(others.values())
                modes = [o for o, c in others.items() if c == top]
                agree.append(r.outcome in modes)
        passed = sum(r.correct for r in checks) / len(checks) if checks else float("nan")
        share = {a: sum(r.answer == a for r in mine) / len(mine) if mine else float("nan") for a in ANSWERS}
        flags = []
        if checks and passed < attention_min:
            flags.append(f"attention {passed:.0%} < {attention_min:.0%}")
        if mine and max(share["left"], share["right"]) > 0.9:
            flags.append("picks one side > 90%")
        if mine and len({r.answer for r in mine}) == 1:
            flags.append("one answer for everything")
        out.append({
            "sheet": sheet, "ratings": len(mine), "attention_checks": len(checks),
            "attention_passed": passed, "left_share": share["left"], "tie_share": share["tie"],
            "agreement_with_others": float(np.mean(agree)) if agree else float("nan"),
            "flags": "; ".join(flags),
        })
    return out


def analyse(key: dict[str, Any], ratings: list[Rating], files: dict[str, Path], attention_min: float = 1.0,
            exclude_failed_attention: bool = True, n_boot: int = 2000, seed: int = 0) -> Analysis:
    annotators = _annotator_quality(key, ratings, attention_min)
    excluded = {}
    if exclude_failed_attention:
        excluded = {a["sheet"]: f"passed {a['attention_passed']:.0%} of {a['attention_checks']} attention-check answers"
                    for a in annotators if a["attention_checks"] and a["attention_passed"] < attention_min}
    kept = [r for r in ratings if r.sheet not in excluded]
    an = Analysis(key, kept, files, annotators, excluded)
    real = [r for r in kept if r.kind == "pair"]
    if not real:
        raise HarnessError("human-eval import: no ratings left to analyse"
                           + (f" after excluding {', '.join(excluded)} (humaneval.attention_min)" if excluded else ""))
    groups = key["groups"]

    for gi, g in enumerate(groups):
        for q in QUESTIONS:
            rs = [r for r in real if r.group == gi and r.question == q]
            an.rates.append(_rate_row(g, q, rs, n_boot, seed))
            for cat in sorted({r.category for r in rs}):
                an.categories.append({"category": cat, **_rate_row(g, q, [r for r in rs if r.category == cat], 0, seed)})

    # Bradley-Terry with ties per prompt variant and question, A's strength fixed at 0. The CI
    # resamples pairs (all their ratings together), like the win-rate bootstrap.
    for variant in sorted({g["variant"] for g in groups}):
        gis = [i for i, g in enumerate(groups) if g["variant"] == variant]
        for q in QUESTIONS:
            rs = [r for r in real if r.group in gis and r.question == q]
            an.bt += _bt_rows(groups, variant, q, rs, n_boot, seed)

    for q in QUESTIONS:
        for scope, rs in [("all pairs", [r for r in real if r.question == q])] + [
            (g["label"], [r for r in real if r.question == q and r.group == gi]) for gi, g in enumerate(groups)
        ]:
            an.agreement.append(_agreement_row(scope, q, rs))
    return an


def _rate_row(g: dict, q: str, rs: list[Rating], n_boot: int, seed: int) -> dict[str, Any]:
    n = len(rs)
    counts = Counter(r.outcome for r in rs)
    row: dict[str, Any] = {"comparison": g["label"], "variant": g["variant"], "a": g["system_a"], "b": g["system_b"],
                           "question": q, "n_ratings": n, "n_pairs": len({r.pair_id for r in rs})}
    by_pair: dict[str, list[str]] = defaultdict(list)
    for r in rs:
        by_pair[r.pair_id].append(r.outcome)
    boot = cluster_bootstrap_rates(list(by_pair.values()), n_boot=n_boot, seed=seed) if n_boot else {}
    for o in OUTCOMES:
        row[o] = counts[o] / n if n else float("nan")
        row[f"{o}_count"] = counts[o]
        row[f"{o}_wilson_lo"], row[f"{o}_wilson_hi"] = wilson_interval(counts[o], n)
        row[f"{o}_boot_lo"], row[f"{o}_boot_hi"] = boot.get(o, (float("nan"), float("nan")))
    return row


def _bt_rows(groups, variant, q, rs: list[Rating], n_boot: int, seed: int) -> list[dict[str, Any]]:
    if not rs:
        return []
    triples = [(groups[r.group]["system_a"], groups[r.group]["system_b"], r.outcome) for r in rs]
    reference = groups[rs[0].group]["system_a"]
    fit = fit_bradley_terry_ties(triples, reference=reference)
    by_pair: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for r, t in zip(rs, triples):
        by_pair[r.pair_id].append(t)
    clusters = list(by_pair.values())
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(min(n_boot, 400)):  # each resample is a BFGS fit; 400 gives stable 95% ends
        sample = [t for i in rng.integers(0, len(clusters), len(clusters)) for t in clusters[i]]
        try:
            boots.append(fit_bradley_terry_ties(sample, reference=reference))
        except ValueError:
            continue
    out = []
    for p in fit.players:
        vals = np.array([b.theta.get(p, np.nan) for b in boots])
        vals = vals[np.isfinite(vals)]
        lo, hi = (np.quantile(vals, [0.025, 0.975]) if vals.size else (np.nan, np.nan))
        out.append({"variant": variant, "question": q, "system": p, "theta": fit.theta[p],
                    "theta_lo": float(lo), "theta_hi": float(hi), "nu": fit.nu, "reference": reference,
                    "n_ratings": len(rs)})
    return out


def _agreement_row(scope: str, q: str, rs: list[Rating]) -> dict[str, Any]:
    by_pair: dict[str, list[str]] = defaultdict(list)
    for r in rs:
        by_pair[r.pair_id].append(r.outcome)
    items = list(by_pair.values())
    multi = [i for i in items if len(i) >= 2]
    sizes = Counter(len(i) for i in multi)
    fleiss = float("nan")
    if sizes:
        m = max(sizes, key=lambda s: (sizes[s], s))  # Fleiss needs one rater count: use the commonest
        fleiss = fleiss_kappa([i for i in multi if len(i) == m])
    return {
        "scope": scope, "question": q, "items": len(multi), "ratings": sum(len(i) for i in multi),
        "fleiss_kappa": fleiss, "krippendorff_alpha_nominal": krippendorff_alpha(multi, "nominal") if multi else float("nan"),
        "krippendorff_alpha_ordinal": krippendorff_alpha(multi, "ordinal") if multi else float("nan"),
        "gwet_ac1": gwet_ac1(multi) if multi else float("nan"),
    }


# ---- reports --------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def _num(x: float, d: int = 3) -> str:
    return "n/a" if x != x else f"{x:.{d}f}"


def write_results(an: Analysis, out_md: str | Path, expected_sheets: Sequence[str] | None = None) -> list[Path]:
    out_md = Path(out_md)
    stem = out_md.with_suffix("")
    key = an.key
    banner = profile_banner(key.get("profile"))
    lines = [banner, ""] if banner else []
    simulated = sorted(p.name for p in an.files.values() if ".simulated." in p.name)
    if simulated:
        lines += [SIMULATED_LINE.format(files=", ".join(simulated)), ""]
    lines += [f"# Human evaluation: pairwise A/B on {key['benchmark']}", ""]
    lines.append(f"Export `{key['export_id']}`; sheets read: " + ", ".join(f"{s} (`{p.name}`)" for s, p in sorted(an.files.items())) + ".")
    not_returned = sorted(set(expected_sheets if expected_sheets is not None else key["sheets"]) - set(an.files))
    if not_returned:
        lines.append(f"Sheets not returned (not in the numbers): {', '.join(not_returned)}.")
    for s, why in sorted(an.excluded.items()):
        lines.append(f"Excluded {s}: {why} (humaneval.attention_min); its ratings are not in the numbers below.")
    lines += ["", "Outcomes are for the first system of each comparison: **win** = judged better, **tie**, **lose**. "
              "Attention-check pairs are not counted. Intervals are 95%: Wilson (each rating independent) and a "
              "bootstrap that resamples pairs with all their ratings (the honest one when several annotators rate a pair).", ""]

    lines += ["## Win / tie / lose", "", "| Comparison | Question | Win | Tie | Lose | Win Wilson 95% | Win bootstrap 95% | Ratings (pairs) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in an.rates:
        lines.append(f"| {r['comparison']} | {r['question']} | {_pct(r['win'])} | {_pct(r['tie'])} | {_pct(r['lose'])} | "
                     f"[{_pct(r['win_wilson_lo'])}, {_pct(r['win_wilson_hi'])}] | [{_pct(r['win_boot_lo'])}, {_pct(r['win_boot_hi'])}] | "
                     f"{r['n_ratings']} ({r['n_pairs']}) |")
    lines += ["", "Tie and lose intervals: `" + stem.name + ".csv`.", "",
              "## Bradley-Terry with ties (Davidson)", "",
              "Strength θ on the log scale, the first system fixed at 0; ν is the tie propensity. "
              "P(A beats B) = e^θA / (e^θA + e^θB + ν e^((θA+θB)/2)).", "",
              "| Prompts | Question | System | θ | 95% bootstrap | ν |", "|---|---|---|---|---|---|"]
    for r in an.bt:
        lines.append(f"| {r['variant']} | {r['question']} | {r['system']} | {_num(r['theta'])} | "
                     f"[{_num(r['theta_lo'])}, {_num(r['theta_hi'])}] | {_num(r['nu'])} |")
    lines += ["", "## Agreement between annotators", "",
              "On the unblinded outcome (win/tie/lose for the first system), pairs with at least two ratings. "
              "Fleiss' κ uses the pairs with the commonest number of ratings; Krippendorff's α handles any number "
              "(ordinal: lose < tie < win); Gwet's AC1 stays stable when one outcome dominates.", "",
              "| Scope | Question | Pairs | Fleiss κ | Krippendorff α (nominal) | α (ordinal) | Gwet AC1 |", "|---|---|---|---|---|---|---|"]
    for r in an.agreement:
        lines.append(f"| {r['scope']} | {r['question']} | {r['items']} | {_num(r['fleiss_kappa'])} | "
                     f"{_num(r['krippendorff_alpha_nominal'])} | {_num(r['krippendorff_alpha_ordinal'])} | {_num(r['gwet_ac1'])} |")
    lines += ["", "## Annotators", "", "| Sheet | Ratings | Attention passed (answers) | Left chosen | Ties | Agrees with others | Flags |",
              "|---|---|---|---|---|---|---|"]
    for a in an.annotators:
        lines.append(f"| {a['sheet']} | {a['ratings']} | {_pct(a['attention_passed'])} ({a['attention_checks']}) | "
                     f"{_pct(a['left_share'])} | {_pct(a['tie_share'])} | {_pct(a['agreement_with_others'])} | {a['flags'] or ''} |")
    lines += ["", f"Per-category rates: `{stem.name}_categories.csv`; every rating unblinded: `{stem.name}_ratings.csv`; "
              f"plot: `{stem.name}.png`.", ""]

    written = [out_md]
    plot = stem.with_suffix(".png")
    from harness.plots import plot_win_rates

    plot_win_rates(an.rates, plot, stamp="smoke profile: says nothing about image quality" if key.get("profile") == "smoke" else "")
    for suffix, rows in (("", an.rates), ("_bt", an.bt), ("_agreement", an.agreement), ("_annotators", an.annotators),
                         ("_categories", an.categories), ("_ratings", [vars(r) for r in an.ratings])):
        p = stem.parent / f"{stem.name}{suffix}.csv"
        atomic_write_text(p, records_csv(rows))
        written.append(p)
    atomic_write_text(out_md, "\n".join(lines))
    return written + [plot]


def import_annotations(config: dict[str, Any], key_path: str | Path, sheet_paths: Sequence[str | Path],
                       out_md: str | Path) -> Analysis:
    hv = config["humaneval"]
    key = load_key(key_path)
    ratings, files = read_filled_sheets(key, sheet_paths)
    an = analyse(key, ratings, files, attention_min=hv["attention_min"],
                 exclude_failed_attention=hv["exclude_failed_attention"], n_boot=hv["n_boot"], seed=int(hv["seed"]))
    write_results(an, out_md)
    return an
