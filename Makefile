# Two commands on a fresh machine:  `make demo` (install + smoke DAG)  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-slow regression clean

$(BIN)/.installed: requirements/base.txt requirements/lock.txt requirements/nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements/lock.txt -r requirements/base.txt
	$(BIN)/pip install -q --no-deps -c requirements/lock.txt -r requirements/nodeps.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/snakemake --cores all reports/table1.md reports/table3.md reports/ablation_expansion.md
	@echo "--> reports/table1.md, reports/table3.md, reports/ablation_expansion.md"

# The CI gate: exits non-zero when a metric leaves its band (reports/regression.{md,json,junit.xml}).
regression: setup
	$(BIN)/snakemake --cores all --keep-incomplete --forcerun regression reports/regression.md

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:  # keeps reports/golden (committed)
	rm -rf results .snakemake
	find reports -mindepth 1 -maxdepth 1 ! -name golden -exec rm -rf {} + 2>/dev/null || true
