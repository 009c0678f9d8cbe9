"""Building the Lightning Trainer of a run from its config."""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from personvl.errors import PersonvlError
from personvl.training.checkpointing import (AtomicCheckpointIO, ContinuedCSVLogger, ContinuedMetricsWriter,
                                             temporary_path)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


@dataclass
class TrainerConfig:
    max_steps: int = 200
    accelerator: str = "auto"          # cpu | gpu | auto
    devices: int = 1                   # processes per node (GPUs, or CPU processes with ddp)
    num_nodes: int = 1
    strategy: str = "auto"             # auto | ddp | ddp_spawn | fsdp ...
    precision: str = "32-true"         # 32-true | bf16-mixed | 16-mixed
    accumulate_grad_batches: int = 1
    gradient_clip_val: float = 0.0
    checkpoint_every_n_steps: int = 100
    keep_last_checkpoints: int = 2
    log_every_n_steps: int = 10
    max_nonfinite_in_row: int = 10
    seed: int = 0
    deterministic: bool = True
    progress_bar: bool = True


class StepBoundedProgressBar(RichProgressBar):
    """Lightning's rich bar without its epoch total (a run bounded by steps has none, and
    Lightning would title the bar "Epoch 3/-2"), drawn at most every ``min_interval`` seconds.

    Lightning's bar redraws after every batch, reading every logged metric: about 10 ms a step,
    a twentieth of a tiny CPU step. The bar shows the absolute step count, so a skipped
    redraw loses nothing; the last batch of an epoch and of the run are always drawn."""

    def __init__(self, min_interval: float = 0.5) -> None:
        super().__init__()
        self.min_interval = min_interval
        self._drawn_at = float("-inf")

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"Epoch {current_epoch}"
        return super()._get_train_description(current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        last = batch_idx + 1 >= trainer.num_training_batches or 0 < trainer.max_steps <= trainer.global_step
        if last or now - self._drawn_at >= self.min_interval:
            self._drawn_at = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def _progress_bars(enabled: bool) -> list[pl.Callback]:
    if not enabled:
        return []
    try:
        return [StepBoundedProgressBar()]
    except ModuleNotFoundError:     # no rich package: Lightning falls back to its tqdm bar
        return []


class _WithoutAdvertisements(logging.Filter):
    """Drops Lightning's notice recommending a hosted logging service on every run: our runs
    already log to CSV and TensorBoard beside their outputs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_advertisements() -> None:
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _WithoutAdvertisements) for f in logger.filters):
        logger.addFilter(_WithoutAdvertisements())


def build_trainer(config: TrainerConfig, out_dir: str | Path) -> pl.Trainer:
    """A Trainer writing checkpoints (atomic, the last K kept, plus ``last.ckpt``), CSV and
    TensorBoard logs under ``out_dir``."""
    out_dir = Path(out_dir)
    _quiet_advertisements()
    checkpoints = ModelCheckpoint(
        dirpath=out_dir / CHECKPOINT_DIR,
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=max(1, config.checkpoint_every_n_steps),
        save_top_k=max(1, config.keep_last_checkpoints),
        monitor="step",
        mode="max",
        save_last=True,
        # A run resumed from an earlier checkpoint than the newest file (killed between writing
        # stepN.ckpt and last.ckpt) trains the same steps again: their checkpoints replace the
        # files of the same name instead of adding "-v1" copies that no later step deletes.
        enable_version_counter=False,
    )
    loggers = [ContinuedCSVLogger(out_dir, name="logs", version="", flush_logs_every_n_steps=config.log_every_n_steps),
               TensorBoardLogger(out_dir, name="tensorboard", version="")]
    return pl.Trainer(
        default_root_dir=out_dir,
        max_steps=config.max_steps,
        max_epochs=-1,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        accumulate_grad_batches=config.accumulate_grad_batches,
        gradient_clip_val=config.gradient_clip_val or None,
        log_every_n_steps=config.log_every_n_steps,
        deterministic=config.deterministic,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        callbacks=[checkpoints, *_progress_bars(config.progress_bar)],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # identity samplers split the ranks themselves
    )


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    path = Path(out_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path if path.exists() else None


def remove_partial_writes(out_dir: str | os.PathLike, summary_file: str = "summary.json") -> list[Path]:
    """Delete the temporary files that a run killed mid-write left in ``out_dir``; returns them.

    Only the names our atomic writers give: a checkpoint's or best weights' temporary file in
    ``checkpoints/``, an exported model folder's weights or config, the metrics log and the
    summary. The file each of them was replacing is whole (the old one, or none)."""
    from personvl.models.weight_formats import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE

    out = Path(out_dir)
    partial = [*(out / CHECKPOINT_DIR).glob(".*.tmp"), temporary_path(out / summary_file)]
    for name in (MODEL_WEIGHTS_FILE, MODEL_CONFIG_FILE):
        partial += out.glob(f"*/{name}.tmp")
    partial += out.glob(f"*/{temporary_path(Path(ContinuedMetricsWriter.NAME_METRICS_FILE))}")
    removed = [path for path in partial if path.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)   # every DDP rank cleans up before training starts
    return removed


def start_run(config: Any, resume: bool, summary_file: str = "summary.json") -> tuple[Path, Path | None]:
    """Check ``config.output_dir`` against ``resume``, remove what a killed run left half-written
    and write the resolved config beside the run; returns the run directory and the checkpoint to
    resume from (None: the run starts from its first step).

    A directory holding a run is never silently overwritten. Resuming a run that was stopped
    before its first checkpoint starts it again from the beginning, with a warning."""
    from personvl.config import RESOLVED_CONFIG_NAME, save_config

    out = Path(config.output_dir)
    checkpoint = latest_checkpoint(out)
    started = (out / RESOLVED_CONFIG_NAME).is_file()
    if checkpoint is None and resume and (not started or (out / summary_file).exists()):
        raise PersonvlError(f"nothing to resume: no {out}/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}")
    if checkpoint is None and (out / summary_file).exists():
        raise PersonvlError(f"{out} already holds a finished run; choose another output_dir")
    if checkpoint is not None and not resume:
        raise PersonvlError(f"{out} already holds a run; pass --resume to continue it or choose another output_dir")
    if checkpoint is None and resume:
        warnings.warn(f"{out} holds no checkpoint yet (the run stopped before its first one): "
                      f"it starts again from its first step", stacklevel=2)
    remove_partial_writes(out, summary_file)
    save_config(config, out)
    return out, checkpoint
