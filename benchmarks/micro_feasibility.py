"""The micro world end to end by hand, before its DAG exists: how good its models get on this machine, and
at what cost.

    python benchmarks/micro_feasibility.py [--out /tmp/micro] [--vae-steps 1500] [--base-steps 1000]
        [--relay-steps 400] [--examples 8000] [--relay-examples 4000] [--prompts 56] [--guidance 5]

It writes the world's T5 and VAE (``harness.micro.models``), trains a CogView3 base at 64 px and a relay to
128 px from fresh UNets through ``harness.training.rounds.run_train`` on world images, generates the
evaluation prompts (every 4th of micro-drawbench by default) through the real ``cogview3-base`` and
``cogview3-relay`` systems, and prints the judge's scores with the wall time of every step:

- the VAE's reconstructions of ground-truth renders at 64 and 128 px (the ceiling the VAE allows);
- the untrained base (its random initial weights: the floor), base at 64 px, the same images x2 bilinear, and
  base + relay at 128 px (the relay's value over upscaling).

Everything is cached under ``--out``: a rerun resumes the training runs and skips finished steps (a finished
model is kept whatever the flags say now: give another ``--out`` for other settings). The numbers
describe the micro world only; with 56 prompts they are a first look, not a table (no CIs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent


def micro_config(out: Path, args) -> dict:
    """The smoke config with the world's T5 and VAE, a 64 px base and a relay on it, and the training settings."""
    import yaml

    from harness.config import validate_config

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(results_dir=str(out / "results"), reports_dir=str(out / "reports"), benchmarks=["micro-drawbench"],
               metrics=["micro_judge", "micro_exact"])
    cfg["weights"].update({"t5": str(out / "t5"), "sdxl-vae": str(out / "vae" / "vae"),
                           "cogview3-base": str(out / "base"), "cogview3-relay": str(out / "relay")})
    cfg["systems"] = {
        "cogview3-base": {"model": "cogview3-base", "steps": 50, "guidance": args.guidance, "resolution": 64,
                          "text_encoder": "t5", "vae": "sdxl-vae"},
        "cogview3": {"model": "cogview3-relay", "input": "cogview3-base", "weights": "cogview3-relay", "t_r": 500,
                     "steps": 10, "text_encoder": "t5", "vae": "sdxl-vae"},
    }
    cfg["humaneval"] = {"benchmark": "micro-drawbench", "comparisons": [["cogview3", "cogview3-base"]]}
    cfg["expansion"] = {"systems": []}
    cfg["distillation"] = {"benchmark": "micro-drawbench", "batch_size": 32, "grad_accum": 1, "lr": 1e-3,
                           "warmup_steps": 20, "ema_decay": 0.995, "checkpoint_every": 100, "text_dropout": 0.1}
    cfg["tr_sweep"] = []
    return validate_config(cfg)


def judged(images, captions) -> str:
    from harness.micro.judge import judge

    verdicts = [judge(im, c) for im, c in zip(images, captions)]
    return f"judge {mean(v.score for v in verdicts):.3f}, exact {mean(v.exact for v in verdicts):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/micro"))
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--base-steps", type=int, default=1000)
    parser.add_argument("--relay-steps", type=int, default=400)
    parser.add_argument("--examples", type=int, default=8000, help="base training images (64 px)")
    parser.add_argument("--relay-examples", type=int, default=4000, help="relay training images (128 px)")
    parser.add_argument("--prompts", type=int, default=56, help="evaluation prompts, spread over micro-drawbench")
    parser.add_argument("--guidance", type=float, default=5.0)
    args = parser.parse_args()

    import torch
    from PIL import Image

    from harness.micro import models
    from harness.micro.world import evaluation_prompts, evaluation_scene, render
    from harness.training.data import pixels
    from harness.training.loop import LoopSettings
    from harness.training.rounds import build_stage_system, run_train

    torch.set_num_threads(2)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()

    def step(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        print(f"{what}: {now - clock:.1f} s", flush=True)
        clock = now

    if not (out / "t5" / "tokenizer").is_dir():
        models.write_text_encoder(out / "t5")
    step("text encoder")
    if not (out / "vae" / "vae").is_dir():
        about = models.train_autoencoder(out / "vae", 64, LoopSettings(
            steps=args.vae_steps, batch_size=16, lr=2e-3, ema_decay=0.995, warmup_steps=50, checkpoint_every=250,
            log_every=50), crop=32, progress=False)
        losses = about["losses"]
        print(f"VAE: loss {mean(losses[:10]):.3f} (first 10 steps) -> {mean(losses[-50:]):.3f} (last 50), "
              f"latent scale {about['latent_scale']:.3f}")
    step(f"VAE ({args.vae_steps} steps of 16 x 32 px crops)")

    rows = evaluation_prompts()[:: max(1, len(evaluation_prompts()) // args.prompts)][: args.prompts]
    captions = [text for _, text, _ in rows]
    from models.cogview3.checkpoint import load_sdxl_vae

    vae = load_sdxl_vae(out / "vae" / "vae", torch.float32).eval()
    for size in (64, 128):
        with torch.no_grad():
            x = pixels([render(evaluation_scene(c, 0), size) for c in captions])
            recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        images = [Image.fromarray(((r.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()) for r in recon]
        print(f"VAE reconstructions of ground-truth renders at {size} px: {judged(images, captions)}")
    step("VAE check")

    cfg = micro_config(out, args)
    for stage, steps, examples, size, seed in (("base", args.base_steps, args.examples, 64, 0),
                                               ("relay", args.relay_steps, args.relay_examples, 128, 1)):
        if not (out / stage / "latest").is_file():
            init = models.write_initial_unet(out / f"{stage}-init", seed=seed, text_dim=64)
            metrics = run_train(cfg, stage, out=out / stage, init=str(init), train_steps=steps,
                                images=models.world_images(examples, size), progress=False)
            print(f"{stage}: loss {metrics['loss_first']:.3f} -> {metrics['loss_last']:.3f}, "
                  f"setup (encoding) {metrics['setup_wall_s']:.1f} s, loop {metrics['loop_wall_s']:.1f} s")
        step(f"{stage} ({steps} steps x 32 on {examples} images at {size} px)")

    base = build_stage_system(cfg, "base", str(out / "base"), False, 50, "cogview3-base").build()
    relay = build_stage_system(cfg, "relay", str(out / "relay"), False, 10, "cogview3-relay").build()
    untrained = build_stage_system(cfg, "base", str(out / "base-init"), False, 50, "untrained-base").build()
    base_images, relay_images, floor_images = [], [], []
    for i in range(0, len(captions), 8):
        chunk, seeds = captions[i:i + 8], list(range(i, i + len(captions[i:i + 8])))
        made = base.generate(chunk, seeds)
        base_images += made
        relay_images += relay.generate(chunk, seeds, inputs=made)
        floor_images += untrained.generate(chunk, seeds)
    step(f"generate {len(captions)} prompts (base 50 steps, CFG {args.guidance}; relay 10 steps from T_r 500; "
         "the untrained base)")
    print(f"untrained base (its random initial weights) at 64 px: {judged(floor_images, captions)}")
    print(f"base at 64 px: {judged(base_images, captions)}")
    print(f"base x2 bilinear: {judged([im.resize((128, 128), Image.BILINEAR) for im in base_images], captions)}")
    print(f"base + relay at 128 px: {judged(relay_images, captions)}")


if __name__ == "__main__":
    main()
