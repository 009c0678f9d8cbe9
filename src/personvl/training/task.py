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
    groups (with per-module ``lr_scale``). Non-finite losses skip the step and are counted; too
    many in a row stop training with a message."""

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
        if not torch.isfinite(total):
            self.nonfinite_in_row += 1
            self.nonfinite_total += 1
            self.log("train/nonfinite_steps", float(self.nonfinite_total))
            if self.nonfinite_in_row >= self.max_nonfinite_in_row:
                raise PersonvlError(
                    f"training stopped: the loss was not finite for {self.nonfinite_in_row} steps in a row "
                    f"(step {self.global_step}); lower the learning rate or check the data")
            return None  # Lightning skips the optimiser step
        self.nonfinite_in_row = 0
        batch_size = _batch_size(batch)
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=batch_size)
        return total

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
