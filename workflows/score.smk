# Scoring: one job per (benchmark, metric) for every table system, so each scorer loads once.
# Per-image scores are cached by (image sha256, prompt, scorer version) outside the outputs, so a
# rerun after one system changed scores only its new images.
from harness.tables import final_systems


rule score:
    input:
        lambda w: [f"{RESULTS}/{w.benchmark}/{s}/manifest.jsonl" for s in final_systems(config)],
    output:
        [f"{RESULTS}/{{benchmark}}/{s}/scores/{{metric}}.json" for s in final_systems(config)],
    params:
        weights=lambda w: config["weights"][w.metric],
        systems=" ".join(final_systems(config)),
    threads: 1
    shell:
        "{HARNESS} score {CLI_OPTS} --threads {threads} --benchmark {wildcards.benchmark} --metric {wildcards.metric}"
        " --systems {params.systems}"
