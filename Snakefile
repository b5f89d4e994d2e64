# cogview3-harness: prompts -> images -> scores -> tables.
#   snakemake --cores all                                                     (the demo: rule all)
#   snakemake --cores all reports/table1.md                                   (smoke profile)
#   snakemake --cores all reports/table1.md --configfile config/paper.yaml    (real weights)
# Rules stay thin: each calls one command of the `harness` package CLI (harness/cli.py) and logs to results/logs.
import json
import os
import sys

import yaml
from snakemake.settings.types import DeploymentMethod

sys.path.insert(0, workflow.basedir)
from harness.config import check_run_inputs, validate_config
from harness.errors import ConfigError, HarnessError
from harness.prompts import BENCHMARKS

# One executing run per results folder; a run killed part-way left Snakemake's locks (and maybe its
# jobs) behind: cleaned up when no live run holds the folder (harness/resume.py). Invocations that
# run no job (-n, --unlock, --lint, --report, ...) claim nothing and change nothing.
from harness.resume import claim_run, executes

EXECUTES = workflow.is_main_process and executes(sys.argv)
if EXECUTES:
    try:
        for _notice in claim_run(os.getcwd()):
            print(f"note: {_notice}", file=sys.stderr)
    except HarnessError as _err:
        sys.exit(f"error: {_err}")

# No `configfile:` directive: Snakemake deep-merges --configfile over it, which would leak the smoke
# profile's systems into a paper run. The default applies only when no config file was given.
if "profile" not in config:
    _cli = dict(config)
    config.clear()
    with open(os.path.join(workflow.basedir, "config", "config.yaml")) as _f:
        config.update(yaml.safe_load(_f))
    config.update(_cli)
try:
    _valid = validate_config(dict(config))
except ConfigError as _err:
    sys.exit(f"error: {_err}")
config.clear()
config.update(_valid)

# A real run checks every weights and data file before any job starts (the same checks as
# `python -m harness preflight`, without hashing): all problems at once, not one per failed job.
# Once, in the main process: jobs that re-read this file (cluster jobs) skip it.
if config["profile"] != "smoke" and workflow.is_main_process:
    from harness.preflight import run_preflight

    _report = run_preflight(config)
    for _warning in _report.warnings:
        print(f"warning: {_warning}", file=sys.stderr)
    if not _report.ok:
        sys.exit(f"error: preflight found {len(_report.problems)} problem(s); nothing was run:\n"
                 + "\n".join(f"  {i}. {p}" for i, p in enumerate(_report.problems, 1))
                 + "\nFull report with the plan: python -m harness preflight --config <your config file>")

# What a run needs beyond a valid config (files it names, prompt-set sizes), before any job runs.
# What depends on where jobs run is checked in `onstart` (local_run_checks): only then is the executor
# known (while this file is read, workflow.local_exec is True whatever --executor says).
if workflow.is_main_process:
    try:
        check_run_inputs(config, local=False)
    except HarnessError as _err:
        sys.exit(f"error: {_err}")

RESULTS = config["results_dir"]
REPORTS = config["reports_dir"]
HUMANEVAL = f"{REPORTS}/humaneval"
LOGS = f"{RESULTS}/logs"  # one log per job: logs/<rule>/<wildcards>.log
SNAPSHOT = f"{RESULTS}/.harness/config.json"

# The CLI reads the validated config from this snapshot (every rule passes it as params.snapshot);
# rules list the parts of the config they depend on as params, so Snakemake reruns exactly the jobs
# whose inputs changed.
os.makedirs(os.path.dirname(SNAPSHOT), exist_ok=True)
_snap = json.dumps(config, indent=1)  # keep the config's order: tables list systems in it
if not os.path.exists(SNAPSHOT) or open(SNAPSHOT).read() != _snap:
    with open(f"{SNAPSHOT}.tmp", "w") as _f:
        _f.write(_snap)
    os.replace(f"{SNAPSHOT}.tmp", SNAPSHOT)

# Software: every rule names workflows/envs/harness.yaml, which `--sdm conda` builds and activates.
# Otherwise `python` in the rules is the interpreter running Snakemake (the .venv of `make setup`,
# activated or not): a shell function in the prefix says so.
HARNESS_ENV = "envs/harness.yaml"
if DeploymentMethod.CONDA in getattr(workflow.deployment_settings, "deployment_method", ()):
    os.environ.setdefault("HARNESS_REPO", workflow.basedir)  # the env's post-deploy script installs requirements/ from here
    _python = ""
else:
    _python = f'python() {{ "{sys.executable}" "$@"; }}; '
# A prefix replaces Snakemake's default bash strict mode, so it starts with it (pipefail: the
# regression rule pipes into tee and must still fail on a breach).
_prefix = f"set -euo pipefail; {_python}export PYTHONPATH={workflow.basedir}:${{PYTHONPATH:-}} HF_HUB_OFFLINE=1; "
shell.prefix(_prefix.replace("{", "{{").replace("}", "}}"))  # shell.prefix formats its argument

report: "workflows/report/workflow.rst"

wildcard_constraints:
    benchmark="|".join(BENCHMARKS),
    system="[a-z0-9][a-z0-9_.+-]*",
    metric="[a-z0-9_]+",
    shard=r"\d+",


include: "workflows/common.smk"


onstart:
    if workflow.local_exec:
        local_run_checks()
        share_gpus()
        start_preload_server()


onsuccess:
    stop_preload_server()


onerror:
    stop_preload_server()


rule all:
    # The demo (`make demo`): Table 1, Table 3 and the expansion ablation.
    input:
        demo_targets(),
    default_target: True


# Light jobs run in the main process even on a cluster (merge_manifest says so itself: it exists
# only with shards > 1).
# The reports the start-of-run check may remove when results they were built from are gone.
REPORT_RULES = ("table1", "table2", "table3", "ablation_expansion", "regression", "metrics_agreement", "gallery")

localrules:
    expand_prompts,
    table1,
    table2,
    table3,
    ablation_expansion,
    regression,
    humaneval_export,
    humaneval_results,


include: "workflows/generate.smk"
include: "workflows/score.smk"
include: "workflows/report.smk"
include: "workflows/humaneval.smk"
include: "workflows/train.smk"
include: "workflows/micro.smk"


# Integrity, before any job runs: every image the reports depend on is where its manifest says with
# its sha256 (hashing only files changed since they were last verified), every score file scores
# the images its manifest lists. What is damaged or stale is moved to results/.harness/quarantine
# and the reports built from it removed, so that this run redoes exactly that (harness/integrity.py).
if workflow.is_main_process:
    from harness.integrity import start_of_run

    _notices = start_of_run(config, {r: list(getattr(rules, r).output) for r in REPORT_RULES if hasattr(rules, r)},
                            dry_run=not EXECUTES)
    for _notice in _notices:
        print(f"note: {_notice}", file=sys.stderr)
