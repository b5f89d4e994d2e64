# The micro world's models (config key `micro`, config/micro.yaml; README "The micro world"): trained
# before anything generates, each written under <results_dir>/micro/ in its upstream layout and read
# back through its weights entry. Generation jobs take these files as inputs (common.smk:
# trained_inputs), so `snakemake ... --configfile config/micro.yaml` trains, then generates. A killed
# training job resumes from the checkpoint in <folder>/.state/ (not an output: Snakemake deletes a
# failed job's outputs).
MICRO = f"{RESULTS}/micro"


if config.get("micro"):

    rule micro_text_encoder:
        output:
            f"{MICRO}/t5/text_encoder/config.json",
        log:
            f"{LOGS}/micro/text_encoder.log",
        params:
            snapshot=SNAPSHOT,
            micro=config["micro"]["text_encoder"],
        threads: 1
        conda:
            HARNESS_ENV
        shell:
            "python -m harness micro-train --config-snapshot {params.snapshot} --threads {threads}"
            f" --model {config['micro']['text_encoder']['key']} > {{log}} 2>&1"

    rule micro_vae:
        input:
            trained_inputs([config["micro"]["text_encoder"]["key"]]),
        output:
            config=f"{MICRO}/vae/vae/config.json",
            metrics=f"{MICRO}/vae/metrics.json",
        log:
            f"{LOGS}/micro/vae.log",
        params:
            snapshot=SNAPSHOT,
            micro={"vae": config["micro"]["vae"], "seed": config["micro"]["seed"]},
        threads: workflow.cores
        conda:
            HARNESS_ENV
        shell:
            "python -m harness micro-train --config-snapshot {params.snapshot} --threads {threads}"
            f" --model {config['micro']['vae']['key']} > {{log}} 2>&1"

    rule micro_model:
        input:
            trained_inputs([config["micro"]["text_encoder"]["key"], config["micro"]["vae"]["key"]]),
        output:
            latest=f"{MICRO}/{{model}}/latest",
            metrics=f"{MICRO}/{{model}}/metrics.json",
        log:
            f"{LOGS}/micro/{{model}}.log",
        params:
            snapshot=SNAPSHOT,
            micro=lambda w: {"model": config["micro"]["models"][w.model], "seed": config["micro"]["seed"],
                             "vae": config["micro"]["vae"]},
        wildcard_constraints:
            model="|".join(config["micro"]["models"]),
        # one thread a model, models side by side: at these sizes two 1-thread jobs train 1.4x the steps of one
        # 2-thread job (measured on 2 cores, README "The micro world")
        threads: 1
        conda:
            HARNESS_ENV
        shell:
            "python -m harness micro-train --config-snapshot {params.snapshot} --threads {threads}"
            " --model {wildcards.model} > {log} 2>&1"
