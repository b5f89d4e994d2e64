# Scoring: one job per (benchmark, metric) for every table system, so each scorer loads once.
# Per-image scores are cached by (image sha256, prompt, scorer version) outside the outputs, so a
# rerun after one system changed scores only its new images.
# Table rows and ablation systems are scored by separate jobs, so Table 1 never waits for an ablation.
from harness.tables import final_systems, scored_systems

def ablation_systems(ablation):
    return [s for s in scored_systems(config) if config["systems"][s].get("ablation") == ablation]


SWEEP_SYSTEMS = ablation_systems("tr_sweep")
EXPANSION_SYSTEMS = ablation_systems("expansion")


def score_files(benchmarks, systems, metrics):
    """Score files for these combinations; FID/KID only where references exist (COCO-5k)."""
    return [f"{RESULTS}/{b}/{s}/scores/{m}.json" for b in benchmarks for s in systems for m in metrics
            if b == "coco5k" or m not in ("fid", "kid")]


# One scoring rule per group of systems (loop-defined, so all groups share one definition).
for _group, _systems in (("", final_systems(config)), ("_tr_sweep", SWEEP_SYSTEMS), ("_expansion", EXPANSION_SYSTEMS)):
    if not _systems:
        continue

    rule:
        name:
            f"score{_group}"
        input:
            lambda w, systems=_systems: [f"{RESULTS}/{w.benchmark}/{s}/manifest.jsonl" for s in systems],
        output:
            [f"{RESULTS}/{{benchmark}}/{s}/scores/{{metric}}.json" for s in _systems],
        params:
            weights=lambda w: config["weights"][w.metric],
            systems=" ".join(_systems),
        threads: 1
        shell:
            "{HARNESS} score {CLI_OPTS} --threads {threads} --benchmark {wildcards.benchmark} --metric {wildcards.metric}"
            " --systems {params.systems}"
