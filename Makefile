# Two commands on a fresh machine:  `make demo` (install + smoke DAG)  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1

# torch 2.14.1 from PyPI is a CUDA 13.0 build (NVIDIA driver >= 580). With an older driver (>= 525):
# `make setup TORCH_CUDA=cu126` takes torch/torchvision +cu126 from the PyTorch index and everything else
# from PyPI under requirements/constraints-cu126.txt (the lock with torch's CUDA 12 build). The stamp
# records the choice; later `make` calls reuse it, and switching needs a fresh venv (`rm -rf .venv`).
STAMP := $(BIN)/.installed
INSTALLED_CUDA := $(strip $(if $(wildcard $(STAMP)),$(file < $(STAMP))))
TORCH_CUDA ?= $(INSTALLED_CUDA)
TORCH_INDEX_URL := https://download.pytorch.org/whl/$(TORCH_CUDA)
CONSTRAINTS := $(if $(TORCH_CUDA),requirements/constraints-$(TORCH_CUDA).txt,requirements/lock.txt)
ifneq ($(TORCH_CUDA),)
ifeq ($(wildcard $(CONSTRAINTS)),)
$(error TORCH_CUDA=$(TORCH_CUDA): there is no $(CONSTRAINTS); torch 2.14.1 is set up for TORCH_CUDA=cu126 (driver >= 525) or, left unset, for PyPI's CUDA 13.0 build (driver >= 580))
endif
endif
ifneq ($(wildcard $(STAMP)),)
ifneq ($(TORCH_CUDA),$(INSTALLED_CUDA))
$(error $(VENV) was set up with $(if $(INSTALLED_CUDA),TORCH_CUDA=$(INSTALLED_CUDA),PyPI's torch (TORCH_CUDA unset)); for $(if $(TORCH_CUDA),TORCH_CUDA=$(TORCH_CUDA),PyPI's torch) run `rm -rf $(VENV)` first)
endif
endif

REFERENCE_ENV := $(VENV)/reference

.PHONY: setup setup-slurm reference-env demo test test-slow regression micro micro-gate clean

$(STAMP): requirements/base.txt requirements/lock.txt requirements/nodeps.txt pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(if $(TORCH_CUDA),$(BIN)/pip install -q --no-deps --index-url $(TORCH_INDEX_URL) -c $(CONSTRAINTS) torch torchvision)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -r requirements/base.txt
	$(BIN)/pip install -q --no-deps -c $(CONSTRAINTS) -r requirements/nodeps.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	echo '$(TORCH_CUDA)' > $@

setup: $(STAMP)

# The optional SLURM executor (extra `slurm`) for `snakemake --profile profiles/slurm`, pinned by the same lock.
setup-slurm: setup
	$(BIN)/pip install -q -c $(CONSTRAINTS) -r requirements/slurm.txt

# Reference code for the scorer equality tests (requirements/reference.txt): t2v_metrics and transformers 4.49.
reference-env: $(REFERENCE_ENV)/.installed
$(REFERENCE_ENV)/.installed: requirements/reference.txt | $(STAMP)
	rm -rf $(REFERENCE_ENV)
	$(BIN)/pip install -q --no-deps --target $(REFERENCE_ENV) -r requirements/reference.txt
	touch $@

demo: setup  # rule all: Table 1, Table 3 and the expansion ablation
	$(BIN)/snakemake --cores all
	@echo "--> reports/table1.md, reports/table3.md, reports/ablation_expansion.md (job logs: results/logs/)"

# The CI gate: exits non-zero when a metric leaves its band (reports/regression.{md,json,junit.xml}).
regression: setup
	$(BIN)/snakemake --cores all --keep-incomplete --forcerun regression reports/regression.md

# The micro world (README "The micro world"): train, generate, score, Tables 1 and 3, then its quality gate
# (config/thresholds.micro.yaml) and the gate against known bugs and harmless changes (reports/micro_gate.md).
micro: setup
	$(BIN)/snakemake --cores all reports/table1.md reports/table3.md --configfile config/micro.yaml

micro-gate: micro
	$(BIN)/snakemake --cores all --keep-incomplete --forcerun regression reports/regression.md --configfile config/micro.yaml
	$(BIN)/python -m harness micro-gate --config config/micro.yaml --report reports/micro_gate.md

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:  # keeps reports/golden (committed)
	rm -rf results .snakemake
	find reports -mindepth 1 -maxdepth 1 ! -name golden -exec rm -rf {} + 2>/dev/null || true
