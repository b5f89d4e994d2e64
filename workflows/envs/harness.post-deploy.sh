#!/usr/bin/env bash
# Runs once inside the environment harness.yaml describes, right after conda created it
# (snakemake --sdm conda). HARNESS_REPO is the checkout; the Snakefile exports it.
set -euo pipefail
repo="${HARNESS_REPO:?HARNESS_REPO is unset: this script runs through snakemake --sdm conda}"
python -m pip install -q -c "$repo/requirements/lock.txt" -r "$repo/requirements/base.txt"
# image-reward and hpsv2x declare pins that conflict with open_clip 3 (requirements/nodeps.txt)
python -m pip install -q --no-deps -c "$repo/requirements/lock.txt" -r "$repo/requirements/nodeps.txt"
