"""Checkpoints that are never half-written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same directory, flushes it to disk and
    renames it into place, so a kill at any moment leaves either the old file or the new one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        # Our own checkpoints hold optimiser state and loop progress: plain containers that
        # weights_only loading accepts, so nothing in the file can run code.
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
