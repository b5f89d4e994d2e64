# Human evaluation: blinded A/B export -> (annotators) -> import with win rates and agreement.
from pathlib import Path

from harness.humaneval.export import EXPORT_KEYS, humaneval_systems

HUMANEVAL = f"{REPORTS}/humaneval"
IMPORT_KEYS = ("attention_min", "exclude_failed_attention", "n_boot", "seed")


def humaneval_inputs(w):
    return manifests([config["humaneval"]["benchmark"]], humaneval_systems(config))  # report.smk's helper


def filled_sheets(w):
    folder = Path(config["humaneval"]["annotations_dir"])
    sheets = sorted(str(p) for p in folder.glob("*.csv"))
    if not sheets:
        raise ValueError(
            f"no filled sheets (*.csv) in {folder} (config key humaneval.annotations_dir): put the annotators' "
            f"exported CSVs there, or fill them with synthetic annotators to check the pipeline: "
            f"python -m harness humaneval-simulate --key {HUMANEVAL}/key.json --out-dir {folder}"
        )
    return sheets


rule humaneval_export:
    input:
        humaneval_inputs,
    output:
        export=directory(f"{HUMANEVAL}/export"),
        key=f"{HUMANEVAL}/key.json",
    params:
        humaneval={k: config["humaneval"][k] for k in EXPORT_KEYS},
    localrule: True
    shell:
        "{HARNESS} humaneval-export {CLI_OPTS} --out {output.export} --key {output.key}"


rule humaneval_results:
    input:
        key=f"{HUMANEVAL}/key.json",
        sheets=filled_sheets,
    output:
        md=f"{HUMANEVAL}/results.md",
        csv=f"{HUMANEVAL}/results.csv",
        png=f"{HUMANEVAL}/results.png",
    params:
        humaneval={k: config["humaneval"][k] for k in IMPORT_KEYS},
    localrule: True
    shell:
        "{HARNESS} humaneval-import {CLI_OPTS} --key {input.key} --out {output.md} {input.sheets}"
