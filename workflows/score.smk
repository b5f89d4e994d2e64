# Scoring: one job per (benchmark, system, metric) -> per-image scores with the scorer fingerprint.


rule score:
    input:
        f"{RESULTS}/{{benchmark}}/{{system}}/manifest.jsonl",
    output:
        f"{RESULTS}/{{benchmark}}/{{system}}/scores/{{metric}}.json",
    params:
        weights=lambda w: config["weights"][w.metric],
    threads: 1
    shell:
        "{HARNESS} score {CLI_OPTS} --threads {threads} --benchmark {wildcards.benchmark} --system {wildcards.system}"
        " --metric {wildcards.metric}"
