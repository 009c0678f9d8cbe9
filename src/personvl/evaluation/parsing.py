"""Human parsing metrics from a confusion matrix accumulated over the whole set.

IoU of class c = TP / (TP + FP + FN) over all pixels of all images; ``mIoU`` is their mean over
the part classes including background. A class absent from both predictions and targets has
no IoU (NaN in ``per_class_iou``) and is left out of the mean; on LIP's validation set every
class occurs, so the figure equals the CE2P/SCHP one. Pixels whose target is ``ignore_index``
are not counted.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from personvl.errors import UsageError


def _as_label_map(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    else:
        array = np.asarray(value)
        if array.dtype.kind not in "biu":
            raise UsageError(f"{name} must be integer class maps, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise UsageError(f"{name} must be integer class maps, got dtype {tensor.dtype}")
    return tensor.to(torch.int64)


class ConfusionMatrix:
    """(target class x predicted class) pixel counts, accumulated batch by batch."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.counts.zero_()

    def add(self, predictions: Any, targets: Any) -> None:
        """One prediction and target map (H x W) or a batch of them (N x H x W)."""
        predictions = _as_label_map(predictions, "predictions")
        targets = _as_label_map(targets, "targets")
        if predictions.shape != targets.shape:
            raise UsageError(f"targets has shape {tuple(targets.shape)} but predictions has "
                             f"shape {tuple(predictions.shape)}")
        if predictions.numel() == 0:
            raise UsageError("predictions is empty")
        counted = targets != self.ignore_index if self.ignore_index is not None else torch.ones_like(targets, dtype=torch.bool)
        targets, predictions = targets[counted], predictions[counted].to(targets.device)
        for name, values in (("targets", targets), ("predictions", predictions)):
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= self.num_classes):
                raise UsageError(f"{name} has class {int(values.min()) if int(values.min()) < 0 else int(values.max())} "
                                 f"outside 0..{self.num_classes - 1} (and not ignore_index {self.ignore_index})")
        pairs = torch.bincount(targets * self.num_classes + predictions, minlength=self.num_classes**2)
        self.counts += pairs.view(self.num_classes, self.num_classes).cpu()

    def metrics(self) -> dict[str, Any]:
        counts = self.counts.double()
        if counts.sum() == 0:
            raise UsageError("no labelled pixels were given to the parsing metrics")
        true_positive = counts.diag()
        union = counts.sum(0) + counts.sum(1) - true_positive
        iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))
        present = ~torch.isnan(iou)
        return {
            "mIoU": float(iou[present].mean() * 100),
            "pixel_accuracy": float(true_positive.sum() / counts.sum() * 100),
            "per_class_iou": [float(v * 100) for v in iou],
        }


def parsing_metrics(predictions: Any | Sequence[Any], targets: Any | Sequence[Any], num_classes: int,
                    ignore_index: int | None = 255) -> dict[str, Any]:
    """``mIoU``, ``pixel_accuracy`` and ``per_class_iou`` in percent.

    ``predictions`` and ``targets``: class maps, either arrays (N x H x W or H x W) or
    sequences of per-image maps of any sizes; the confusion matrix is accumulated over all.
    """
    matrix = ConfusionMatrix(num_classes, ignore_index)
    if isinstance(predictions, (list, tuple)) or isinstance(targets, (list, tuple)):
        if not isinstance(predictions, (list, tuple)) or not isinstance(targets, (list, tuple)):
            raise UsageError("predictions and targets must both be sequences of maps, or both arrays")
        if len(predictions) != len(targets):
            raise UsageError(f"targets has {len(targets)} maps but predictions has {len(predictions)}")
        if not predictions:
            raise UsageError("predictions is empty")
        for prediction, target in zip(predictions, targets):
            matrix.add(prediction, target)
    else:
        matrix.add(predictions, targets)
    return matrix.metrics()
