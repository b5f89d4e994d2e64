# Human evaluation: blinded A/B export -> (annotators) -> import with win rates and agreement.
IMPORT_KEYS = ("attention_min", "exclude_failed_attention", "n_boot", "seed")  # what changes the import's results


rule humaneval_export:
    input:
        humaneval_inputs,
    output:
        export=directory(f"{HUMANEVAL}/export"),
        key=f"{HUMANEVAL}/key.json",
    log:
        f"{LOGS}/humaneval_export.log",
    params:
        snapshot=SNAPSHOT,
        humaneval={k: config["humaneval"][k] for k in EXPORT_KEYS},
    conda:
        HARNESS_ENV
    shell:
        "python -m harness humaneval-export --config-snapshot {params.snapshot} --out {output.export} --key {output.key}"
        " > {log} 2>&1"


rule humaneval_results:
    input:
        key=f"{HUMANEVAL}/key.json",
        sheets=filled_sheets,
    output:
        md=report(f"{HUMANEVAL}/results.md", caption="report/humaneval.rst", category="Human evaluation",
                  labels={"content": "win rates and agreement", "format": "Markdown"}),
        csv=report(f"{HUMANEVAL}/results.csv", caption="report/humaneval.rst", category="Human evaluation",
                   labels={"content": "win rates and agreement", "format": "CSV"}),
        png=report(f"{HUMANEVAL}/results.png", caption="report/humaneval.rst", category="Human evaluation",
                   labels={"content": "win rates", "format": "plot"}),
    log:
        f"{LOGS}/humaneval_results.log",
    params:
        snapshot=SNAPSHOT,
        humaneval={k: config["humaneval"][k] for k in IMPORT_KEYS},
    conda:
        HARNESS_ENV
    shell:
        "python -m harness humaneval-import --config-snapshot {params.snapshot} --key {input.key} --out {output.md}"
        " {input.sheets} > {log} 2>&1"
