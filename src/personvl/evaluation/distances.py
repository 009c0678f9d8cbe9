"""Query-to-gallery distances, computed a chunk of query rows at a time.

Two metrics, both as torchreid computes them:

- ``"cosine"``: features are L2-normalised; the distance is ``1 - cos``. Rows for *ranking* are
  the negated similarity ``-cos`` (negation is exact, so the order is that of the similarity
  itself, ties included).
- ``"euclidean"``: the squared Euclidean distance ``|q|^2 + |g|^2 - 2 q.g`` (the same order as
  the Euclidean distance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from personvl.errors import UsageError

METRICS = ("cosine", "euclidean")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UsageError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


class PairwiseDistances:
    """Distances between query rows and all gallery rows of one metric."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, metric: str):
        self.metric = check_metric(metric)
        if metric == "cosine":
            self.query = F.normalize(query, dim=1)
            gallery = F.normalize(gallery, dim=1)
            # -(q . g) computed as q . (-g): the products are exact negations, so each sum is too.
            self.negated_gallery_t = (-gallery).T
            self.gallery = gallery
        else:
            self.query, self.gallery = query, gallery
            self.query_sq = (query * query).sum(1)
            self.gallery_sq = (gallery * gallery).sum(1)

    @property
    def num_gallery(self) -> int:
        return self.gallery.shape[0]

    def ranking_rows(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, gallery) ranking keys, lower first: ``-cos`` or the squared distance.
        A fresh tensor that the caller may overwrite."""
        query = self.query[start:stop]
        if self.metric == "cosine":
            return query @ self.negated_gallery_t
        out = self.query_sq[start:stop, None] + self.gallery_sq[None, :]
        return out.addmm_(query, self.gallery.T, alpha=-2)

    def distance_rows(self, start: int, stop: int) -> torch.Tensor:
        """The metric's distance itself (``1 - cos`` or the squared distance)."""
        rows = self.ranking_rows(start, stop)
        return rows.add_(1.0) if self.metric == "cosine" else rows

    def pair_distances(self, query_index: torch.Tensor, gallery_index: torch.Tensor) -> torch.Tensor:
        """Distances of the listed (query, gallery) pairs, without a full matrix."""
        query = self.query[query_index]
        gallery = self.gallery[gallery_index]
        dot = (query * gallery).sum(1)
        if self.metric == "cosine":
            return 1.0 - dot
        return self.query_sq[query_index] + self.gallery_sq[gallery_index] - 2.0 * dot
