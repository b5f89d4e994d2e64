"""The micro world's gate, tried against known bugs and harmless changes (README "The micro world").

``config/thresholds.micro.yaml`` bounds quality (minimum judge accuracy, maximum world-feature distance) with
margins from the measured seed-to-seed spread. This module shows what that gate can tell apart: each
*mutation* re-introduces a real bug into the sampling code of a trained micro world, each *harmless* variant
changes only how the same computation is run, and :func:`run_variant` regenerates the affected systems with
it and evaluates the gate on the result:

- ``base-cfg-off``: classifier-free guidance disabled in the base stage (D = D_c);
- ``relay-c-flipped``: the sign of the relay step's ``c`` coefficient (the weight of z^L, eq. 7) flipped;
- ``relay-from-noise``: the relay started from pure noise (x = sigma_0 eps) instead of z^L + sigma_0 eps;
- ``base-grid-reversed``: the base DDIM grid run in ascending order;
- ``threads-2``, ``batch-invariant-toggled``, ``batch-size-6``: two threads instead of the DAG's one; the batch-invariant
  kernels on where the config has them off (or off where on); batch size 6 instead of the config's (with the
  batch-invariant kernels off, so float rounding really changes).

A base-stage change regenerates the base and the relay reading it (``cogview3``); a relay change, and every
harmless variant, regenerates ``cogview3`` and the T_r sweep's highest point (:func:`relay_chain`). Why that
point: in the official closed form the weight of z^L per step is small and changes sign along the grid
(:func:`models.cogview3.sampling.relay_coefficients`; over 10 steps the c sum to -0.26 from T_r 200, 0.03 from
500, 0.52 from 800), so a flipped c moves T_r = 500 images by less than a seed does (measured: micro_fd 15.7 ->
14.9) and T_r = 800 ones far beyond it (15.6 -> 112.7). Regenerating every sweep point would add about 40 s each.

A mutation patches the shipped functions in this process only (``unittest.mock``); nothing on disk changes.
The variant's results are a copy of the trained world's results in which the systems the change touches (the
base stage and the relay reading it, or the relay alone) are regenerated and rescored; the other systems are kept as they were. Each variant generates on one thread, as the DAG's generation
jobs do (``threads-2`` on two), and :func:`run_variants` runs them ``WORKERS`` at a time in separate processes.

    python -m harness micro-gate --config config/micro.yaml [--variant NAME ...] [--out DIR]
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

from harness.errors import HarnessError

#: the chain a base-stage variant regenerates: the base stage, then the relay reading its images. The unguided
#: pair (cogview3-base-unguided, cogview3-unguided) is kept as trained: at guidance 1 CFG switched off changes nothing
#: there, and the base grid reversed breaches the levels of cogview3 already
CHAIN = ("cogview3-base", "cogview3")
RELAY = "relay"  # a variant's chain: :func:`relay_chain` of the config
#: :func:`run_variants` runs this many variants side by side, each on its own threads (one, as the DAG's generation
#: jobs; ``threads-2`` two): on 2 cores two 1-thread processes do more than one 2-thread process
WORKERS = 2


def relay_chain(config: dict[str, Any]) -> tuple[str, ...]:
    """``cogview3`` and the T_r sweep's point with the highest T_r on the official form (where c weighs most)."""
    from harness.ablations import is_paper_form, tr_sweep_points

    points = [(t, name) for t, name in tr_sweep_points(config) if not is_paper_form(config, name)]
    return ("cogview3",) + ((max(points)[1],) if points else ())


@contextlib.contextmanager
def _base_cfg_off():
    from unittest import mock

    from models.cogview3.system import CogView3BaseSystem

    original = CogView3BaseSystem.denoiser

    def unguided(self, *args, **kwargs):
        d = original(self, *args, **kwargs)
        d.guidance = 1.0  # the bug: D = D_u + 1 (D_c - D_u) = D_c
        return d

    with mock.patch.object(CogView3BaseSystem, "denoiser", unguided):
        yield


@contextlib.contextmanager
def _relay_c_flipped():
    from unittest import mock

    from models.cogview3 import sampling

    original = sampling.relay_coefficients

    def flipped(*args, **kwargs):
        return [(a, b, -c, d) for a, b, c, d in original(*args, **kwargs)]

    sampling._coefficient_table.cache_clear()
    try:
        with mock.patch.object(sampling, "relay_coefficients", flipped):
            yield
    finally:
        sampling._coefficient_table.cache_clear()


@contextlib.contextmanager
def _relay_from_noise():
    from unittest import mock

    from models.cogview3 import system
    from models.cogview3.schedule import sampler_sigmas

    original = system.relay_sample

    def from_noise(denoiser, z_lr, timesteps, noise, *args, **kwargs):
        # the sampler starts at z_lr + sigma_0 * noise: this noise makes that start sigma_0 * eps alone
        sigma0 = float(sampler_sigmas(list(timesteps))[0])
        return original(denoiser, z_lr, timesteps, noise - z_lr.to(noise.dtype) / sigma0, *args, **kwargs)

    with mock.patch.object(system, "relay_sample", from_noise):
        yield


@contextlib.contextmanager
def _base_grid_reversed():
    from unittest import mock

    from models.cogview3.system import CogView3BaseSystem

    original = CogView3BaseSystem.grid
    with mock.patch.object(CogView3BaseSystem, "grid", lambda self: list(reversed(original(self)))):
        yield


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    harmful: bool
    patch: Callable[[], ContextManager] = contextlib.nullcontext
    #: the run settings it changes, from the trained world's config (harmless variants)
    config: Callable[[dict[str, Any]], dict[str, Any]] = lambda cfg: {}
    chain: tuple[str, ...] | str = CHAIN  # the systems it regenerates, or RELAY
    threads: int = 1  # CPU threads it generates on


VARIANTS = {v.name: v for v in (
    Variant("base-cfg-off", "classifier-free guidance disabled in the base stage", True, _base_cfg_off),
    Variant("relay-c-flipped", "the relay step's c coefficient (weight of z^L) with its sign flipped", True,
            _relay_c_flipped, chain=RELAY),
    Variant("relay-from-noise", "the relay started from pure noise instead of z^L", True, _relay_from_noise,
            chain=RELAY),
    Variant("base-grid-reversed", "the base DDIM grid reversed", True, _base_grid_reversed),
    Variant("threads-2", "two CPU threads instead of the one each generation job of the DAG runs on", False,
            chain=RELAY, threads=2),
    Variant("batch-invariant-toggled", "batch_invariant switched (the batch-invariant kernels on or off)", False,
            config=lambda cfg: {"batch_invariant": not cfg["batch_invariant"]}, chain=RELAY),
    Variant("batch-size-6", "batch_size 6 instead of the config's, batch_invariant off", False,
            config=lambda cfg: {"batch_size": 6, "batch_invariant": False}, chain=RELAY),
)}


@dataclass
class VariantResult:
    variant: Variant
    results: list  # harness.regression.CheckResult
    values: dict[str, dict]

    @property
    def breached(self) -> list:
        return [r for r in self.results if not r.passed]

    @property
    def as_expected(self) -> bool:
        return bool(self.breached) == self.variant.harmful


def variant_config(config: dict[str, Any], variant: Variant, out: Path) -> dict[str, Any]:
    """The trained world's config with results under ``out`` and the variant's run settings; the weights
    entries stay the trained files (nothing is trained again)."""
    from harness.config import validate_config

    raw = copy.deepcopy(config)
    raw.update(results_dir=str(out), micro=None, **variant.config(config))
    raw["distillation"]["images"] = "benchmark"  # no micro section: nothing here trains
    return validate_config(raw)


def run_variant(config: dict[str, Any], name: str, out: str | Path, progress: bool = False) -> VariantResult:
    """Copy the trained world's results for the gated benchmark to ``out``, regenerate and rescore
    the systems of the variant's chain under it, and evaluate ``config['thresholds']`` on the result."""
    import torch

    from harness.regression import current_values, evaluate, load_thresholds, per_prompt_reader
    from harness.runner import run_generation
    from harness.scoring import run_scoring

    if name not in VARIANTS:
        raise HarnessError(f"variant {name!r}: choose one of {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    out = Path(out)
    src = Path(config["results_dir"])
    cfg = variant_config(config, variant, out)
    benchmark = cfg["benchmarks"][0]
    for system in cfg["systems"]:
        manifest = src / benchmark / system / "manifest.jsonl"
        if not manifest.is_file():
            raise HarnessError(f"{manifest} is missing: run the micro world first (snakemake --cores all "
                               "reports/table1.md reports/table3.md --configfile config/micro.yaml)")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src / benchmark, out / benchmark, ignore=shutil.ignore_patterns(".state", "*.lock"))
    chain = relay_chain(cfg) if variant.chain == RELAY else variant.chain
    for system in chain:
        shutil.rmtree(out / benchmark / system)
    threads = torch.get_num_threads()
    torch.set_num_threads(variant.threads)
    try:
        with variant.patch():
            for system in chain:
                run_generation(cfg, benchmark, system, progress=progress)
    finally:
        torch.set_num_threads(threads)
    for metric in cfg["metrics"]:
        run_scoring(cfg, benchmark, list(chain), metric)
    values = current_values(cfg)
    return VariantResult(variant, evaluate(load_thresholds(cfg["thresholds"]), values, {}, per_prompt_reader(cfg)),
                         values)


def _run_in_worker(config: dict[str, Any], name: str, out: Path) -> tuple[list, dict]:
    result = run_variant(config, name, out)
    return result.results, result.values  # a Variant holds lambdas: the parent rebuilds it by name


def run_variants(config: dict[str, Any], names: list[str], out: str | Path,
                 workers: int = WORKERS) -> dict[str, VariantResult]:
    """:func:`run_variant` for each of ``names`` (results under ``out/<name>``), ``workers`` at a time in fresh
    processes (a patch lives in its own process only), the slowest first; a variant that fails raises here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    slow_first = sorted(names, key=lambda n: n != "batch-invariant-toggled")  # the batch-invariant kernels: ~2x
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_run_in_worker, config, name, Path(out) / name) for name in slow_first}
        return {name: VariantResult(VARIANTS[name], *futures[name].result()) for name in names}


def render(results: list[VariantResult]) -> str:
    lines = ["| Variant | Change | Expected | Gate | Breaches |", "|---|---|---|---|---|"]
    for r in results:
        gate = f"FAIL ({len(r.breached)})" if r.breached else "PASS"
        breaches = "; ".join(f"{b.key}: {b.message}" for b in r.breached[:4]) + (" ..." if len(r.breached) > 4 else "")
        lines.append(f"| {r.variant.name} | {r.variant.what} | {'breach' if r.variant.harmful else 'pass'} | {gate} "
                     f"| {breaches or '–'} |")
    return "\n".join(lines)
