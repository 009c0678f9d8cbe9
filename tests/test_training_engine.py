"""The training engine on a toy method: atomic checkpoints, kill-and-resume equality, the
non-finite guard, the learning-rate schedule and per-module learning rates."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from personvl.errors import UsageError
from personvl.training.optim import OptimConfig, build_optimizer, warmup_cosine

TOY = textwrap.dedent('''
    import os, sys, time
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import BatchSampler, Dataset, RandomSampler
    from personvl.training.optim import OptimConfig
    from personvl.training.resumable import ResumableDataLoader
    from personvl.training.task import TrainingTask
    from personvl.training.trainer import TrainerConfig, build_trainer, latest_checkpoint

    class Points(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(32, 4, generator=g)
            self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(32, generator=g)
        def __len__(self): return 32
        def __getitem__(self, i): return {"x": self.x[i], "y": self.y[i]}

    class EpochSampler(RandomSampler):
        def __init__(self, data): super().__init__(data); self.epoch = 0
        def set_epoch(self, epoch): self.epoch = epoch
        def __iter__(self):
            return iter(torch.randperm(len(self.data_source), generator=torch.Generator().manual_seed(self.epoch)).tolist())

    class Toy(nn.Module):
        def __init__(self):
            super().__init__(); self.head = nn.Linear(4, 1); self.nan_at = int(os.environ.get("NAN_FROM", "-1"))
            self.calls = 0
        def forward(self, batch, progress, step=0):
            self.calls += 1
            loss = ((self.head(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
            if 0 <= self.nan_at <= self.calls:
                loss = loss * float("nan")
            return {"loss": loss, "mse": loss.detach()}
        def parameter_groups(self): return [{"params": self.head.parameters()}]

    out, steps, stop_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    class WaitForKill(pl.Callback):
        """Says when the run reaches ``stop_after`` and waits there for the test's SIGKILL."""
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == stop_after:
                print("waiting", flush=True)
                time.sleep(300)

    pl.seed_everything(0, workers=True)
    data = Points()
    loader = ResumableDataLoader(data, BatchSampler(EpochSampler(data), batch_size=4, drop_last=True))
    task = TrainingTask(Toy(), OptimConfig(name="sgd", lr=0.05, warmup_steps=2), total_steps=steps, max_nonfinite_in_row=3)
    trainer = build_trainer(TrainerConfig(max_steps=steps, checkpoint_every_n_steps=3, keep_last_checkpoints=2,
                                          accelerator="cpu", progress_bar=False, log_every_n_steps=1), out)
    if stop_after > 0:
        trainer.callbacks.append(WaitForKill())
    trainer.fit(task, loader, ckpt_path=latest_checkpoint(out))
    torch.save(task.method.head.state_dict(), os.path.join(out, "final.pt"))
''')


def run_toy(tmp_path: Path, out: Path, steps: int, env=None):
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    return subprocess.run([sys.executable, str(script), str(out), str(steps), "-1"],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def kill_toy_at(tmp_path: Path, out: Path, steps: int, stop_after: int) -> int:
    """Runs the toy until it reports step ``stop_after``, then SIGKILLs it from here."""
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    run = subprocess.Popen([sys.executable, str(script), str(out), str(steps), str(stop_after)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in run.stdout:
            if line.strip() == "waiting":
                os.kill(run.pid, signal.SIGKILL)
                break
        return run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight = tmp_path / "straight"
    assert run_toy(tmp_path, straight, 14).returncode == 0
    resumed = tmp_path / "resumed"
    killed = kill_toy_at(tmp_path, resumed, 14, stop_after=10)   # 8 batches per epoch: dies mid-epoch 2
    assert killed == -signal.SIGKILL
    checkpoints = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and not any(name.endswith(".tmp") for name in checkpoints)
    assert len([c for c in checkpoints if c.startswith("step")]) == 2   # keeps the last K
    finished = run_toy(tmp_path, resumed, 14)
    assert finished.returncode == 0, finished.stderr[-2000:]
    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(resumed / "final.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (resumed / "logs" / "metrics.csv").exists()


def test_non_finite_losses_stop_training_with_a_message(tmp_path):
    result = run_toy(tmp_path, tmp_path / "nan", 20, env={"NAN_FROM": "2"})
    assert result.returncode != 0
    assert "loss was not finite for 3 steps in a row" in result.stderr


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_per_module_learning_rates_and_frozen_parameters():
    image, text = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    text.weight.requires_grad_(False)
    optimizer = build_optimizer([{"params": image.parameters(), "name": "image"},
                                 {"params": text.parameters(), "lr_scale": 0.1, "name": "text"}],
                                OptimConfig(name="adan", lr=2e-3))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2e-3, 2e-4])
    assert len(optimizer.param_groups[1]["params"]) == 1   # the frozen weight is left out
    with pytest.raises(UsageError, match="unknown optimiser 'lamb'"):
        build_optimizer([{"params": image.parameters()}], OptimConfig(name="lamb"))


def test_a_step_bounded_run_shows_no_negative_epoch_total(tmp_path):
    from personvl.training.trainer import TrainerConfig, build_trainer

    trainer = build_trainer(TrainerConfig(max_steps=10, accelerator="cpu"), tmp_path)
    bar = trainer.progress_bar_callback
    assert trainer.max_epochs == -1 and bar is not None
    bar._trainer = trainer          # what Lightning sets when fitting starts
    assert bar._get_train_description(3).strip() == "Epoch 3"     # Lightning's own bar says "Epoch 3/-2"
    quiet = build_trainer(TrainerConfig(max_steps=10, accelerator="cpu", progress_bar=False), tmp_path / "quiet")
    assert quiet.progress_bar_callback is None


def test_the_progress_bar_redraws_at_most_every_interval_and_at_an_epochs_end(monkeypatch):
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import RichProgressBar

    import personvl.training.trainer as engine

    drawn = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, *args: drawn.append(args[-1]))
    clock = iter([0.0, 0.1, 0.2, 0.6, 0.7, 0.8, 1.0, 1.05, 1.1])
    monkeypatch.setattr(engine.time, "monotonic", lambda: next(clock))
    bar = engine.StepBoundedProgressBar(min_interval=0.5)
    trainer = SimpleNamespace(num_training_batches=6, max_steps=9, global_step=0)
    for step in range(9):
        trainer.global_step = step + 1          # Lightning counts the step before the hook
        bar.on_train_batch_end(trainer, None, None, None, step % 6)
    # 0.0 drawn; 0.1 and 0.2 too soon; 0.6 drawn; 0.7 too soon; 0.8 ends the epoch; 1.0 and 1.05
    # are too soon after it; 1.1 is the run's last step.
    assert drawn == [0, 3, 5, 2]


def test_lightnings_hosted_logger_advertisement_is_dropped_and_its_other_notices_kept(tmp_path):
    import logging

    from personvl.training.trainer import TrainerConfig, _WithoutAdvertisements, build_trainer

    build_trainer(TrainerConfig(max_steps=3, accelerator="cpu", progress_bar=False), tmp_path)
    build_trainer(TrainerConfig(max_steps=3, accelerator="cpu", progress_bar=False), tmp_path / "again")
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    ours = [f for f in logger.filters if isinstance(f, _WithoutAdvertisements)]
    assert len(ours) == 1                                    # installed once however many trainers

    def record(message):
        return logging.LogRecord(logger.name, logging.INFO, __file__, 1, message, None, None)

    assert not logger.filter(record("💡 Tip: ... try installing [litlogger](https://pypi.org/project/litlogger/)"))
    assert logger.filter(record("GPU available: False, used: False"))


class _RegressionWithNaN(torch.nn.Module):
    """Linear regression whose loss is NaN on the given calls (micro-batches) of the run."""

    def __init__(self, nan_calls=()):
        super().__init__()
        self.head = torch.nn.Linear(4, 1)
        self.nan_calls, self.calls = set(nan_calls), 0

    def forward(self, batch, progress, step=0):
        loss = ((self.head(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
        if self.calls in self.nan_calls:
            loss = loss * float("nan")
        self.calls += 1
        return {"loss": loss}

    def parameter_groups(self):
        return [{"params": self.head.parameters()}]


def _regression_batches(count, size=4):
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        x = torch.randn(size, 4, generator=g)
        batches.append({"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(size, generator=g)})
    return batches


@pytest.mark.parametrize("optimiser, accumulate", [("adamw", 1), ("adan", 1), ("adamw", 2)])
def test_a_nan_step_moves_neither_the_weights_nor_the_optimiser(tmp_path, optimiser, accumulate):
    """Training through a NaN step ends where plain torch ends when it leaves that step out
    (the schedule still advances); with weight decay a step on a zero gradient would not."""
    from torch.utils.data import DataLoader

    from personvl.training.task import TrainingTask
    from personvl.training.trainer import TrainerConfig, build_trainer

    steps, nan_step = 6, 2
    config = OptimConfig(name=optimiser, lr=0.05, weight_decay=0.1, warmup_steps=2)
    batches = _regression_batches(steps * accumulate)
    torch.manual_seed(0)
    method = _RegressionWithNaN(nan_calls={nan_step * accumulate})   # the step's first micro-batch
    initial = {k: v.clone() for k, v in method.state_dict().items()}
    task = TrainingTask(method, config, total_steps=steps, max_nonfinite_in_row=3)
    trainer = build_trainer(TrainerConfig(max_steps=steps, accelerator="cpu", progress_bar=False, log_every_n_steps=1,
                                          accumulate_grad_batches=accumulate, checkpoint_every_n_steps=steps), tmp_path)
    trainer.fit(task, DataLoader(batches, batch_size=None))
    assert trainer.global_step == steps and task.nonfinite_total == 1 and task.nonfinite_in_row == 0
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["nonfinite"] == {"in_row": 0, "total": 1}

    reference = _RegressionWithNaN()
    reference.load_state_dict(initial)
    optimizer = build_optimizer(reference.parameter_groups(), config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, 2))
    for step in range(steps):
        if step != nan_step:
            optimizer.zero_grad()
            for batch in batches[step * accumulate:(step + 1) * accumulate]:
                (reference(batch, 0.0)["loss"] / accumulate).backward()
            optimizer.step()
        schedule.step()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(method.state_dict()[key], value, rtol=1e-6, atol=1e-7, msg=key)
    trained = task.trainer.optimizers[0]
    if optimiser == "adan":
        assert trained.param_groups[0]["step"] == optimizer.param_groups[0]["step"] == steps - 1
    else:
        assert all(int(s["step"]) == steps - 1 for s in trained.state.values())
