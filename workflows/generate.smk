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


def generation_inputs(w):
    """The upstream stage's manifest (relay systems) and the expanded prompts (expand: true)."""
    spec = config["systems"][w.system]
    out = [f"{RESULTS}/{w.benchmark}/{spec['input']}/manifest.jsonl"] if spec.get("input") else []
    if spec.get("expand"):
        out.append(f"{RESULTS}/{w.benchmark}/expansions.jsonl")
    return out


rule expand_prompts:
    # The cache under results/.cache/expansions survives reruns; this snapshot is what generation reads.
    output:
        f"{RESULTS}/{{benchmark}}/expansions.jsonl",
    params:
        expansion=config["expansion"],
        run={k: config[k] for k in ("num_prompts", "data_dir")},
    shell:
        "{HARNESS} expand {CLI_OPTS} --benchmark {wildcards.benchmark}"


rule generate_shard:
    input:
        generation_inputs,
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
