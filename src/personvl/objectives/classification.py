"""Identity and attribute classification, and metric learning for re-ID."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def id_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Identity cross-entropy with label smoothing (the strong re-ID baseline uses 0.1)."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def positive_ratio_weights(labels: torch.Tensor, positive_ratio: torch.Tensor) -> torch.Tensor:
    """Per-element weights for imbalanced attributes: ``exp(1 - r)`` on positives and ``exp(r)``
    on negatives, ``r`` the attribute's positive ratio in the training set (rare positives
    weigh more)."""
    ratio = positive_ratio.to(labels.dtype).view(1, -1)
    return torch.where(labels > 0.5, torch.exp(1.0 - ratio), torch.exp(ratio))


def attribute_bce_loss(logits: torch.Tensor, labels: torch.Tensor,
                       positive_ratio: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-attribute binary cross-entropy, optionally weighted by ``positive_ratio_weights``."""
    labels = labels.to(logits.dtype)
    weight = positive_ratio_weights(labels, positive_ratio) if positive_ratio is not None else None
    return F.binary_cross_entropy_with_logits(logits, labels, weight=weight)


def batch_hard_triplet_loss(embeddings: torch.Tensor, pids: torch.Tensor, margin: float = 0.3,
                            normalize: bool = False) -> torch.Tensor:
    """For each anchor, the farthest same-identity sample against the closest other identity
    (Euclidean distance); anchors with no positive or no negative in the batch are left out."""
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
    distances = torch.cdist(embeddings, embeddings).clamp_min(1e-12)
    same = pids.view(-1, 1) == pids.view(1, -1)
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    positives = same & ~eye
    negatives = ~same
    valid = positives.any(dim=1) & negatives.any(dim=1)
    if not valid.any():
        return embeddings.sum() * 0.0
    hardest_positive = distances.masked_fill(~positives, float("-inf")).max(dim=1).values
    hardest_negative = distances.masked_fill(~negatives, float("inf")).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin)[valid].mean()


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy of class scores [B, C, H, W] against label maps [B, H, W];
    pixels labelled ``ignore_index`` (outside the annotation, padding) do not count."""
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)
