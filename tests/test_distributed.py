"""Two CPU processes (gloo) against one: the contrastive losses see the global batch with the
single-process gradient, the MoCo queue holds every rank's keys, and a non-finite step on one
rank is skipped by all."""

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from personvl.objectives import FeatureQueue, cmpm_loss, infonce_loss, sdm_loss

WORLD = 2
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, port, work, out, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.save(work(rank, *args), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_on_two_ranks(work, tmp_path, *args):
    """``work(rank, *args)`` in two gloo processes; returns what each rank returned."""
    context = mp.spawn(_entry, args=(_free_port(), work, str(tmp_path), args), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two ranks did not finish within {TIMEOUT_S} s")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# Global batch of 8, 4 per rank. Identities repeat within and across ranks (identity 0 and 1 on
# both), with up to three positives per row.
PIDS = torch.tensor([0, 0, 1, 2, 1, 3, 3, 0])


class Towers(nn.Module):
    """Two projections and a learned temperature, standing for an image and a text encoder."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(5, 6)
        self.text = nn.Linear(5, 6)
        self.logit_scale = nn.Parameter(torch.tensor(2.5))    # a scale of about 12, not 1

    def forward(self, images, texts):
        return self.image(images), self.text(texts), self.logit_scale.exp()


def global_inputs():
    g = torch.Generator().manual_seed(1)
    # Rows of very different norms: CMPM must normalise only the projected-on side.
    scales = torch.tensor([0.3, 1.0, 4.0, 0.7, 2.5, 0.5, 1.5, 3.0]).view(-1, 1)
    return torch.randn(8, 5, generator=g) * scales, torch.randn(8, 5, generator=g) * scales.flip(0)


LOSSES = {
    "cmpm": lambda i, t, s, p: cmpm_loss(i, t, p),
    "infonce_pids": lambda i, t, s, p: infonce_loss(i, t, s, p),
    "infonce": lambda i, t, s, p: infonce_loss(i, t, s),
    "sdm": lambda i, t, s, p: sdm_loss(i, t, p, logit_scale=s),
}


def _losses_on_rank(rank):
    towers = nn.parallel.DistributedDataParallel(Towers(), find_unused_parameters=True)
    images, texts = global_inputs()
    local = slice(4 * rank, 4 * rank + 4)
    results = {}
    for name, loss_fn in LOSSES.items():
        towers.zero_grad()
        image, text, scale = towers(images[local], texts[local])
        loss = loss_fn(image, text, scale, PIDS[local])
        loss.backward()
        grads = {k: p.grad.clone() for k, p in towers.module.named_parameters() if p.grad is not None}
        results[name] = {"loss": loss.detach(), "grads": grads}
    return results


class KeyEncoder(nn.Module):
    """A module holding a MoCo queue, pushed in forward as VAL-PAT does, so that DDP's
    per-forward broadcast of rank 0's buffers is part of the test."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.project = nn.Linear(3, 4)
        self.queue = FeatureQueue(size=16, dim=4)

    def forward(self, x):
        key = self.project(x)
        self.queue.push(key.detach())
        return key.square().sum()


def queue_inputs(step, rank):
    return torch.randn(3, 3, generator=torch.Generator().manual_seed(100 * step + rank))


def _uneven_on_rank(rank):
    towers = nn.parallel.DistributedDataParallel(Towers())
    images, texts = global_inputs()
    local = slice(0, 4) if rank == 0 else slice(4, 7)        # 4 rows and 3 rows
    image, text, scale = towers(images[local], texts[local])
    loss = infonce_loss(image, text, scale, PIDS[local])
    # DDP averages over 2 ranks; a global loss's gradient reaches each rank's rows in full.
    loss.backward()
    return {"loss": loss.detach(), "grad": towers.module.image.weight.grad.clone()}


def _queue_on_rank(rank):
    encoder = nn.parallel.DistributedDataParallel(KeyEncoder())
    for step in range(2):
        encoder(queue_inputs(step, rank)).backward()    # no optimiser: the keys stay computable
    poisoned = queue_inputs(2, rank)
    if rank == 1:
        poisoned[0, 0] = float("nan")
    encoder(poisoned).backward()                        # a NaN key on one rank: neither enqueues
    return {"keys": encoder.module.queue.keys.clone(), "pointer": int(encoder.module.queue.pointer)}


def _checks_on_rank(rank):
    # One pair of processes runs every check: starting them costs more than the checks.
    return {"losses": _losses_on_rank(rank), "uneven": _uneven_on_rank(rank), "queue": _queue_on_rank(rank)}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return run_on_two_ranks(_checks_on_rank, tmp_path_factory.mktemp("ranks"))


def test_every_contrastive_loss_and_its_gradients_equal_one_process_on_the_global_batch(two_ranks):
    ranks = [r["losses"] for r in two_ranks]
    images, texts = global_inputs()
    for name, loss_fn in LOSSES.items():
        towers = Towers()
        image, text, scale = towers(images, texts)
        loss = loss_fn(image, text, scale, PIDS)
        loss.backward()
        for rank, result in enumerate(ranks):
            got = result[name]
            torch.testing.assert_close(got["loss"], loss.detach(), msg=f"{name} value on rank {rank}")
            for key, param in towers.named_parameters():
                if param.grad is None or not param.grad.any():
                    assert key not in got["grads"] or not got["grads"][key].any(), (name, key)
                    continue
                torch.testing.assert_close(got["grads"][key], param.grad, rtol=1e-5, atol=1e-6,
                                           msg=f"{name}: gradient of {key} on rank {rank}")


def test_the_gather_takes_ranks_with_different_batch_sizes(two_ranks):
    ranks = [r["uneven"] for r in two_ranks]
    images, texts = global_inputs()
    towers = Towers()
    image, text, scale = towers(images[:7], texts[:7])
    loss = infonce_loss(image, text, scale, PIDS[:7])
    loss.backward()
    for result in ranks:
        torch.testing.assert_close(result["loss"], loss.detach())
        torch.testing.assert_close(result["grad"], towers.image.weight.grad, rtol=1e-5, atol=1e-6)


def test_the_moco_queue_holds_every_ranks_finite_keys_in_rank_order_on_every_rank(two_ranks):
    ranks = [r["queue"] for r in two_ranks]
    reference = KeyEncoder()
    with torch.no_grad():
        pushed = torch.cat([reference.project(queue_inputs(step, rank)) for step in range(2) for rank in range(2)])
    expected = reference.queue.keys.clone()
    expected[:12] = torch.nn.functional.normalize(pushed, dim=1)
    for result in ranks:
        assert result["pointer"] == 12
        torch.testing.assert_close(result["keys"], expected)
    assert torch.equal(ranks[0]["keys"], ranks[1]["keys"])


NAN_RUN = textwrap.dedent('''
    import os, sys
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from personvl.training.optim import OptimConfig
    from personvl.training.task import TrainingTask
    from personvl.training.trainer import TrainerConfig, build_trainer

    out, steps, nan_step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batches = torch.load(os.path.join(out, "batches.pt"))

    class Regression(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.head = nn.Linear(4, 1)
        def forward(self, batch, progress, step=0):
            loss = ((self.head(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
            if step == nan_step and torch.distributed.get_rank() == 1:
                loss = loss * float("nan")
            return {"loss": loss}
        def parameter_groups(self):
            return [{"params": self.head.parameters()}]

    class Halves(pl.LightningDataModule):
        def train_dataloader(self):
            rank = self.trainer.global_rank
            return DataLoader([{k: v[4 * rank:4 * rank + 4] for k, v in b.items()} for b in batches], batch_size=None)

    task = TrainingTask(Regression(), OptimConfig(name="adamw", lr=0.05, weight_decay=0.1, warmup_steps=2),
                        total_steps=steps, max_nonfinite_in_row=3)
    trainer = build_trainer(TrainerConfig(max_steps=steps, accelerator="cpu", devices=2, strategy="ddp",
                                          progress_bar=False, checkpoint_every_n_steps=steps), out)
    trainer.fit(task, datamodule=Halves())
    torch.save({"head": task.method.head.state_dict(), "steps": trainer.global_step,
                "nonfinite": task.nonfinite_total}, os.path.join(out, f"rank{trainer.global_rank}.pt"))
''')


def test_a_nan_on_one_rank_is_skipped_by_both_and_training_goes_on(tmp_path):
    from personvl.training.optim import OptimConfig, build_optimizer, warmup_cosine

    steps, nan_step = 6, 2
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        batches.append({"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(8, generator=g)})
    torch.save(batches, tmp_path / "batches.pt")
    script = tmp_path / "nan_run.py"
    script.write_text(NAN_RUN)
    result = subprocess.run([sys.executable, str(script), str(tmp_path), str(steps), str(nan_step)], capture_output=True,
                            text=True, timeout=TIMEOUT_S, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["steps"] for r in ranks] == [steps, steps]
    assert [r["nonfinite"] for r in ranks] == [1, 1]
    for key in ranks[0]["head"]:
        assert torch.equal(ranks[0]["head"][key], ranks[1]["head"][key]), key

    # One process on the global batches, leaving the NaN step out (its schedule step still counts).
    torch.manual_seed(0)
    head = nn.Linear(4, 1)
    optimizer = build_optimizer([{"params": head.parameters()}], OptimConfig(name="adamw", lr=0.05, weight_decay=0.1,
                                                                             warmup_steps=2))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, 2))
    for step, batch in enumerate(batches):
        if step != nan_step:
            optimizer.zero_grad()
            ((head(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean().backward()
            optimizer.step()
        schedule.step()
    for key, value in head.state_dict().items():
        torch.testing.assert_close(ranks[0]["head"][key], value, rtol=1e-5, atol=1e-6, msg=key)
