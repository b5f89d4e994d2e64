# Reports: the paper's tables, the ablations and the regression gate, from the per-image scores.
# Files wrapped in report() go into `snakemake --cores 1 --report report.html` (captions: report/*.rst).


rule table1:
    input:
        table1_inputs,
    output:
        md=report(f"{REPORTS}/table1.md", caption="report/table1.rst", category="Table 1",
                  labels={"content": "Table 1", "format": "Markdown"}),
        csv=report(f"{REPORTS}/table1.csv", caption="report/table1.rst", category="Table 1",
                   labels={"content": "Table 1", "format": "CSV"}),
        tex=f"{REPORTS}/table1.tex",
        paired=f"{REPORTS}/table1_paired.csv",
        categories_md=report(f"{REPORTS}/table1_categories.md", caption="report/table1_categories.rst",
                             category="Table 1", labels={"content": "per prompt category", "format": "Markdown"}),
        categories_csv=report(f"{REPORTS}/table1_categories.csv", caption="report/table1_categories.rst",
                              category="Table 1", labels={"content": "per prompt category", "format": "CSV"}),
        categories_png=report(f"{REPORTS}/table1_categories.png", caption="report/table1_categories.rst",
                              category="Table 1", labels={"content": "per prompt category", "format": "plot"}),
    log:
        f"{LOGS}/table1.log",
    params:
        snapshot=SNAPSHOT,
    conda:
        HARNESS_ENV
    shell:
        "python -m harness table1 --config-snapshot {params.snapshot} --out {output.md} > {log} 2>&1"


rule table2:
    input:
        table2_inputs,
    output:
        md=report(f"{REPORTS}/table2.md", caption="report/table2.rst", category="Table 2",
                  labels={"content": "Table 2", "format": "Markdown"}),
        csv=report(f"{REPORTS}/table2.csv", caption="report/table2.rst", category="Table 2",
                   labels={"content": "Table 2", "format": "CSV"}),
        tex=f"{REPORTS}/table2.tex",
        paired=f"{REPORTS}/table2_paired.csv",
    log:
        f"{LOGS}/table2.log",
    params:
        snapshot=SNAPSHOT,
    conda:
        HARNESS_ENV
    shell:
        "python -m harness table2 --config-snapshot {params.snapshot} --out {output.md} > {log} 2>&1"


rule table3:
    # The T_r sweep: every point relays the one base pass (see harness/ablations.py).
    input:
        table3_inputs,
    output:
        md=report(f"{REPORTS}/table3.md", caption="report/table3.rst", category="Table 3",
                  labels={"content": "Table 3", "format": "Markdown"}),
        csv=report(f"{REPORTS}/table3.csv", caption="report/table3.rst", category="Table 3",
                   labels={"content": "Table 3", "format": "CSV"}),
        tex=f"{REPORTS}/table3.tex",
        png=report(f"{REPORTS}/table3.png", caption="report/table3_plot.rst", category="Table 3",
                   labels={"content": "metrics against T_r", "format": "plot"}),
    log:
        f"{LOGS}/table3.log",
    params:
        snapshot=SNAPSHOT,
    conda:
        HARNESS_ENV
    shell:
        "python -m harness table3 --config-snapshot {params.snapshot} --out {output.md} > {log} 2>&1"


rule ablation_expansion:
    input:
        expansion_inputs,
    output:
        report(f"{REPORTS}/ablation_expansion.md", caption="report/ablation_expansion.rst", category="Ablations",
               labels={"content": "prompt expansion on/off", "format": "Markdown"}),
    log:
        f"{LOGS}/ablation_expansion.log",
    params:
        snapshot=SNAPSHOT,
    conda:
        HARNESS_ENV
    shell:
        "python -m harness ablation-expansion --config-snapshot {params.snapshot} --out {output} > {log} 2>&1"


rule regression:
    # Exits non-zero on a breach. Snakemake then deletes the outputs of the failed job: run with
    # --keep-incomplete (as `make regression` does) to keep the report. The table goes to the
    # terminal and to the log, which outlives a failed job.
    input:
        scores=regression_inputs,
        thresholds=thresholds_file,
    output:
        md=report(f"{REPORTS}/regression.md", caption="report/regression.rst", category="Regression gate",
                  labels={"content": "checks", "format": "Markdown"}),
        json=f"{REPORTS}/regression.json",
        junit=f"{REPORTS}/regression.junit.xml",
    log:
        f"{LOGS}/regression.log",
    params:
        snapshot=SNAPSHOT,
    conda:
        HARNESS_ENV
    shell:
        "python -m harness regression --config-snapshot {params.snapshot} --out {output.md} 2>&1 | tee {log}"


rule gallery:
    # Every image of the table systems (and CogView3's base stage), the T_r strip and the expansion view, with scores.
    input:
        gallery_inputs,
    output:
        html=report(f"{REPORTS}/gallery/index.html", caption="report/gallery.rst", category="Gallery",
                    labels={"content": "gallery", "format": "HTML"}),
        sheets=[report(f"{REPORTS}/gallery/sheet-{t}.png", caption="report/gallery.rst", category="Gallery",
                       labels={"content": f"contact sheet {t}", "format": "PNG"}) for t in gallery_sheet_tables()],
    log:
        f"{LOGS}/gallery.log",
    params:
        snapshot=SNAPSHOT,
    conda:
        HARNESS_ENV
    shell:
        "python -m harness gallery --config-snapshot {params.snapshot} --out {output.html} > {log} 2>&1"


rule metrics_agreement:
    # Kendall's tau between every pair of the config's metrics, over systems and over images (harness/agreement.py).
    input:
        regression_inputs,
    output:
        md=report(f"{REPORTS}/metrics_agreement.md", caption="report/metrics_agreement.rst", category="Metric agreement",
                  labels={"content": "Kendall tau", "format": "Markdown"}),
        csv=f"{REPORTS}/metrics_agreement.csv",
    log:
        f"{LOGS}/metrics_agreement.log",
    params:
        snapshot=SNAPSHOT,
    conda:
        HARNESS_ENV
    shell:
        "python -m harness metrics-agreement --config-snapshot {params.snapshot} --out {output.md} > {log} 2>&1"


rule timecost:
    # Runs alone (all cores) so the timings are not disturbed by other jobs.
    output:
        report(f"{REPORTS}/timecost.md", caption="report/timecost.rst", category="Time cost",
               labels={"content": "seconds per image", "format": "Markdown"}),
    log:
        f"{LOGS}/timecost.log",
    params:
        snapshot=SNAPSHOT,
        systems=config["systems"],
        weights=config["weights"],
    threads: workflow.cores
    resources:
        **benchmark_resources(lambda: resources.timecost_resources(config)),
    conda:
        HARNESS_ENV
    shell:
        "HARNESS_JOB_GPUS={resources.gpu} python -m harness timecost --config-snapshot {params.snapshot} --threads {threads} --out {output} > {log} 2>&1"


rule scorer_speed:
    # A benchmark, not part of the tables: builds full-size scorers (random weights unless the
    # config names real ones) and times them against the reference packages, alone on all cores.
    output:
        report(f"{REPORTS}/scorer_speed.md", caption="report/scorer_speed.rst", category="Scorer speed",
               labels={"content": "batched scorers against the reference APIs", "format": "Markdown"}),
    log:
        f"{LOGS}/scorer_speed.log",
    params:
        snapshot=SNAPSHOT,
        weights={m: config["weights"].get(m, "tiny") for m in SPEED_METRICS},
    threads: workflow.cores
    resources:
        **benchmark_resources(lambda: resources.scorer_speed_resources(config, list(SPEED_METRICS))),
    conda:
        HARNESS_ENV
    shell:
        "HARNESS_JOB_GPUS={resources.gpu} python -m harness scorer-speed --config-snapshot {params.snapshot} --threads {threads} --out {output}"
        " > {log} 2>&1"
