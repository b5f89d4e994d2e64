# Scoring: one job per (benchmark, metric) for every system of a group, so each scorer loads once.
# Per-image scores are cached by (image sha256, prompt, scorer version) outside the outputs, so a
# rerun after one system changed scores only its new images.
# Table rows and ablation systems are scored by separate jobs, so Table 1 never waits for an ablation.

# One scoring rule per group of systems (loop-defined, so all groups share one definition).
for _group, _systems in (("", final_systems(config)),
                         ("_tr_sweep", ablation_systems(config, "tr_sweep")),
                         ("_expansion", ablation_systems(config, "expansion"))):
    if not _systems:
        continue

    rule:
        name:
            f"score{_group}"
        input:
            lambda w, systems=_systems: manifests([w.benchmark], systems),
        output:
            [f"{RESULTS}/{{benchmark}}/{s}/scores/{{metric}}.json" for s in _systems],
        log:
            f"{LOGS}/score{_group}/{{benchmark}}/{{metric}}.log",
        params:
            snapshot=SNAPSHOT,
            weights=lambda w: metric_weights(w.metric, config["weights"]),
            versions=scorer_versions,
            systems=" ".join(_systems),
        threads: 1
        resources:
            **scoring_resources(_systems),
        conda:
            HARNESS_ENV
        shell:
            "HARNESS_JOB_GPUS={resources.gpu} python -m harness score --config-snapshot {params.snapshot} --threads {threads}"
            " --benchmark {wildcards.benchmark} --metric {wildcards.metric} --systems {params.systems}"
            " > {log} 2>&1"
