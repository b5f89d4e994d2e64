# Input functions and the paths rules share (functions only: the rules live in the other .smk files).
# Which systems, benchmarks and metrics a target needs comes from the harness package, so the DAG and
# the CLI the rules call never disagree.
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import resources
from harness.ablations import expansion_pairs, tr_sweep_points
from harness.expansion_report import expansion_benchmarks
from harness.humaneval.export import EXPORT_KEYS, humaneval_systems
from harness.preload import SOCKET_ENV
from harness.scorer_speed import SPEED_METRICS
from harness.scorers.registry import metric_applies, metric_weights, scorer_class
from harness.systems import ablation_systems, final_systems, scored_systems
from harness.tables import (table1_benchmarks, table1_metrics, table2_benchmarks, table2_metrics,
                            table3_benchmark, table3_metrics)


def demo_targets():
    """The demo (the all target): Table 1, Table 3 and the expansion ablation, each where the config has it."""
    targets = [f"{REPORTS}/table1.md"]
    if tr_sweep_points(config):
        targets.append(f"{REPORTS}/table3.md")
    if expansion_pairs(config):
        targets.append(f"{REPORTS}/ablation_expansion.md")
    return targets


def manifest(benchmark, system):
    return f"{RESULTS}/{benchmark}/{system}/manifest.jsonl"


def manifests(benchmarks, systems):
    return [manifest(b, s) for b in benchmarks for s in systems]


def score_files(benchmarks, systems, metrics):
    """Score files for these combinations, where the metric applies (FID/KID: benchmarks with references)."""
    return [f"{RESULTS}/{b}/{s}/scores/{m}.json" for b in benchmarks for s in systems for m in metrics
            if metric_applies(m, b)]


def configured_benchmarks(benchmarks):
    return [b for b in benchmarks if b in config["benchmarks"]]


def table_systems():
    """Every system a table row is made of: the rows and the stages they read (not ablation systems)."""
    return [s for s, spec in config["systems"].items() if not spec.get("ablation")]


# ---- generation -------------------------------------------------------------------------------------


def system_params(w):
    """What can change a system's images: its spec, its weights entry, and the run settings."""
    from models.registry import model_class, system_weight_keys

    spec = config["systems"][w.system]
    keys = system_weight_keys(w.system, spec)
    return {
        "spec": spec,
        "weights": {k: config["weights"][k] for k in keys},
        "run": {k: config[k] for k in ("seed", "num_prompts", "samples_per_prompt", "dtype", "device", "batch_invariant", "data_dir")},
        "versions": software_versions(model_class(spec["model"]).LIBRARIES, keys),
    }


def software_versions(libraries, weight_keys):
    """What can change a job's output without changing the config: library versions and the weights
    files replaced at the same path (size and mtime, not hashed). As params, a change reruns the job."""
    from harness.micro.train import is_trained_here
    from models.base import WeightsSpec, library_versions

    # weights this DAG trains are inputs of the jobs that read them (trained_inputs): their files are
    # tracked as inputs, not as a signature taken before they exist
    return {"libraries": library_versions(*libraries),
            "files": {k: WeightsSpec(k, str(config["weights"][k])).stat_signature() for k in weight_keys
                      if not is_trained_here(config, k)}}


def trained_inputs(keys):
    """The files showing that the weights entries among ``keys`` which this DAG trains are written (the
    micro world's models, the distillation rounds' students): inputs of every job that reads them."""
    from harness.micro.train import weights_markers

    return weights_markers(config, keys)


def scorer_versions(w):
    scorer = scorer_class(w.metric)
    return software_versions(scorer.LIBRARIES, [w.metric] if scorer.NEEDS_WEIGHTS else [])


def generation_inputs(w):
    """The upstream stage's manifest (relay systems), the expanded prompts (expand: true) and the weights
    this DAG trains (the micro world)."""
    from models.registry import system_weight_keys

    spec = config["systems"][w.system]
    out = [manifest(w.benchmark, spec["input"])] if spec.get("input") else []
    out += trained_inputs(system_weight_keys(w.system, spec))
    if spec.get("expand"):
        out.append(f"{RESULTS}/{w.benchmark}/expansions.jsonl")
    return out


def shard_manifests(w):
    """The shard manifests one merge job reads (only when config shards > 1)."""
    n = config["shards"]
    return [f"{RESULTS}/{w.benchmark}/{w.system}/manifest.shard-{i}-of-{n}.jsonl" for i in range(n)]


# ---- resources: GPU, device and host memory, run time (harness/resources.py) -----------------------
_ESTIMATES = {}  # one estimate per job, however many resources read it


def _generation_resources(benchmark, system, timed):
    key = ("generate", benchmark, system, timed)
    if key not in _ESTIMATES:
        _ESTIMATES[key] = resources.generation_resources(config, benchmark, system, runtime=timed)
    return _ESTIMATES[key]


def _scoring_resources(benchmark, metric, systems, timed):
    key = ("score", benchmark, metric, systems, timed)
    if key not in _ESTIMATES:
        _ESTIMATES[key] = resources.scoring_resources(config, benchmark, metric, list(systems))
    return _ESTIMATES[key]


def timed_jobs():
    """Whether jobs need a run time: a cluster scheduler uses it (SLURM --time), a local run does not,
    and the time model counts FLOPs of full-size networks (seconds). Asked when a job's resources are
    evaluated: while the Snakefile is read, ``workflow.local_exec`` is True whatever the executor. A
    cluster job's own Snakemake process was scheduled already."""
    return not workflow.local_exec and workflow.is_main_process


def declared(estimate):
    """Snakemake resources from ``estimate(wildcards, timed) -> JobResources``: gpu, gpu_mem_mb, mem_mb
    and runtime (minutes; 0, i.e. no limit, where nothing schedules by it)."""
    out = {name: (lambda w, name=name: getattr(estimate(w, False), name)) for name in ("gpu", "gpu_mem_mb", "mem_mb")}
    out["runtime"] = lambda w: estimate(w, True).runtime if timed_jobs() else 0
    return out


def generation_resources():
    return declared(lambda w, timed: _generation_resources(w.benchmark, w.system, timed))


def scoring_resources(systems):
    return declared(lambda w, timed: _scoring_resources(w.benchmark, w.metric, tuple(systems), timed))


def benchmark_resources(estimate):
    """The resources of a benchmark job (no wildcards), estimated once, when a run asks for the job."""
    done = []

    def job(w, timed):
        if not done:
            done.append(estimate())
        return done[0]

    return declared(job)


# ---- reports ----------------------------------------------------------------------------------------


def table1_inputs(w):
    benchmarks = configured_benchmarks(table1_benchmarks(config))
    return (score_files(benchmarks, final_systems(config), table1_metrics(config))
            + manifests(benchmarks, table_systems()))


def table2_inputs(w):
    benchmarks = configured_benchmarks(table2_benchmarks(config))
    return (score_files(benchmarks, final_systems(config), table2_metrics(config))
            + manifests(benchmarks, table_systems()))


def table3_inputs(w):
    points = [s for _, s in tr_sweep_points(config)]
    return score_files([table3_benchmark(config)], points, table3_metrics(config))


def expansion_inputs(w):
    systems = [s for pair in expansion_pairs(config) for s in pair]
    benchmarks = expansion_benchmarks(config)
    return (score_files(benchmarks, systems, table1_metrics(config))
            + [f"{RESULTS}/{b}/expansions.jsonl" for b in benchmarks])


def gallery_sheet_tables():
    from harness.gallery import sheet_tables

    return list(sheet_tables(config))


def gallery_inputs(w):
    from harness.gallery import gallery_shown

    return (manifests(config["benchmarks"], gallery_shown(config))
            + score_files(config["benchmarks"], [s for s in gallery_shown(config) if s in scored_systems(config)],
                          [m for m in config["metrics"] if not scorer_class(m).set_metric]))


def regression_inputs(w):
    return score_files(config["benchmarks"], scored_systems(config), config["metrics"])


def thresholds_file(w):
    """The gate's thresholds; when the file is missing the job runs and the CLI names the config key."""
    return [config["thresholds"]] if Path(config["thresholds"]).exists() else []


# ---- human evaluation -------------------------------------------------------------------------------


def humaneval_inputs(w):
    return manifests([config["humaneval"]["benchmark"]], humaneval_systems(config))


def filled_sheets(w):
    folder = Path(config["humaneval"]["annotations_dir"])
    sheets = sorted(str(p) for p in folder.glob("*.csv"))
    if not sheets:
        raise ValueError(
            f"no filled sheets (*.csv) in {folder} (config key humaneval.annotations_dir): put the annotators' "
            f"exported CSVs there, or fill them with synthetic annotators to check the pipeline: "
            f"python -m harness humaneval-simulate --key {HUMANEVAL}/key.json --out-dir {folder}"
        )
    return sheets


# ---- local runs: called from `onstart`, once the executor is known --------------------------------


def local_run_checks():
    """Jobs run on this machine: half precision must not be about to run on its CPU."""
    from harness.config import check_local_device
    from harness.errors import HarnessError

    try:
        check_local_device(config)
    except HarnessError as err:
        sys.exit(f"error: {err}")


def share_gpus():
    """One GPU per job on a local node: Snakemake counts `gpu` but assigns no ids, so jobs take theirs
    from the harness's pool (harness/gpus.py, OS locks), and the `gpu` resource caps them at the
    node's count (`--resources gpu=N` to use fewer). `device: cuda:N` pins every job to GPU N: one at
    a time. Cluster jobs get their GPU from the scheduler."""
    from harness.gpus import POOL_ENV, lock_dir, visible_gpus

    if not resources.uses_gpu(config):
        return
    pinned = config["device"].startswith("cuda:")
    gpus = [] if pinned else visible_gpus()
    if not gpus and not pinned:
        return
    if not pinned:
        os.environ[POOL_ENV] = str(lock_dir())  # jobs inherit it; their rules declare HARNESS_JOB_GPUS
    limit = 1 if pinned else len(gpus)
    if "gpu" not in workflow.scheduler.global_resources:  # else --resources gpu=N was given
        workflow.register_resource("gpu", limit)
        # Snakemake copies the limits into its scheduler before onstart, and register_resource then
        # changes only the amount free: without the limit too, running jobs never use it up.
        workflow.scheduler.global_resources["gpu"] = limit
    if pinned:
        print(f"note: device {config['device']}: every job that loads a model runs on that GPU, one at a time",
              file=sys.stderr)
    else:
        print(f"note: GPUs {','.join(gpus)}: each job that loads a model takes one of them (locks in "
              f"{lock_dir()}; `python -m harness gpus` shows who holds which)", file=sys.stderr)


# ---- the preload server (harness/preload.py) ------------------------------------------------------

PRELOAD_SERVERS = []


def start_preload_server():
    """Local runs: one process imports torch/diffusers/transformers/open_clip once and forks a child
    per generate/score job, which then starts in a fraction of a second. HARNESS_PRELOAD=0 turns it off."""
    if not workflow.local_exec or os.environ.get("HARNESS_PRELOAD", "1") == "0":
        return
    path = os.path.join(tempfile.gettempdir(), f"harness-preload-{os.getpid()}.sock")  # short: AF_UNIX limit
    os.makedirs(LOGS, exist_ok=True)
    with open(f"{LOGS}/preload-server.log", "w") as log:
        env = dict(os.environ, PYTHONPATH=f"{workflow.basedir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   HF_HUB_OFFLINE="1")
        PRELOAD_SERVERS.append(subprocess.Popen(
            [sys.executable, "-m", "harness", "preload-server", "--socket", path], cwd=workflow.basedir, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    os.environ[SOCKET_ENV] = path  # jobs inherit it; where nobody listens, they run in their own process


def stop_preload_server():
    for server in PRELOAD_SERVERS:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    os.environ.pop(SOCKET_ENV, None)


# ---- training and distillation (workflows/train.smk; harness/training/) ---------------------------
_STUDENT_CONFIG = []  # the students' derived config, built once


def student_cfg():
    from harness.training.rounds import student_config

    if not _STUDENT_CONFIG:
        _STUDENT_CONFIG.append(student_config(config))
    return _STUDENT_CONFIG[0]


def round_files(stage, steps):
    """The exported SAT checkpoint of a round (what a later round or a student system reads)."""
    from harness.training.rounds import round_outputs

    out = round_outputs(config, stage, int(steps))
    return [str(out["latest"]), str(out["state"])]


def distill_round_inputs(w):
    """The round's data (its stage system's images on distillation.benchmark) and its teacher (the
    previous round's checkpoint; the first round's teacher is the system's own weights entry)."""
    from harness.training.rounds import find_round, stage_system

    from models.registry import system_weight_keys

    rnd = find_round(config, w.stage, int(w.steps))
    name, spec = stage_system(config, w.stage)
    world = config["distillation"]["images"] == "world"  # the micro world's stream: no generated images
    out = [] if world else [manifest(config["distillation"]["benchmark"], name)]
    out += trained_inputs(system_weight_keys(name, spec))
    if rnd.index > 1:
        out += round_files(w.stage, rnd.teacher_steps)
    return out


def distill_round_params(w):
    """What can change a round's student: the schedule up to this round, the optimizer settings, the
    stage system (spec, weights, run settings, library versions). Not log_every, checkpoint_every or
    keep_checkpoint: they change no weight."""
    from types import SimpleNamespace

    from harness.training.rounds import find_round, stage_system

    d = config["distillation"]
    rnd = find_round(config, w.stage, int(w.steps))
    name, _ = stage_system(config, w.stage)
    ignored = {"base", "relay", "log_every", "checkpoint_every", "keep_checkpoint", "base_system", "relay_system"}
    if w.stage == "base":
        ignored.add("relay_t_r")
    settings = {k: v for k, v in d.items() if k not in ignored}
    system = system_params(SimpleNamespace(system=name))
    # training builds its systems batch-variant whatever the run's setting (rounds.build_stage_system)
    system["run"] = {k: v for k, v in system["run"].items() if k != "batch_invariant"}
    return {"schedule": d[w.stage][: rnd.index + 1], "settings": settings, "system": system}


def _training_resources(stage, steps, timed):
    key = ("train", stage, steps, timed)
    if key not in _ESTIMATES:
        from harness.training.resources import training_resources as estimate

        _ESTIMATES[key] = estimate(config, stage, int(steps), runtime=timed)
    return _ESTIMATES[key]


def training_resources():
    return declared(lambda w, timed: _training_resources(w.stage, w.steps, timed))


def _student_stage(w):
    cfg = student_cfg()
    if w.system not in cfg["systems"]:
        raise ValueError(f"{w.system!r} is not a student of the distillation schedules (config key 'distillation'); "
                         f"the students are {', '.join(cfg['systems'])}")
    spec = cfg["systems"][w.system]
    return ("relay" if spec.get("input") else "base"), spec


def distill_generate_inputs(w):
    """The student's round checkpoint, and for the relay student the base student's images."""
    stage, spec = _student_stage(w)
    out = round_files(stage, spec["steps"])
    if spec.get("input"):
        out.append(f"{DISTILL}/samples/{w.benchmark}/{spec['input']}/manifest.jsonl")
    return out


def student_params(w):
    from models.registry import model_class

    _, spec = _student_stage(w)
    cfg = student_cfg()
    return {"spec": spec, "weights": cfg["weights"][w.system],
            "run": {k: cfg[k] for k in ("seed", "num_prompts", "samples_per_prompt", "dtype", "device", "batch_invariant", "data_dir")},
            "versions": software_versions(model_class(spec["model"]).LIBRARIES, [])}


def student_generation_resources():
    """A student generates like its teacher system (the same architecture plus w_proj): its estimate
    reads the teachers' weights entries (a tiny teacher's student is tiny)."""
    from harness.training.rounds import stage_system

    def estimate(w, timed):
        key = ("generate-student", w.benchmark, w.system, timed)
        if key not in _ESTIMATES:
            _student_stage(w)
            cfg = student_cfg()
            weights = dict(cfg["weights"])
            for s, spec in cfg["systems"].items():
                _, teacher = stage_system(config, "relay" if spec.get("input") else "base")
                weights[s] = config["weights"][teacher.get("weights", teacher["model"])]
            _ESTIMATES[key] = resources.generation_resources({**cfg, "weights": weights}, w.benchmark, w.system,
                                                             runtime=timed)
        return _ESTIMATES[key]

    return declared(estimate)


def distill_report_inputs(w):
    """Every round's metrics, the final students' images, and the teacher systems' images they are
    compared with."""
    from harness.training.rounds import round_outputs, rounds, stage_system, student_names

    d = config["distillation"]
    out = [str(round_outputs(config, stage, rnd.student_steps)["metrics"]) for stage in ("base", "relay")
           for rnd in rounds(config, stage)]
    names = student_names(config)
    out += [f"{DISTILL}/samples/{d['benchmark']}/{name}/manifest.jsonl" for name in names.values()]
    out += [manifest(d["benchmark"], stage_system(config, stage)[0]) for stage in names]
    return out
