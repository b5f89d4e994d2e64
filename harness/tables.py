"""The paper's tables, rebuilt from per-image scores and manifests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.io import atomic_write_text, read_jsonl
from harness.runner import manifest_path, system_dir
from harness.scoring import scores_path
from harness.stats import Estimate, bootstrap_mean, per_prompt_means
from harness.timecost import PAPER_TIME_COST_S

SMOKE_BANNER = (
    "> **Smoke profile: these numbers say nothing about image quality.** Every model and scorer here "
    "is a tiny random-weight build; the table only shows that the pipeline runs end to end."
)

BENCHMARK_TITLES = {"drawbench": "DrawBench", "parti": "PartiPrompts", "coco5k": "COCO-5k", "smoke": "smoke set"}
TABLE1_METRICS = (("aesthetic", "Aes"), ("hpsv2", "HPS v2"), ("imagereward", "ImageReward"))


def table1_metrics(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Table 1's metric columns; the HPS column reads v2.1 scores when only those are configured."""
    out = []
    for metric, label in TABLE1_METRICS:
        if metric == "hpsv2" and "hpsv2" not in config["metrics"] and "hpsv21" in config["metrics"]:
            metric, label = "hpsv21", "HPS v2.1"
        out.append((metric, label))
    return out


TABLE1_BENCHMARKS = ("drawbench", "parti")
TABLE2_BENCHMARKS = ("coco5k",)


def table2_metrics(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Table 2 (COCO-5k): FID, then the Table 1 metrics; KID when configured."""
    extra = [("kid", "KID")] if "kid" in config["metrics"] else []
    return [("fid", "FID"), *extra, *table1_metrics(config)]


def header_line(config: dict[str, Any]) -> str:
    if config["profile"] == "smoke":
        return SMOKE_BANNER
    return f"> Profile `{config['profile']}`: real weights as listed in the config; see the fingerprints below."


@dataclass
class Cell:
    text: str
    note: str = ""  # why the cell is empty
    estimate: Estimate | None = None

    def fmt(self) -> str:
        return self.text


def metric_cell(config: dict[str, Any], benchmark: str, system: str, metric: str, digests: dict) -> Cell:
    if benchmark not in config["benchmarks"]:
        return Cell("–", f"benchmark `{benchmark}` not in this config's benchmarks")
    if metric not in config["metrics"]:
        return Cell("–", f"metric `{metric}` not in this config's metrics")
    path = scores_path(config["results_dir"], benchmark, system, metric)
    if not path.is_file():
        raise HarnessError(f"scores file {path} is missing; run `snakemake {path}` first")
    data = json.loads(path.read_text())
    prev = digests.setdefault((benchmark, metric), (data["scorer_digest"], system))
    if prev[0] != data["scorer_digest"]:
        raise HarnessError(
            f"{benchmark}/{metric}: systems {prev[1]!r} and {system!r} were scored by different scorer versions "
            f"({prev[0]} vs {data['scorer_digest']}); rescore both before putting them in one column"
        )
    if data.get("kind") == "set":  # FID / KID: one number for the image set
        std = f" ± {data['std']:.4f}" if "std" in data else ""
        return Cell(f"{data['value']:.4f}{std} (N={data['n']})")
    rows = data["rows"]
    values = per_prompt_means([r["prompt_id"] for r in rows], [r["score"] for r in rows])
    est = bootstrap_mean(values, seed=config["seed"])
    return Cell(est.fmt(), estimate=est)


def stage_chain(config: dict[str, Any], system: str) -> list[str]:
    """The system and the stages it reads images from, first stage first (e.g. base, relay)."""
    chain = [system]
    while config["systems"][chain[0]].get("input"):
        chain.insert(0, config["systems"][chain[0]]["input"])
    return chain


def final_systems(config: dict[str, Any]) -> list[str]:
    """Systems that are a model's output (table rows), not an intermediate stage such as a 512 px base."""
    from models.registry import model_class

    return [name for name, spec in config["systems"].items() if not model_class(spec["model"]).IS_STAGE]


def time_cost(config: dict[str, Any], benchmarks: list[str], system: str) -> tuple[str, str]:
    """Mean generation wall time per image x 4 from the manifests (all stages), and the device."""
    total, device = 0.0, "?"
    for stage in stage_chain(config, system):
        times = []
        for b in benchmarks:
            path = manifest_path(config["results_dir"], b, stage)
            if path.is_file():
                times += [r["wall_time_s"] for r in read_jsonl(path)]
                fp = system_dir(config["results_dir"], b, stage) / "system.json"
                if fp.is_file():
                    device = json.loads(fp.read_text())["fingerprint"].get("device_type", "?")
        if not times:
            return "–", device
        total += sum(times) / len(times)
    return f"{4 * total:.2f} s", device


def table1(config: dict[str, Any], steps_labels: dict[str, str]) -> str:
    """Table 1: Model, Steps, Time cost, then Aes / HPS v2 / ImageReward per benchmark."""
    groups = list(TABLE1_BENCHMARKS) + [b for b in config["benchmarks"] if b not in TABLE1_BENCHMARKS + TABLE2_BENCHMARKS]
    return paper_table(config, steps_labels, "Table 1: DrawBench and PartiPrompts", groups, table1_metrics(config))


def table2(config: dict[str, Any], steps_labels: dict[str, str]) -> str:
    """Table 2: COCO-5k FID (and KID), Aes, HPS v2, ImageReward, time cost."""
    return paper_table(config, steps_labels, "Table 2: COCO-5k", list(TABLE2_BENCHMARKS), table2_metrics(config))


def paper_table(config, steps_labels, title: str, groups: list[str], metrics: list[tuple[str, str]]) -> str:
    head = ["Model", "Steps", "Time cost (paper)"]
    for b in groups:
        head += [f"{BENCHMARK_TITLES[b]} {label}" for _, label in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: dict[str, set[str]] = {}
    digests: dict = {}
    devices = set()
    for system in final_systems(config):
        ran = [b for b in groups if b in config["benchmarks"]]
        cost, device = time_cost(config, ran, system)
        devices.add(device)
        paper = PAPER_TIME_COST_S.get(system)
        cost_cell = f"{cost} ({paper:.2f} s)" if paper is not None else f"{cost} (–)"
        steps = "+".join(steps_labels.get(s, "?") for s in stage_chain(config, system))
        row = [system, steps, cost_cell]
        for b in groups:
            for metric, _ in metrics:
                cell = metric_cell(config, b, system, metric, digests)
                if cell.note:
                    notes.setdefault(cell.note, set()).add(b)
                row.append(cell.fmt())
        lines.append("| " + " | ".join(row) + " |")

    out = [header_line(config), "", f"# {title}", ""]
    out += lines
    out += [
        "",
        "Cells: mean [95% percentile-bootstrap CI over prompts] (N = prompts); samples of a prompt are averaged first. "
        "FID/KID: one value for the image set against the reference images (KID: mean ± std over subsets).",
        "Steps of a multi-stage system are per stage (base+relay); stages that only feed another system "
        "are not rows.",
        f"Time cost: mean generation wall time per image x 4 from the manifests, on {', '.join(sorted(devices))}; "
        "the paper's figure (one A100, batch 4) in brackets. This is not the paper's timing protocol: "
        "`reports/timecost.md` is.",
    ]
    if notes:
        out.append("")
        out.append("Not computed (–):")
        out += [f"- {note}" for note in sorted(notes)]
    relays = [(name, notes_for) for name in final_systems(config) if (notes_for := relay_note(config, name))]
    if relays:
        out.append("")
        out.append("Relay grids:")
        out += [f"- {name}: {note}" for name, note in relays]
    if digests:
        out.append("")
        out.append("Scorer fingerprints: " + ", ".join(f"{b}/{m} `{d}`" for (b, m), (d, _) in sorted(digests.items())))
    return "\n".join(out) + "\n"


def relay_note(config: dict[str, Any], system: str) -> str:
    """Which relay grid and blending a system used (every report must say it)."""
    from models.registry import build_system

    sys_obj = build_system(system, config["systems"][system], config["weights"], "cpu", "float32")
    return sys_obj.describe_grid() if hasattr(sys_obj, "describe_grid") else ""


def steps_labels(config: dict[str, Any]) -> dict[str, str]:
    from models.registry import build_system

    return {
        name: build_system(name, spec, config["weights"], "cpu", "float32").steps_label()
        for name, spec in config["systems"].items()
    }


def write_table1(config: dict[str, Any], out: str | Path) -> Path:
    atomic_write_text(out, table1(config, steps_labels(config)))
    return Path(out)


def write_table2(config: dict[str, Any], out: str | Path) -> Path:
    atomic_write_text(out, table2(config, steps_labels(config)))
    return Path(out)
