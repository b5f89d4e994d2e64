# Generation: one job per (benchmark, system), or per shard with `shards: N` (N > 1), whose
# manifests a light merge job joins. With one shard the job writes the final manifest itself.
if config["shards"] == 1:
    GENERATED = f"{RESULTS}/{{benchmark}}/{{system}}/manifest.jsonl"
    GENERATE_LOG = f"{LOGS}/generate/{{benchmark}}/{{system}}.log"
else:
    GENERATED = f"{RESULTS}/{{benchmark}}/{{system}}/manifest.shard-{{shard}}-of-{config['shards']}.jsonl"
    GENERATE_LOG = f"{LOGS}/generate/{{benchmark}}/{{system}}.shard-{{shard}}-of-{config['shards']}.log"


rule expand_prompts:
    # The cache under results/.cache/expansions survives reruns; this snapshot is what generation reads.
    output:
        f"{RESULTS}/{{benchmark}}/expansions.jsonl",
    log:
        f"{LOGS}/expand_prompts/{{benchmark}}.log",
    params:
        snapshot=SNAPSHOT,
        expansion=config["expansion"],
        run={k: config[k] for k in ("num_prompts", "data_dir")},
    resources:
        # a local LLM (backend transformers) runs on the configured device; the OpenAI backend needs none
        gpu=int(config["expansion"]["backend"] == "transformers" and resources.uses_gpu(config)),
    conda:
        HARNESS_ENV
    shell:
        "HARNESS_JOB_GPUS={resources.gpu} python -m harness expand --config-snapshot {params.snapshot} --benchmark {wildcards.benchmark}"
        " > {log} 2>&1"


rule generate:
    input:
        generation_inputs,
    output:
        GENERATED,
    log:
        GENERATE_LOG,
    params:
        snapshot=SNAPSHOT,
        system=system_params,
        shard=lambda w: w.get("shard", 0),
        shards=config["shards"],
    threads: 1
    resources:
        **generation_resources(),
    conda:
        HARNESS_ENV
    shell:
        "HARNESS_JOB_GPUS={resources.gpu} python -m harness generate --config-snapshot {params.snapshot} --threads {threads}"
        " --benchmark {wildcards.benchmark} --system {wildcards.system} --shard {params.shard} --shards {params.shards}"
        " > {log} 2>&1"


if config["shards"] > 1:

    rule merge_manifest:
        input:
            shard_manifests,
        output:
            f"{RESULTS}/{{benchmark}}/{{system}}/manifest.jsonl",
        log:
            f"{LOGS}/merge_manifest/{{benchmark}}/{{system}}.log",
        localrule: True
        conda:
            HARNESS_ENV
        shell:
            "python -m harness merge --out {output} {input} > {log} 2>&1"
