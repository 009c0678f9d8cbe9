"""Pre-training throughput and peak memory of PLIP under the Lightning engine
(``TrainingTask`` + ``build_trainer``, as ``personvl pretrain`` runs it) against a bare PyTorch
loop doing the same forward, backward, clipping, optimiser and schedule steps on the same
batches, in the same run, with the same choice of deterministic algorithms.

Run: python benchmarks/pretrain_throughput.py [--models plip_tiny,plip_rn50] [--threads 1]
         [--tiny-batch 16] [--tiny-steps 20] [--rn50-batch 4] [--rn50-steps 2] [--warmup 2]
         [--rounds 1]
     python benchmarks/pretrain_throughput.py --gather [--tiny-batch 16] [--tiny-steps 20] [--rounds 1]
Defaults take about three minutes on a two-core CPU; raise the steps and rounds for steadier
figures. Each (model, runner) pair runs in its own child process, so that its peak resident
memory (ru_maxrss) is its own; with several rounds the runners alternate order and the best
round of each is reported. The batches are made in memory from a seed (random images at the
model's input size, captions from a few templates, two images per identity), so data loading
is left out of both sides: the ratio is the engine's own cost. plip_rn50 has no tokenizer on an
offline machine: it gets a BERT-sized vocabulary (the tiny vocabulary padded to 30,522 entries),
so its attribute-prediction head has the published size.

``--gather`` measures what contrasting the global batch costs under DDP: two CPU processes
(gloo, one thread each) train the plip_tiny recipe's method wrapped in DistributedDataParallel,
``--tiny-batch`` images per rank, once with the contrastive loss gathering both ranks' features
and identities (the default) and once on each rank's local batch, alternating, in the same run;
then the contrastive loss alone (forward and backward) at larger per-rank batches and a
512-wide embedding, with and without the gather.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = {"plip_tiny": "configs/pretrain/plip_tiny.yaml", "plip_rn50": "configs/pretrain/plip_rn50.yaml"}
BERT_VOCAB_SIZE = 30522
CAPTIONS = ["a woman in a red coat with a black backpack", "a man wearing a blue shirt and grey trousers",
            "the person has long hair and carries a white bag", "a young man in black shoes and a green jacket"]


def bert_sized_vocab(folder: Path) -> Path:
    from personvl.models.tokenization import tiny_vocab_path

    words = tiny_vocab_path().read_text(encoding="utf-8").splitlines()
    words += [f"[unused{k}]" for k in range(BERT_VOCAB_SIZE - len(words))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return folder


def make_batches(encoder, batch_size: int, count: int, seed: int = 0) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    height, width = encoder.config.preprocess.input_size
    batches = []
    for index in range(count):
        captions = [CAPTIONS[(index + k) % len(CAPTIONS)] for k in range(batch_size)]
        tokens = encoder.tokenizer(captions)
        batches.append({"image": torch.randn(batch_size, 3, height, width, generator=generator),
                        "pid": torch.arange(batch_size) // 2,
                        "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask})
    return batches


def child(runner: str, model: str, batch_size: int, steps: int, warmup: int, threads: int, work: Path) -> dict:
    """One runner on one model; returns samples/s over the timed steps and the peak RSS."""
    import resource

    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from personvl.methods.registry import build_method
    from personvl.models import create_model
    from personvl.training.optim import build_optimizer, warmup_cosine
    from personvl.training.pretrain import load_pretrain_config
    from personvl.training.task import TrainingTask
    from personvl.training.trainer import TrainerConfig, build_trainer

    torch.set_num_threads(threads)
    config = load_pretrain_config(RECIPES[model])
    tokenizer = str(bert_sized_vocab(work / "vocab")) if model == "plip_rn50" else config.model.tokenizer
    pl.seed_everything(0, verbose=False)
    encoder = create_model(config.model.name, tokenizer=tokenizer).train()
    method = build_method("plip", encoder, config.plip)
    total = warmup + steps
    batches = make_batches(encoder, batch_size, total)
    clip = config.trainer.gradient_clip_val

    if runner == "bare":
        # The same kernels as the engine, which runs with deterministic algorithms by default
        # (trainer.deterministic): the ratio is then the engine's own cost, not a kernel choice.
        torch.use_deterministic_algorithms(config.trainer.deterministic)
        optimizer = build_optimizer(method.parameter_groups(), config.optim)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, total, config.optim.warmup_steps, config.optim.min_lr_ratio))
        for step, batch in enumerate(batches):
            if step == warmup:
                started = time.perf_counter()
            losses = method(batch, progress=step / total, step=step)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(method.parameters(), clip)
            optimizer.step()
            schedule.step()
        seconds = time.perf_counter() - started
    else:
        marks: dict[str, float] = {}

        class Clock(pl.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == warmup:
                    marks["start"] = time.perf_counter()
                marks["end"] = time.perf_counter()

        task = TrainingTask(method, config.optim, total, seed=0)
        # The recipe's trainer settings that change the work (clipping, logging cadence) on one
        # CPU process in float32; checkpoints only after the timed steps.
        trainer = build_trainer(TrainerConfig(max_steps=total, accelerator="cpu", precision="32-true",
                                              deterministic=config.trainer.deterministic,
                                              gradient_clip_val=clip, checkpoint_every_n_steps=10 ** 9,
                                              log_every_n_steps=config.trainer.log_every_n_steps,
                                              progress_bar=False), work / "run")
        trainer.callbacks.append(Clock())
        trainer.fit(task, DataLoader(batches, batch_size=None))
        seconds = marks["end"] - marks["start"]
    return {"samples_per_s": steps * batch_size / seconds, "seconds": seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def gather_rank(rank: int, port: int, batch_size: int, steps: int, warmup: int, rounds: int, threads: int,
                out: str) -> None:
    """One of two gloo ranks: PLIP steps and the loss alone, with and without the gather."""
    import lightning.pytorch as pl
    import torch
    import torch.distributed as dist

    import personvl.objectives.distributed as distributed
    from personvl.methods.registry import build_method
    from personvl.models import open_model
    from personvl.objectives import infonce_loss
    from personvl.training.optim import build_optimizer
    from personvl.training.pretrain import load_pretrain_config

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    gathering = distributed.gathers_across_ranks

    def local_only(enabled: bool = True) -> bool:
        return False

    def timed(step, count: int) -> float:
        dist.barrier()
        started = time.perf_counter()
        for _ in range(count):
            step()
        dist.barrier()
        return (time.perf_counter() - started) / count

    config = load_pretrain_config(RECIPES["plip_tiny"])
    pl.seed_everything(0, verbose=False)
    encoder = open_model(config.model.name, tokenizer=config.model.tokenizer, **config.model.options).train()
    method = torch.nn.parallel.DistributedDataParallel(build_method("plip", encoder, config.plip),
                                                       find_unused_parameters=True)
    optimizer = build_optimizer(method.module.parameter_groups(), config.optim)
    # Identities 2k and 2k + 1 on rank 0 and 2k + batch and so on on rank 1: distinct across ranks.
    batches = make_batches(encoder, batch_size, warmup + steps, seed=rank)
    for batch in batches:
        batch["pid"] = batch["pid"] + rank * batch_size
    position = iter(range(10 ** 9))

    def train_step() -> None:
        index = next(position)
        batch = batches[index % len(batches)]
        losses = method(batch, progress=0.0, step=index)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    results: dict[str, list[float]] = {}
    for round_ in range(rounds):
        for mode in (("gather", "local") if round_ % 2 == 0 else ("local", "gather")):
            distributed.gathers_across_ranks = gathering if mode == "gather" else local_only
            timed(train_step, warmup)
            results.setdefault(f"step {mode}", []).append(timed(train_step, steps))
    for per_rank in (64, 256):
        generator = torch.Generator().manual_seed(rank)
        image = torch.randn(per_rank, 512, generator=generator, requires_grad=True)
        text = torch.randn(per_rank, 512, generator=generator, requires_grad=True)
        pids = torch.arange(per_rank) // 2 + rank * per_rank

        def loss_step() -> None:
            infonce_loss(image, text, 20.0, pids).backward()

        for mode in ("gather", "local", "gather", "local"):
            distributed.gathers_across_ranks = gathering if mode == "gather" else local_only
            timed(loss_step, 3)
            results.setdefault(f"loss {per_rank} {mode}", []).append(timed(loss_step, 30))
    distributed.gathers_across_ranks = gathering
    if rank == 0:
        Path(out).write_text(json.dumps({key: min(values) for key, values in results.items()}))
    dist.destroy_process_group()


def measure_gather(args) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as work:
        out = str(Path(work) / "gather.json")
        mp.spawn(gather_rank, args=(port, args.tiny_batch, args.tiny_steps, args.warmup, args.rounds, args.threads, out),
                 nprocs=2, join=True)
        best = json.loads(Path(out).read_text())
    batch = args.tiny_batch
    print(f"2 gloo ranks x {args.threads} thread(s); plip_tiny, {batch} images per rank (global batch {2 * batch}), "
          f"{args.tiny_steps} timed steps, best of {args.rounds} round(s), modes alternating")
    print(f"PLIP step, contrast over the global batch {best['step gather'] * 1000:8.1f} ms | over each rank's own "
          f"{best['step local'] * 1000:8.1f} ms | ratio {best['step gather'] / best['step local']:.3f}")
    for per_rank in (64, 256):
        gather, local = best[f"loss {per_rank} gather"], best[f"loss {per_rank} local"]
        print(f"InfoNCE alone, {per_rank:3d} x 512 per rank: global {gather * 1000:7.2f} ms | local "
              f"{local * 1000:7.2f} ms | ratio {gather / local:.2f}")


def run_child(runner: str, model: str, batch_size: int, steps: int, args) -> dict:
    command = [sys.executable, __file__, "--child", runner, model, str(batch_size), str(steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if done.returncode != 0:
        raise SystemExit(f"{runner} {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="plip_tiny,plip_rn50")
    parser.add_argument("--tiny-batch", type=int, default=16)
    parser.add_argument("--tiny-steps", type=int, default=20)
    parser.add_argument("--rn50-batch", type=int, default=4)
    parser.add_argument("--rn50-steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocations, Lightning setup)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each child")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--gather", action="store_true",
                        help="the cost of contrasting the global batch: two DDP ranks, with and without the gather")
    parser.add_argument("--child", nargs=4, metavar=("RUNNER", "MODEL", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parent.parent)   # the recipes' paths are relative to the repository

    if args.child:
        runner, model, batch_size, steps = args.child
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(child(runner, model, int(batch_size), int(steps), args.warmup, args.threads, Path(work))))
        return

    import torch

    if args.gather:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
              f"torch {torch.__version__}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        measure_gather(args)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} thread(s) per run, "
          f"Python {platform.python_version()}, torch {torch.__version__}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{args.warmup} untimed steps, then the timed ones; best of {args.rounds} round(s), runners alternating")
    for model in args.models.split(","):
        batch_size, steps = (args.tiny_batch, args.tiny_steps) if model == "plip_tiny" else (args.rn50_batch, args.rn50_steps)
        best: dict[str, dict] = {}
        for round_ in range(args.rounds):
            for runner in (("engine", "bare") if round_ % 2 == 0 else ("bare", "engine")):
                result = run_child(runner, model, batch_size, steps, args)
                if runner not in best or result["samples_per_s"] > best[runner]["samples_per_s"]:
                    best[runner] = result
        engine, bare = best["engine"], best["bare"]
        print(f"{model:10s} batch {batch_size:2d} x {steps:2d} timed steps | "
              f"Lightning engine {engine['samples_per_s']:7.2f} samples/s, peak RSS {engine['peak_rss_mib']:6.0f} MiB | "
              f"bare loop {bare['samples_per_s']:7.2f} samples/s, peak RSS {bare['peak_rss_mib']:6.0f} MiB | "
              f"engine/bare time ratio {bare['samples_per_s'] / engine['samples_per_s']:.3f}")


if __name__ == "__main__":
    main()
