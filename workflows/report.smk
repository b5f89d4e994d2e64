# Reports: the paper's tables from the per-image scores.
from harness.tables import final_systems, table1_metrics, table2_metrics, write_table1, write_table2


def table1_scores(w):
    metrics = [m for m, _ in table1_metrics(config) if m in config["metrics"]]
    benchmarks = [b for b in config["benchmarks"] if b != "coco5k"]
    systems = final_systems(config)
    return [f"{RESULTS}/{b}/{s}/scores/{m}.json" for b in benchmarks for s in systems for m in metrics] + [
        f"{RESULTS}/{b}/{s}/manifest.jsonl" for b in benchmarks for s in config["systems"]
    ]


rule table1:
    input:
        table1_scores,
    output:
        f"{REPORTS}/table1.md",
    run:
        write_table1(config, output[0])
        print(f"wrote {output[0]}")


def table2_inputs(w):
    if "coco5k" not in config["benchmarks"]:
        return []
    metrics = [m for m, _ in table2_metrics(config) if m in config["metrics"]]
    return [f"{RESULTS}/coco5k/{s}/scores/{m}.json" for s in final_systems(config) for m in metrics] + [
        f"{RESULTS}/coco5k/{s}/manifest.jsonl" for s in config["systems"]
    ]


rule table2:
    input:
        table2_inputs,
    output:
        f"{REPORTS}/table2.md",
    run:
        write_table2(config, output[0])
        print(f"wrote {output[0]}")


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
