# Generation: one job per (benchmark, system, shard); shards merge into one manifest.
from harness.runner import merge_manifests


def system_params(w):
    """What can change a system's images: its spec, its weights entry, and the run settings."""
    from models.registry import system_weight_keys

    spec = config["systems"][w.system]
    return {
        "spec": spec,
        "weights": {k: config["weights"][k] for k in system_weight_keys(w.system, spec)},
        "run": {k: config[k] for k in ("seed", "num_prompts", "samples_per_prompt", "dtype", "device", "batch_invariant", "data_dir")},
    }


def upstream_manifest(w):
    up = config["systems"][w.system].get("input")
    return [f"{RESULTS}/{w.benchmark}/{up}/manifest.jsonl"] if up else []


rule generate_shard:
    input:
        upstream_manifest,
    output:
        f"{RESULTS}/{{benchmark}}/{{system}}/manifest.shard-{{shard}}-of-{{shards}}.jsonl",
    params:
        system=system_params,
    threads: 1
    shell:
        "{HARNESS} generate {CLI_OPTS} --threads {threads} --benchmark {wildcards.benchmark} --system {wildcards.system}"
        " --shard {wildcards.shard} --shards {wildcards.shards}"


rule merge_manifest:
    input:
        lambda w: [
            f"{RESULTS}/{w.benchmark}/{w.system}/manifest.shard-{i}-of-{config['shards']}.jsonl"
            for i in range(config["shards"])
        ],
    output:
        f"{RESULTS}/{{benchmark}}/{{system}}/manifest.jsonl",
    run:
        merge_manifests(list(input), output[0])
