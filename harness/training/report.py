"""``reports/distill.md``: every distillation round (teacher -> student steps, losses, timings) and
the final students' images, generated through the DAG, against the teacher systems' images of the
same prompts and seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.io import atomic_write_text
from harness.render import banner
from harness.training.rounds import METRICS, relay_sampling, rounds, samples_dir, student_config, student_names


def _round_metrics(config: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for stage in ("base", "relay"):
        for rnd in rounds(config, stage):
            path = rnd.out / METRICS
            if not path.is_file():
                raise HarnessError(f"{path} is missing: the {rnd.name} round has not finished (run `python -m harness "
                                   f"distill --stage {stage} --steps {rnd.student_steps}` or the Snakemake target)")
            out.append(json.loads(path.read_text()))
    return out


def _mean_abs_diff(student_cfg, benchmark, system, config, reference) -> tuple[float | None, int]:
    """Mean |student - reference| over pixels (0-255) of the images both made for the same prompt and sample."""
    from harness.manifests import open_row_image, read_manifest, row_key, rows_by_key

    mine = read_manifest(student_cfg["results_dir"], benchmark, system)
    try:
        theirs = rows_by_key(read_manifest(config["results_dir"], benchmark, reference))
    except HarnessError:
        return None, 0
    diffs = []
    for row in mine:
        other = theirs.get(row_key(row))
        if other is None:
            continue
        a = np.asarray(open_row_image(student_cfg["results_dir"], benchmark, system, row).convert("RGB"), np.float64)
        b = np.asarray(open_row_image(config["results_dir"], benchmark, reference, other).convert("RGB"), np.float64)
        if a.shape == b.shape:
            diffs.append(float(np.abs(a - b).mean()))
    return (sum(diffs) / len(diffs) if diffs else None), len(diffs)


def write_distill_report(config: dict[str, Any], out: str | Path) -> Path:
    from harness.manifests import read_manifest

    out = Path(out)
    d = config["distillation"]
    metrics = _round_metrics(config)
    scfg = student_config(config)
    names = student_names(config)
    lines = [banner(config), "", "# Progressive distillation (CogView3)", ""]
    how = relay_sampling(config)
    lines.append(f"Schedules: base {' -> '.join(map(str, d['base']))} steps (teacher `{d['base_system']}`), relay "
                 f"{' -> '.join(map(str, d['relay']))} steps from T_r = {how['t_r']} (teacher `{d['relay_system']}`, "
                 f"{how['form']} step form, blending by {how['blending']}); each round {d['steps_per_round']} optimizer steps of "
                 f"{d['batch_size']} x {d['grad_accum']} samples, AdamW lr {d['lr']:g}, EMA {d['ema_decay']:g}. "
                 f"Data: the images of each teacher system on `{d['benchmark']}`.")
    lines += ["", "| stage | round | teacher -> student steps | objective | training steps | loss (first) | "
              "loss (last) | round wall time | s / step | device | output |", "|" + "---|" * 11]
    for m in metrics:
        r = m["round"]
        objective = m["objective"].get("name", "") if isinstance(m["objective"], dict) else str(m["objective"])
        resumed = f" (resumed at {m['resumed_from']})" if m["resumed_from"] else ""
        lines.append(
            f"| {m['stage']} | {r['index']} | {r['teacher_steps']} -> {r['student_steps']} | {objective} | "
            f"{m['steps']}{resumed} | {m['loss_first']:.4g} | {m['loss_last']:.4g} | {m['job_wall_s']:.1f} s | "
            f"{m['seconds_per_step']:.3g} | {m['device']} ({m['precision']}) | `{m['output']}` |")
    lines.append("")
    lines.append(f"Losses: mean over the first and the last {metrics[0]['loss_window'] if metrics else 0} steps "
                 "(per-step values in each round's metrics.json). Round wall time: the whole job (data, models, "
                 "training, export); s / step: the training loop alone.")
    lines += ["", "## The students, generated through the DAG", "",
              "| system | chain | weights | images | mean abs. pixel difference to the teacher's images (0-255) |",
              "|---|---|---|---|---|"]
    references = {"base": d["base_system"], "relay": d["relay_system"]}
    for stage, name in names.items():
        spec = scfg["systems"][name]
        rows = read_manifest(scfg["results_dir"], d["benchmark"], name)
        diff, n = _mean_abs_diff(scfg, d["benchmark"], name, config, references[stage])
        chain = (f"{spec['steps']} steps" if stage == "base"
                 else f"{scfg['systems'][spec['input']]['steps']}+{spec['steps']} steps")
        cell = f"{diff:.2f} vs `{references[stage]}` (N={n})" if diff is not None else "n/a"
        lines.append(f"| {name} | {chain} | `{scfg['weights'][name]}` (distilled: true) | {len(rows)} in "
                     f"`{samples_dir(config) / d['benchmark'] / name}` | {cell} |")
    lines += ["", "The teachers' images are the training data (the teacher systems as configured, e.g. 50 base "
              "steps with CFG); the difference says how far the students' images are from them on the same "
              "prompts and seeds."]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
