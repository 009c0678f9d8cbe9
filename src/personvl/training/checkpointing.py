"""Checkpoints and run files that are never half-written."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO


def temporary_path(target: Path) -> Path:
    """Where an atomic write of ``target`` goes first: a hidden file beside it, on the same
    file system, so that the rename into place is atomic."""
    return target.with_name(f".{target.name}.tmp")


def write_text_atomically(target: str | os.PathLike, text: str) -> None:
    """Write ``target`` so that a reader, or a kill at any moment, finds the old file or the new one."""
    target = Path(target)
    tmp = temporary_path(target)
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, target)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same directory, flushes it to disk and
    renames it into place, so a kill at any moment leaves either the old file or the new one
    (and, at worst, the temporary file, which the next run in the directory removes)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(target)
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        # Our own checkpoints hold optimiser state and loop progress: plain containers that
        # weights_only loading accepts, so nothing in the file can run code.
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class ContinuedMetricsWriter(ExperimentWriter):
    """Lightning's CSV metrics writer, except that a run resumed in the same folder continues its
    ``metrics.csv`` (Lightning's deletes it). The rows of the steps that the resumed run trains
    again, the ones the stopped run took after its last checkpoint, give way to their new rows,
    so the file reads as if the run had never stopped. Every rewrite is atomic."""

    def __init__(self, log_dir: str) -> None:
        self.earlier: list[dict[str, str]] | None = None
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        # Called by Lightning's constructor, which would delete the file here.
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.earlier = list(reader)
                self.metrics_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        if self.earlier is None or not self.metrics:
            super().save()
            return
        resumed_at = min(int(row["step"]) for row in self.metrics)
        kept = [row for row in self.earlier if not (row.get("step") or "").isdigit() or int(row["step"]) < resumed_at]
        self._record_new_keys()
        self._write_all([*kept, *self.metrics])
        self.earlier, self.metrics = None, []

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        self._write_all(rows)

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomically(self.metrics_file_path, text.getvalue())


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSV logger writing through ``ContinuedMetricsWriter``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuedMetricsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedMetricsWriter(log_dir=self.log_dir)
        return self._experiment
