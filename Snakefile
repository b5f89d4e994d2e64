# cogview3-harness: prompts -> images -> scores -> tables.
#   snakemake --cores all reports/table1.md                                   (smoke profile)
#   snakemake --cores all reports/table1.md --configfile config/paper.yaml    (real weights)
# Rules stay thin: each calls one entry point of the `harness` package.
import json
import os
import sys

import yaml

sys.path.insert(0, workflow.basedir)
from harness.config import validate_config
from harness.errors import ConfigError

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
# Once, in the main process: jobs that re-read this file (run: blocks, cluster jobs) skip it.
if config["profile"] != "smoke" and workflow.is_main_process:
    from harness.preflight import run_preflight

    _report = run_preflight(config)
    for _warning in _report.warnings:
        print(f"warning: {_warning}", file=sys.stderr)
    if not _report.ok:
        sys.exit(f"error: preflight found {len(_report.problems)} problem(s); nothing was run:\n"
                 + "\n".join(f"  {i}. {p}" for i, p in enumerate(_report.problems, 1))
                 + "\nFull report with the plan: python -m harness preflight --config <your config file>")

PY = sys.executable
RESULTS = config["results_dir"]
REPORTS = config["reports_dir"]
SNAPSHOT = os.path.join(RESULTS, ".harness", "config.json")
HARNESS = f"{PY} -m harness"
CLI_OPTS = f"--config-snapshot {SNAPSHOT}"

# The CLI reads the validated config from this snapshot; rules list the parts they depend on as
# params, so Snakemake reruns exactly the jobs whose inputs changed.
os.makedirs(os.path.dirname(SNAPSHOT), exist_ok=True)
_snap = json.dumps(config, indent=1)  # keep the config's order: tables list systems in it
if not os.path.exists(SNAPSHOT) or open(SNAPSHOT).read() != _snap:
    with open(SNAPSHOT + ".tmp", "w") as _f:
        _f.write(_snap)
    os.replace(SNAPSHOT + ".tmp", SNAPSHOT)

shell.prefix(f"export PYTHONPATH={workflow.basedir}:${{{{PYTHONPATH:-}}}} HF_HUB_OFFLINE=1; ")

wildcard_constraints:
    benchmark="|".join(["smoke", "drawbench", "parti", "coco5k"]),
    system="[a-z0-9][a-z0-9_.+-]*",
    metric="[a-z0-9_]+",
    shard=r"\d+",
    shards=r"\d+",


include: "workflows/generate.smk"
include: "workflows/score.smk"
include: "workflows/report.smk"
include: "workflows/humaneval.smk"
