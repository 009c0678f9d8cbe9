"""The LightningModule that trains any method: a module whose forward returns named losses."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from personvl.errors import PersonvlError
from personvl.training.optim import OptimConfig, build_optimizer, warmup_cosine
from personvl.training.resumable import ResumableDataLoader, ResumableStreamLoader


class TrainingTask(pl.LightningModule):
    """Trains ``method``: ``method(batch, progress)`` returns a dict of named losses whose
    ``"loss"`` entry is the weighted total; ``method.parameter_groups()`` gives the optimiser
    groups (with per-module ``lr_scale``).

    A non-finite loss skips the optimiser step, on every rank together: the ranks agree through
    an all-reduce (one non-finite rank is enough), each step still runs its backward pass (DDP's
    gradient all-reduce and the losses' gathers are collectives every rank must join; Lightning
    refuses a ``None`` loss under DDP), and before the optimiser step every gradient is dropped,
    so no parameter and no optimiser state moves. With gradient accumulation one non-finite
    micro-batch skips its whole step. A skipped step still counts as a step of ``max_steps``
    and of the learning-rate schedule, like a step whose batch was consumed. Skipped steps are
    counted (``nonfinite_total``, kept in checkpoints); ``max_nonfinite_in_row`` of them in a
    row stop training with a message."""

    def __init__(self, method: torch.nn.Module, optim: OptimConfig, total_steps: int, max_nonfinite_in_row: int = 10,
                 seed: int = 0):
        super().__init__()
        self.seed = seed
        self.method = method
        self.optim_config = optim
        self.total_steps = max(1, total_steps)
        self.max_nonfinite_in_row = max_nonfinite_in_row
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self._skip_step = False     # a micro-batch of the current optimiser step was not finite

    def training_step(self, batch: Any, batch_idx: int):
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        if isinstance(loader, (ResumableDataLoader, ResumableStreamLoader)):
            loader.batches_trained += 1
        # Lightning's checkpoints do not hold the random state; seeding every step from the step
        # number makes dropout (and any draw in the method) the same after a resume.
        torch.manual_seed(self.seed * 1_000_003 + self.global_step * 7919 + self.global_rank)
        progress = min(1.0, self.global_step / self.total_steps)
        losses = self.method(batch, progress=progress, step=self.global_step)
        total = losses["loss"]
        if self._any_rank(not bool(torch.isfinite(total))):
            self._skip_step = True
            return total   # its gradients are dropped in on_before_optimizer_step
        batch_size = _batch_size(batch)
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=batch_size)
        return total

    def _any_rank(self, decision: bool) -> bool:
        if self._trainer is None:
            return decision
        return self.trainer.strategy.reduce_boolean_decision(decision, all=False)

    def on_before_optimizer_step(self, optimizer) -> None:
        if not self._skip_step:
            self.nonfinite_in_row = 0
            return
        # Dropped, not zeroed: optimisers pass over a parameter without a gradient, whereas a
        # zero gradient would still move it (weight decay, momentum) and advance its state.
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total))
        if self.nonfinite_in_row >= self.max_nonfinite_in_row:
            raise PersonvlError(
                f"training stopped: the loss was not finite for {self.nonfinite_in_row} steps in a row "
                f"(step {self.global_step}); lower the learning rate or check the data")

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        # Some optimisers advance a per-group counter even when no parameter has a gradient
        # (timm's Adan counts its bias-correction step per group): a skipped step puts it back.
        before = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self._skip_step:
            for group, saved in zip(optimizer.param_groups, before):
                for key in [key for key in group if key != "params" and key not in saved]:
                    del group[key]
                group.update(saved)
        self._skip_step = False

    def configure_optimizers(self):
        optimizer = build_optimizer(self.method.parameter_groups(), self.optim_config)
        config = self.optim_config
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.total_steps, config.warmup_steps, config.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["nonfinite"] = {"in_row": self.nonfinite_in_row, "total": self.nonfinite_total}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counts = checkpoint.get("nonfinite", {})
        self.nonfinite_in_row = counts.get("in_row", 0)
        self.nonfinite_total = counts.get("total", 0)


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return int(value.shape[0])
            if isinstance(value, (list, tuple)):
                return len(value)
    return None
