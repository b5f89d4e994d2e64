"""The micro gate's power (harness/micro/gate.py): on the trained micro world (``make micro`` first; marked
``micro``, run by ``.ci/run``), each known bug re-introduced into the sampling code breaches
config/thresholds.micro.yaml, and each harmless change of how the same computation runs passes it."""

import pytest

from harness.config import load_config
from harness.micro.gate import VARIANTS, run_variants
from tests.conftest import ROOT
from tests.test_micro_dag import trained_world


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Every variant, two at a time (each in its own process, as `python -m harness micro-gate` runs them)."""
    trained_world()
    return run_variants(load_config(ROOT / "config" / "micro.yaml"), list(VARIANTS), tmp_path_factory.mktemp("gate"))


@pytest.mark.micro
@pytest.mark.parametrize("name", list(VARIANTS))
def test_known_bugs_breach_the_gate_and_harmless_changes_pass_it(name, variants):
    result = variants[name]
    summary = "; ".join(f"{r.key} {r.value:.4f}: {r.message}" for r in result.results if r.value is not None)
    print(f"{name}: {summary}")
    if result.variant.harmful:
        assert result.breached, f"{name} ({result.variant.what}) passed the gate: {summary}"
    else:
        assert not result.breached, f"{name} ({result.variant.what}) breached the gate: {summary}"
