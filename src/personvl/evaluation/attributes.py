"""Pedestrian attribute recognition metrics (the PA-100K / PETA / RAP protocol).

An attribute is predicted present when its probability exceeds ``threshold`` (0.5: a sigmoid
output above one half).

- label-based ``mA``: mean over attributes of (TP/P + TN/N) / 2;
- instance-based, per image then averaged: ``accuracy`` = |pred AND gt| / |pred OR gt|,
  ``precision`` = |pred AND gt| / |pred|, ``recall`` = |pred AND gt| / |gt|;
- ``F1`` = 2 P R / (P + R) of the averaged precision and recall.

Denominators carry the reference code's eps (1e-20), so an attribute without positive (or
negative) examples contributes 0 to that half of its mean accuracy, and an image with nothing
predicted and nothing labelled scores 0; a warning names such attributes. Only counts are
kept, so any number of batches streams through :class:`AttributeCounts` in constant memory.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

from personvl.errors import UsageError

EPS = 1e-20


class AttributeWarning(UserWarning):
    """An attribute has no positive or no negative example, so its mA half is 0 by convention."""


def _as_2d(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{name} must hold numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise UsageError(f"{name} must be a non-empty 2-D array (images x attributes), got shape {array.shape}")
    return array


class AttributeCounts:
    """Running per-attribute and per-image counts from which every attribute metric follows."""

    def __init__(self, threshold: float = 0.5, attribute_names: Sequence[str] | None = None):
        self.threshold = float(threshold)
        self.attribute_names = list(attribute_names) if attribute_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.true_positive = self.positive = self.true_negative = self.negative = None
        self.images = 0
        self.accuracy_sum = self.precision_sum = self.recall_sum = 0.0

    def add(self, probabilities: Any, labels: Any) -> None:
        probabilities = _as_2d(probabilities, "probabilities")
        labels = _as_2d(labels, "labels")
        if probabilities.shape != labels.shape:
            raise UsageError(f"labels has shape {labels.shape} but probabilities has shape {probabilities.shape}")
        if not np.isfinite(probabilities).all():
            raise UsageError("probabilities contains NaN or infinite values")
        if not np.isin(labels, (0, 1)).all():
            raise UsageError("labels must be 0 or 1")
        width = probabilities.shape[1]
        if self.positive is None:
            if self.attribute_names is not None and len(self.attribute_names) != width:
                raise UsageError(f"attribute_names has {len(self.attribute_names)} names but there are {width} attributes")
            self.true_positive, self.positive, self.true_negative, self.negative = (
                np.zeros(width, dtype=np.int64) for _ in range(4))
        elif width != self.positive.shape[0]:
            raise UsageError(f"probabilities has {width} attributes, earlier batches had {self.positive.shape[0]}")
        predicted = probabilities > self.threshold
        truth = labels == 1
        self.true_positive += (predicted & truth).sum(0)
        self.positive += truth.sum(0)
        self.true_negative += (~predicted & ~truth).sum(0)
        self.negative += (~truth).sum(0)
        intersection = (predicted & truth).sum(1).astype(np.float64)
        union = (predicted | truth).sum(1)
        self.accuracy_sum += float((intersection / (union + EPS)).sum())
        self.precision_sum += float((intersection / (predicted.sum(1) + EPS)).sum())
        self.recall_sum += float((intersection / (truth.sum(1) + EPS)).sum())
        self.images += probabilities.shape[0]

    def metrics(self) -> dict[str, Any]:
        if self.images == 0:
            raise UsageError("no images were given to the attribute metrics")
        positive_recall = self.true_positive / (self.positive + EPS)
        negative_recall = self.true_negative / (self.negative + EPS)
        balanced = (positive_recall + negative_recall) / 2
        names = self.attribute_names or [f"attribute_{i}" for i in range(self.positive.shape[0])]
        lacking = [name for name, p, n in zip(names, self.positive, self.negative) if p == 0 or n == 0]
        if lacking:
            warnings.warn(f"attributes without positive or negative examples (mA half counted as 0): "
                          f"{', '.join(lacking)}", AttributeWarning, stacklevel=3)
        precision = self.precision_sum / self.images
        recall = self.recall_sum / self.images
        return {
            "mA": float(balanced.mean() * 100),
            "accuracy": float(self.accuracy_sum / self.images * 100),
            "precision": float(precision * 100),
            "recall": float(recall * 100),
            "F1": float(2 * precision * recall / (precision + recall + EPS) * 100),
            "attribute_names": names,
            "per_attribute_mA": [float(v * 100) for v in balanced],
            "per_attribute_accuracy": [float(v) for v in (self.true_positive + self.true_negative)
                                       / (self.positive + self.negative) * 100],
            "images": self.images,
        }


def attribute_metrics(probabilities: Any, labels: Any, threshold: float = 0.5,
                      attribute_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``mA``, ``accuracy``, ``precision``, ``recall``, ``F1`` in percent, plus
    ``per_attribute_accuracy`` ((TP + TN) / all), ``per_attribute_mA`` and ``attribute_names``.

    ``probabilities`` and ``labels`` are (images x attributes); labels are 0 or 1.
    """
    counts = AttributeCounts(threshold, attribute_names)
    counts.add(probabilities, labels)
    return counts.metrics()
