"""Command line: the entry points the Snakemake rules call (and users can call directly).

    python -m harness generate --benchmark smoke --system sdxl [--shard 0 --shards 1]
    python -m harness score --benchmark smoke --systems sdxl cogview3 --metric aesthetic
    python -m harness table1 --out reports/table1.md        (also table2, table3, ablation-expansion)
    python -m harness expand --benchmark drawbench
    python -m harness regression --out reports/regression.md [--update-golden]
    python -m harness timecost --config config/timecost.yaml --out reports/timecost.md
    python -m harness scorer-speed --out reports/scorer_speed.md [--scale small]
    python -m harness humaneval-export --out reports/humaneval/export --key reports/humaneval/key.json
    python -m harness humaneval-simulate --key reports/humaneval/key.json --out-dir annotations/humaneval
    python -m harness humaneval-import --key reports/humaneval/key.json --out reports/humaneval/results.md [sheets...]
    python -m harness validate --config config/paper.yaml
    python -m harness preflight --config config/paper.yaml
    python -m harness verify [--repair]                     (every image's sha256, every score file)
    python -m harness train --stage relay [--train-steps N] [--out DIR]   (the relay loss, eq. 6, from data)
    python -m harness distill --stage base --steps 25        (one distillation round: teacher -> 25-step student)
    python -m harness distill-generate --benchmark smoke --system student-base-2step
    python -m harness distill-report --out reports/distill.md
    python -m harness preload-server --socket /tmp/harness.sock   (started by the Snakefile for local runs)

The config is read from ``--config`` (YAML; default config/config.yaml) or from the snapshot the
Snakefile writes (``--config-snapshot``), so a rule and a hand-run command see the same values.

Exit status: 0 success; 1 the regression gate found a breach; 2 a usage, config or input error (one
message naming the file, key or value); 3 a crash (a bug or a failing environment: the traceback is
printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from harness.errors import HarnessError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time

EXIT_OK, EXIT_BREACH, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 3  # see the module docstring


def _config(args) -> dict:
    from harness.config import load_config, validate_config

    if args.config_snapshot:
        return validate_config(json.loads(Path(args.config_snapshot).read_text()))
    return load_config(args.config)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_generate(args) -> None:
    from harness.runner import run_generation

    cfg = _config(args)
    _threads(args.threads)
    summary = run_generation(cfg, args.benchmark, args.system, args.shard, args.shards)
    print(f"{args.benchmark}/{args.system}: {summary.generated} generated, {summary.kept} kept -> {summary.manifest}")


def cmd_merge(args) -> None:
    from harness.manifests import merge_manifests

    rows = merge_manifests(args.inputs, args.out)
    print(f"merged {len(args.inputs)} shard manifests ({len(rows)} images) -> {args.out}")


def cmd_score(args) -> None:
    from harness.scoring import run_scoring

    cfg = _config(args)
    _threads(args.threads)
    for out in run_scoring(cfg, args.benchmark, args.systems, args.metric):
        print(f"{args.metric} scores -> {out}")


def cmd_table(args) -> None:
    from harness import tables
    from harness.expansion_report import write_expansion_report

    writers = {"table1": tables.write_table1, "table2": tables.write_table2, "table3": tables.write_table3,
               "ablation-expansion": write_expansion_report}
    out = writers[args.command](_config(args), args.out)
    print(f"wrote {out} (and its companion files)")


def cmd_gallery(args) -> None:
    from harness.gallery import write_gallery

    print(f"wrote {write_gallery(_config(args), args.out)} (images, thumbnails and contact sheets beside it)")


def cmd_metrics_agreement(args) -> None:
    from harness.agreement import write_agreement

    print(f"wrote {write_agreement(_config(args), args.out)} (and its CSV)")


def cmd_expand(args) -> None:
    from harness.expansion import run_expansion

    out = run_expansion(_config(args), args.benchmark)
    print(f"expanded prompts -> {out}")


def cmd_regression(args) -> int:
    from harness.regression import run_regression

    ok = run_regression(_config(args), args.out, update_golden=args.update_golden)
    print(open(args.out).read())
    print(f"wrote {args.out} (+ .json, .junit.xml): {'PASS' if ok else 'FAIL'}")
    return EXIT_OK if ok else EXIT_BREACH


def cmd_timecost(args) -> None:
    from harness.timecost import run_timecost

    cfg = _config(args)
    _threads(args.threads)
    out = run_timecost(cfg, args.out, batch=args.batch, warmup=args.warmup, repeats=args.repeats)
    print(f"wrote {out}")


def cmd_scorer_speed(args) -> None:
    from harness.scorer_speed import SPEED_METRICS, run_scorer_speed

    _threads(args.threads)
    out = run_scorer_speed(_config(args), args.out, metrics=args.metrics or SPEED_METRICS, n_images=args.images,
                           image_size=args.image_size, batch_size=args.batch_size, scale=args.scale, device=args.device)
    print(f"wrote {out}")


def cmd_humaneval_export(args) -> None:
    from harness.humaneval.export import build_export

    key = build_export(_config(args), args.out, args.key)
    n = {s: len(rows) for s, rows in key["sheets"].items()}
    print(f"export {key['export_id']}: {len(n)} sheets ({', '.join(f'{s}: {k} pairs' for s, k in n.items())}) -> {args.out}; "
          f"key (keep it from annotators) -> {args.key}")


def cmd_humaneval_simulate(args) -> None:
    from harness.humaneval.results import load_key
    from harness.humaneval.simulate import simulate_sheets

    paths = simulate_sheets(load_key(args.key), args.out_dir, consistency=args.consistency,
                            careless=args.careless, seed=args.seed)
    print(f"simulated {len(paths)} filled sheets -> {args.out_dir}")


def cmd_humaneval_import(args) -> None:
    from harness.humaneval.results import import_annotations

    cfg = _config(args)
    sheets = args.sheets or sorted(str(p) for p in Path(cfg["humaneval"]["annotations_dir"]).glob("*.csv"))
    an = import_annotations(cfg, args.key, sheets, args.out)
    print(f"wrote {args.out} ({len(an.files)} sheets, {sum(r.kind == 'pair' for r in an.ratings)} ratings) "
          "and its CSV/PNG companions")


def cmd_validate(args) -> int:
    """Schema and the preflight's file checks (no hashing, no plan): "OK" means a run can start."""
    from harness.config import check_run_inputs
    from harness.preflight import run_preflight

    cfg = _config(args)
    report = run_preflight(cfg)
    if report.ok:
        check_run_inputs(cfg)
    if len(report.problems) == 1:  # one problem: its own message is the first line
        print(f"error: {report.problems[0]}\n(the whole report: python -m harness preflight --config {args.config})",
              file=sys.stderr)
        return EXIT_USAGE
    if not report.ok:
        print(f"error: {len(report.problems)} problem(s) in {args.config} (details: python -m harness preflight "
              f"--config {args.config}):", file=sys.stderr)
        for i, problem in enumerate(report.problems, 1):
            print(f"  {i}. {problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"config OK: profile {cfg['profile']}, {len(cfg['systems'])} systems, benchmarks {', '.join(cfg['benchmarks'])}; "
          "every weights file and prompt file is in place")
    return EXIT_OK


def cmd_preflight(args) -> int:
    from harness.preflight import render, run_preflight

    cfg = _config(args)
    report = run_preflight(cfg, with_plan=True)
    print(render(report, cfg, args.config_snapshot or args.config, hash_files=not args.no_hash))
    return EXIT_OK if report.ok else EXIT_USAGE


def cmd_verify(args) -> int:
    """Hash every image, check every manifest and score file; with --repair, fix what is damaged."""
    from harness import integrity

    cfg = _config(args)
    result = integrity.check(cfg, rehash=True, scorer_versions=True)
    if result.findings and args.repair:
        print(f"found {len(result.findings)} problems in {cfg['results_dir']}; repairing:")
        print("\n".join(integrity.render_findings(result.findings)))
        result = integrity.repair(cfg, result)
        if not result.findings:
            print(f"repaired; verified {result.summary()}. Now rerun your snakemake command: scoring and the "
                  "tables of the repaired systems rerun")
            return EXIT_OK
    if result.findings:
        n = len(result.findings)
        print(f"error: {n} problem{'s' if n > 1 else ''} in {cfg['results_dir']} (checked {result.summary()}):",
              file=sys.stderr)
        print("\n".join(integrity.render_findings(result.findings)), file=sys.stderr)
        if not args.repair:
            print("Regenerate exactly the damaged images and move stale score files aside: python -m harness verify "
                  "--repair (with the same --config / --config-snapshot)", file=sys.stderr)
        return EXIT_USAGE
    print(f"results OK: {result.summary()} under {cfg['results_dir']}")
    return EXIT_OK


def cmd_train(args) -> None:
    from harness.training.rounds import run_train

    cfg = _config(args)
    _threads(args.threads)
    m = run_train(cfg, args.stage, out=args.out, init=args.init, train_steps=args.train_steps)
    print(f"train {args.stage}: {m['steps']} steps, loss {m['loss_first']:.4g} -> {m['loss_last']:.4g}, "
          f"{m['job_wall_s']:.1f} s -> {m['output']} (SAT checkpoint folder; metrics.json)")


def cmd_distill(args) -> None:
    from harness.training.rounds import run_round

    cfg = _config(args)
    _threads(args.threads)
    images = None
    if cfg["distillation"]["images"] == "world":  # the micro world's training stream
        from harness.micro.train import distillation_images

        images = distillation_images(cfg, args.stage)
    m = run_round(cfg, args.stage, args.steps, out=args.out, teacher=args.teacher, teacher_steps=args.teacher_steps,
                  train_steps=args.train_steps, images=images)
    r = m["round"]
    print(f"distill {args.stage} {r['teacher_steps']} -> {r['student_steps']} steps: {m['steps']} training steps, "
          f"loss {m['loss_first']:.4g} -> {m['loss_last']:.4g}, {m['job_wall_s']:.1f} s -> {m['output']} "
          f"(SAT checkpoint folder with w_proj; load it as `weights:` with distilled: true)")


def cmd_micro_train(args) -> None:
    from harness.micro import train

    cfg = _config(args)
    _threads(args.threads)
    micro = cfg.get("micro")
    if not micro:
        raise HarnessError("micro-train: this config has no micro world (config key 'micro'); see config/micro.yaml")
    if args.model == micro["text_encoder"]["key"]:
        m = train.train_text_encoder(cfg)
        print(f"micro text encoder -> {m['output']} (word-level T5, frozen random weights, seed {m['seed']})")
    elif args.model == micro["vae"]["key"]:
        m = train.train_vae(cfg)
        print(f"micro VAE: {m['steps']} steps, loss {m['loss_first']:.4g} -> {m['loss_last']:.4g}, latent scale "
              f"{m['latent_scale']:.4f}, {m['train_wall_s']:.1f} s -> {m['output']}")
    else:
        m = train.train_model(cfg, args.model)
        print(f"micro {args.model} ({m['stage']}): {m['steps']} steps, loss {m['loss_first']:.4g} -> "
              f"{m['loss_last']:.4g}, {m['job_wall_s']:.1f} s -> {m['output']}")


def cmd_micro_gate(args) -> int:
    from harness.io import atomic_write_text
    from harness.micro.gate import VARIANTS, relay_chain, render, run_variants
    from harness.render import banner

    cfg = _config(args)
    names = args.variant or list(VARIANTS)
    results = list(run_variants(cfg, names, Path(args.out)).values())
    for r in results:
        name = r.variant.name
        print(f"{name}: {'breach' if r.breached else 'pass'} ({len(r.breached)} of {len(r.results)} checks breached; "
              f"expected {'a breach' if r.variant.harmful else 'a pass'})", flush=True)
    text = "\n".join([banner(cfg), "", "# The micro gate against known bugs and harmless changes", "",
                      f"Thresholds: `{cfg['thresholds']}`; a base-stage variant regenerates cogview3-base and cogview3, "
                      f"a relay or harmless one {' and '.join(relay_chain(cfg))} (harness/micro/gate.py).", "", render(results), ""])
    if args.report:
        atomic_write_text(args.report, text)
    print(text)
    wrong = [r.variant.name for r in results if not r.as_expected]
    if wrong:
        print(f"error: the gate did not tell these apart: {', '.join(wrong)}", file=sys.stderr)
        return EXIT_BREACH
    return EXIT_OK


def cmd_micro_grid(args) -> None:
    from harness.micro.grid import contact_sheet
    from harness.systems import final_systems

    cfg = _config(args)
    systems = args.system or final_systems(cfg)
    out = contact_sheet(cfg, systems, args.out, per_category=args.per_category)
    print(f"wrote {out} ({', '.join(systems)})")


def cmd_distill_generate(args) -> None:
    from harness.runner import run_generation
    from harness.training.rounds import student_config

    cfg = student_config(_config(args))
    _threads(args.threads)
    if args.system not in cfg["systems"]:
        raise HarnessError(f"--system {args.system!r}: not a student of this config's distillation schedules; the "
                           f"students are {', '.join(cfg['systems'])}")
    summary = run_generation(cfg, args.benchmark, args.system)
    print(f"{args.benchmark}/{args.system}: {summary.generated} generated, {summary.kept} kept -> {summary.manifest}")


def cmd_distill_report(args) -> None:
    from harness.training.report import write_distill_report

    out = write_distill_report(_config(args), args.out)
    print(f"wrote {out}")


def cmd_fixtures(args) -> None:
    from harness.fixtures import write_fixtures

    write_fixtures(Path(args.out), Path(args.data_dir) if args.data_dir else None)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="config/config.yaml", help="config YAML (default: %(default)s)")
    common.add_argument("--config-snapshot", help="validated config JSON written by the Snakefile")
    common.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    from harness import __version__
    from harness.prompts import BENCHMARKS
    from harness.scorers.registry import SCORERS

    # Not argparse choices: custom prompt sets (config `prompt_sets`) exist only once the config is read.
    benchmark_help = f"a prompt set: {', '.join(BENCHMARKS)}, or a name under the config's prompt_sets"
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"cogview3-harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)  # every command takes the options

    g = sub.add_parser("generate", help="generate (or resume) images for one benchmark and system")
    g.add_argument("--benchmark", required=True, help=benchmark_help)
    g.add_argument("--system", required=True)
    g.add_argument("--shard", type=int, default=0)
    g.add_argument("--shards", type=int, default=1)
    g.set_defaults(func=cmd_generate)

    m = sub.add_parser("merge", help="merge shard manifests")
    m.add_argument("--out", required=True)
    m.add_argument("inputs", nargs="+")
    m.set_defaults(func=cmd_merge)

    s = sub.add_parser("score", help="score systems' images on one benchmark with one metric")
    s.add_argument("--benchmark", required=True, help=benchmark_help)
    s.add_argument("--systems", nargs="+", required=True)
    s.add_argument("--metric", required=True, choices=list(SCORERS))
    s.set_defaults(func=cmd_score)

    for name, what in (("table1", "Table 1 (DrawBench, PartiPrompts)"), ("table2", "Table 2 (COCO-5k)"),
                       ("table3", "Table 3 (the T_r sweep)"), ("ablation-expansion", "the prompt-expansion ablation")):
        t = sub.add_parser(name, help=f"write {what} with its CSV/LaTeX/plot companions")
        t.add_argument("--out", required=True)
        t.set_defaults(func=cmd_table)

    g = sub.add_parser("gallery", help="the static image gallery (prompts x systems, T_r strip, expansion view) and "
                       "the tables' contact sheets")
    g.add_argument("--out", required=True, help="its index.html")
    g.set_defaults(func=cmd_gallery)

    a = sub.add_parser("metrics-agreement", help="Kendall's tau between every pair of the config's metrics, "
                       "per benchmark, over systems and over images")
    a.add_argument("--out", required=True)
    a.set_defaults(func=cmd_metrics_agreement)

    e = sub.add_parser("expand", help="expand a benchmark's prompts (cached) for systems with expand: true")
    e.add_argument("--benchmark", required=True, help=benchmark_help)
    e.set_defaults(func=cmd_expand)

    r = sub.add_parser("regression", help="the regression gate: exit 1 when a threshold is breached")
    r.add_argument("--out", default="reports/regression.md")
    r.add_argument("--update-golden", action="store_true", help="store the current values as the golden first")
    r.set_defaults(func=cmd_regression)

    c = sub.add_parser("timecost", help="time every system on one batch (the paper's protocol)")
    c.add_argument("--out", required=True)
    c.add_argument("--batch", type=int, default=4)
    c.add_argument("--warmup", type=int, default=1)
    c.add_argument("--repeats", type=int, default=3)
    c.set_defaults(func=cmd_timecost)

    sp = sub.add_parser("scorer-speed", help="time our batched scorers against the reference per-image APIs")
    sp.add_argument("--out", required=True)
    sp.add_argument("--metrics", nargs="+", default=None, choices=list(SCORERS),
                    help="default: every metric with a reference to compare with")
    sp.add_argument("--images", type=int, default=16)
    sp.add_argument("--image-size", type=int, default=512)
    sp.add_argument("--batch-size", type=int, default=16)
    sp.add_argument("--scale", choices=["full", "small"], default="full",
                    help="random-weight architecture where the config has no real weights (default: %(default)s)")
    sp.add_argument("--device", default="cpu")
    sp.set_defaults(func=cmd_scorer_speed)

    he = sub.add_parser("humaneval-export", help="blinded A/B sheets, annotation pages and the hidden key")
    he.add_argument("--out", required=True, help="export folder handed to annotators")
    he.add_argument("--key", required=True, help="key file (keep it from annotators)")
    he.set_defaults(func=cmd_humaneval_export)

    hs = sub.add_parser("humaneval-simulate", help="fill the sheets with synthetic annotators (pipeline checks)")
    hs.add_argument("--key", required=True)
    hs.add_argument("--out-dir", required=True)
    hs.add_argument("--consistency", type=float, default=0.6)
    hs.add_argument("--careless", nargs="*", default=[], help="sheets answered at random")
    hs.add_argument("--seed", type=int, default=0)
    hs.set_defaults(func=cmd_humaneval_simulate)

    hi = sub.add_parser("humaneval-import", help="validate filled sheets, unblind, win rates and agreement")
    hi.add_argument("--key", required=True)
    hi.add_argument("--out", required=True)
    hi.add_argument("sheets", nargs="*", help="filled sheets (default: every CSV in humaneval.annotations_dir)")
    hi.set_defaults(func=cmd_humaneval_import)

    v = sub.add_parser("validate", help="validate the config and check that every weights and prompt file is in place")
    v.set_defaults(func=cmd_validate)

    pf = sub.add_parser("preflight", help="every missing weights/data file at once, sha256 vs pinned values, and the plan")
    pf.add_argument("--no-hash", action="store_true", help="skip hashing the weight files (first hash of a file is slow)")
    pf.set_defaults(func=cmd_preflight)

    vf = sub.add_parser("verify", help="check every image against its sha256 and every score file against its "
                        "manifest; --repair regenerates exactly the damaged images")
    vf.add_argument("--repair", action="store_true", help="move damaged images and stale score files to "
                    "<results>/.harness/quarantine/ and regenerate the images")
    vf.set_defaults(func=cmd_verify)

    ps = sub.add_parser("preload-server", help="import torch/diffusers/transformers once and fork a child per "
                        "generate/score command (the Snakefile starts it for local runs)")
    ps.add_argument("--socket", required=True, help="Unix socket path; jobs find it in $HARNESS_PRELOAD_SOCKET")
    ps.set_defaults(func=cmd_preload_server)

    es = sub.add_parser("estimate", help="estimated GPU-hours and wall time of each paper table on 1 and N GPUs "
                        "(from the paper's time costs)")
    es.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="GPU counts (default: %(default)s)")
    es.set_defaults(func=cmd_estimate)

    gp = sub.add_parser("gpus", help="the node's GPU ids and which job holds each (the pool of local runs)")
    gp.set_defaults(func=cmd_gpus)

    stages = ("base", "relay")
    tr = sub.add_parser("train", help="train a CogView3 stage on its own loss from data (relay: eq. 6; base: the "
                        "eps loss), exported as a SAT checkpoint folder")
    tr.add_argument("--stage", required=True, choices=stages)
    tr.add_argument("--train-steps", type=int, default=None,
                    help="optimizer steps (default: the config's distillation.steps_per_round)")
    tr.add_argument("--out", default=None, help="output folder (default: <results_dir>/train/<stage>)")
    tr.add_argument("--init", default=None, help="weights to start from: a SAT folder or tiny (default: the stage "
                    "system's weights entry)")
    tr.set_defaults(func=cmd_train)

    ds = sub.add_parser("distill", help="one round of progressive distillation: the teacher (the configured system, "
                        "or the previous round's output) -> a student with about half the steps (resumable)")
    ds.add_argument("--stage", required=True, choices=stages)
    ds.add_argument("--steps", type=int, required=True, help="the student's sampling steps (a later entry of the "
                    "config's distillation.<stage> schedule)")
    ds.add_argument("--teacher", default=None, help="the teacher's weights instead of the schedule's: a SAT folder "
                    "(a distilled checkpoint) or the stage system's own entry")
    ds.add_argument("--teacher-steps", type=int, default=None, help="the teacher's sampling steps (with --teacher)")
    ds.add_argument("--train-steps", type=int, default=None,
                    help="optimizer steps (default: the config's distillation.steps_per_round)")
    ds.add_argument("--out", default=None, help="output folder (default: <results_dir>/distill/<stage>/<steps>-step)")
    ds.set_defaults(func=cmd_distill)

    mt = sub.add_parser("micro-train", help="train one model of the micro world (config key micro): its text "
                        "encoder, its VAE or a diffusion model, written in its upstream layout (resumable)")
    mt.add_argument("--model", required=True, help="a weights key the config's micro section trains")
    mt.set_defaults(func=cmd_micro_train)

    mg = sub.add_parser("micro-gate", help="the micro world's gate against known bugs (each must breach it) and "
                        "harmless changes (each must pass): regenerates the base and relay chain per variant")
    mg.add_argument("--variant", action="append", default=None, help="a variant of harness.micro.gate.VARIANTS "
                    "(repeatable; default: all)")
    mg.add_argument("--out", default="results-micro-gate", help="where the variants' results go (default: %(default)s)")
    mg.add_argument("--report", default=None, help="also write the table to this Markdown file")
    mg.set_defaults(func=cmd_micro_gate)

    mgr = sub.add_parser("micro-grid", help="an image grid of the micro world (a prompt per category x systems, "
                         "beside the ground-truth render, with the judge's score under each image)")
    mgr.add_argument("--out", required=True, help="PNG file to write")
    mgr.add_argument("--system", action="append", default=None, help="a system (repeatable; default: the table rows)")
    mgr.add_argument("--per-category", type=int, default=1)
    mgr.set_defaults(func=cmd_micro_grid)

    dg = sub.add_parser("distill-generate", help="generate with a distilled student (the final rounds of the "
                        "schedules) into <results_dir>/distill/samples/")
    dg.add_argument("--benchmark", required=True, help=benchmark_help)
    dg.add_argument("--system", required=True, help="student-base-<n>step or student-<n>+<m>")
    dg.set_defaults(func=cmd_distill_generate)

    dr = sub.add_parser("distill-report", help="the distillation rounds (losses, timings) and the students' images")
    dr.add_argument("--out", required=True)
    dr.set_defaults(func=cmd_distill_report)

    fx = sub.add_parser("fixtures", help="tiny random-weight checkpoints in the upstream layouts + DIR/paper-tiny.yaml")
    fx.add_argument("--out", required=True, help="folder to write weights/, data/ and paper-tiny.yaml into")
    fx.add_argument("--data-dir", help="folder holding the prompt files (default: data_dir of config/paper.yaml)")
    fx.set_defaults(func=cmd_fixtures)
    return p


def cmd_estimate(args) -> int:
    from harness.resources import PAPER_DENOISER_FLOPS_PER_S, PAPER_OVERHEAD_S, wall_time_table

    if any(g < 1 for g in args.gpus):
        raise HarnessError(f"--gpus: {args.gpus}: every GPU count must be at least 1")
    print(wall_time_table(_config(args), args.gpus))
    print(f"\nEstimates, not measurements: A100s, the paper's batch 4; seconds per image = {PAPER_OVERHEAD_S} s + "
          f"denoiser FLOPs / {PAPER_DENOISER_FLOPS_PER_S / 1e12:.1f} TFLOP/s (fitted to the paper's time costs), "
          "plus model loading per job; scoring included. Images: every stage's (a relay's base images too).")
    return EXIT_OK


def cmd_gpus(args) -> int:
    import datetime

    from harness.gpus import lock_dir, pool_status, visible_gpus

    ids = visible_gpus()
    folder = lock_dir()
    if not ids:
        print("no GPU visible (HARNESS_GPU_IDS, CUDA_VISIBLE_DEVICES and nvidia-smi name none): jobs run on the CPU")
        return EXIT_OK
    print(f"{len(ids)} GPU(s); locks in {folder}")
    for row in pool_status(ids, folder):
        holder = row["holder"] or {}
        since = datetime.datetime.fromtimestamp(holder["since"]).isoformat(timespec="seconds") if holder.get("since") else "?"
        print(f"  GPU {row['gpu']}: " + (f"held by pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {since}"
                                         if row["held"] else "free"))
    return EXIT_OK


def cmd_preload_server(args) -> None:
    from harness.preload import serve

    serve(args.socket)


def main(argv: list[str] | None = None) -> int:
    from harness.preload import run_in_server

    argv = sys.argv[1:] if argv is None else argv
    from harness.gpus import job_gpu, wants_pool

    if wants_pool():  # a job of a local run whose rule declared a GPU: it takes one (harness/gpus.py)
        try:
            with job_gpu(log=lambda line: print(line, file=sys.stderr, flush=True)) as lease:
                if lease is not None:
                    # In this process, not the preload server's child: the server imported torch, and
                    # CUDA_VISIBLE_DEVICES must be set before torch is imported.
                    return _run(argv)
        except HarnessError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USAGE
    forked = run_in_server(argv)  # a preload server is running (local Snakemake run): the job runs there
    if forked is not None:
        return forked
    return _run(argv)


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 (argparse)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or EXIT_OK
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # not the user's input: keep the traceback, and never look like a breach (1)
        import traceback

        traceback.print_exc()
        print(f"crash: `python -m harness {args.command}` failed unexpectedly (exit {EXIT_CRASH}); "
              "the traceback above says where", file=sys.stderr)
        return EXIT_CRASH
