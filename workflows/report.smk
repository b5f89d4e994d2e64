# Reports: the paper's tables, the ablations and the regression gate, from the per-image scores.
from harness.ablations import expansion_pairs, tr_sweep_points
from harness.tables import (final_systems, scored_systems, table1_benchmarks, table1_metrics, table2_metrics,
                            table3_benchmark, table3_metrics)


def manifests(benchmarks, systems):
    return [f"{RESULTS}/{b}/{s}/manifest.jsonl" for b in benchmarks for s in systems]


def configured(metrics):
    return [m for m, _ in metrics if m in config["metrics"]]


def table1_inputs(w):
    benchmarks = [b for b in table1_benchmarks(config) if b in config["benchmarks"]]
    table_systems = [s for s in config["systems"] if not config["systems"][s].get("ablation")]
    return score_files(benchmarks, final_systems(config), configured(table1_metrics(config))) + manifests(benchmarks, table_systems)


def table2_inputs(w):
    if "coco5k" not in config["benchmarks"]:
        return []
    table_systems = [s for s in config["systems"] if not config["systems"][s].get("ablation")]
    return score_files(["coco5k"], final_systems(config), configured(table2_metrics(config))) + manifests(["coco5k"], table_systems)


def table3_inputs(w):
    points = [s for _, s in tr_sweep_points(config)]
    return score_files([table3_benchmark(config)], points, configured(table3_metrics(config)))


def expansion_inputs(w):
    from harness.expansion_report import expansion_benchmarks

    systems = [s for pair in expansion_pairs(config) for s in pair]
    benchmarks = expansion_benchmarks(config)
    return score_files(benchmarks, systems, configured(table1_metrics(config))) + [
        f"{RESULTS}/{b}/expansions.jsonl" for b in benchmarks]


def companions(stem, *suffixes):
    return [f"{REPORTS}/{stem}{x}" for x in suffixes]


rule table1:
    input:
        table1_inputs,
    output:
        companions("table1", ".md", ".csv", ".tex", "_paired.csv", "_categories.md", "_categories.csv", "_categories.png"),
    shell:
        "{HARNESS} table1 {CLI_OPTS} --out {output[0]}"


rule table2:
    input:
        table2_inputs,
    output:
        companions("table2", ".md", ".csv", ".tex", "_paired.csv"),
    shell:
        "{HARNESS} table2 {CLI_OPTS} --out {output[0]}"


rule table3:
    # The T_r sweep: every point relays the one base pass (see harness/ablations.py).
    input:
        table3_inputs,
    output:
        companions("table3", ".md", ".csv", ".tex", ".png"),
    shell:
        "{HARNESS} table3 {CLI_OPTS} --out {output[0]}"


rule ablation_expansion:
    input:
        expansion_inputs,
    output:
        f"{REPORTS}/ablation_expansion.md",
    shell:
        "{HARNESS} ablation-expansion {CLI_OPTS} --out {output}"


rule regression:
    # Exits non-zero on a breach. Snakemake then deletes the outputs of the failed job: run with
    # --keep-incomplete (as .ci/run does) to keep the report; the table is printed to the log too.
    input:
        lambda w: score_files(config["benchmarks"], scored_systems(config), config["metrics"]),
        thresholds=config["thresholds"] if os.path.exists(config["thresholds"]) else [],
    output:
        companions("regression", ".md", ".json", ".junit.xml"),
    params:
        thresholds=config["thresholds"],
    shell:
        "{HARNESS} regression {CLI_OPTS} --out {output[0]}"


rule timecost:
    # Runs alone (all cores) so the timings are not disturbed by other jobs.
    output:
        f"{REPORTS}/timecost.md",
    params:
        systems=config["systems"],
        weights=config["weights"],
    threads: workflow.cores
    shell:
        "{HARNESS} timecost {CLI_OPTS} --threads {threads} --out {output}"


rule scorer_speed:
    # A benchmark, not part of the tables: builds full-size scorers (random weights unless the
    # config names real ones) and times them against the reference packages, alone on all cores.
    output:
        f"{REPORTS}/scorer_speed.md",
    params:
        weights={m: config["weights"].get(m, "tiny") for m in ("hpsv2", "imagereward", "aesthetic", "fid")},
    threads: workflow.cores
    shell:
        "{HARNESS} scorer-speed {CLI_OPTS} --threads {threads} --out {output}"
