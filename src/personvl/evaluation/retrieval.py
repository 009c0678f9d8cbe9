"""Text-to-image person retrieval and image re-ID metrics from features.

Both compute distances a chunk of queries at a time on the chosen device, within
``memory_budget`` bytes, and find the ranks of the matches exactly (see
:mod:`personvl.evaluation.ranking`); ties in distance are ordered by gallery index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from personvl.errors import UsageError
from personvl.evaluation.distances import PairwiseDistances, check_metric
from personvl.evaluation.inputs import (DEFAULT_MEMORY_BUDGET, as_features, as_labels, check_max_rank,
                                        check_memory_budget, check_same_width, resolve_device, rows_per_chunk)
from personvl.evaluation.ranking import BYTES_PER_ITEM, MAX_ROWS_PER_CHUNK, rank_by_identity, stable_top_k


@dataclass(frozen=True)
class RerankSettings:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) with the usual parameters."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


def _prepare(query_features: Any, gallery_features: Any, query_pids: Any, gallery_pids: Any,
             device: str | torch.device | None, memory_budget: int, max_rank: int):
    check_memory_budget(memory_budget)
    check_max_rank(max_rank)
    device = resolve_device(device, query_features, gallery_features)
    query = as_features(query_features, "query_features", device)
    gallery = as_features(gallery_features, "gallery_features", device, dtype=query.dtype)
    check_same_width(query, "query_features", gallery, "gallery_features")
    query_pids = as_labels(query_pids, "query_pids", query.shape[0], "query_features", device)
    gallery_pids = as_labels(gallery_pids, "gallery_pids", gallery.shape[0], "gallery_features", device)
    return device, query, gallery, query_pids, gallery_pids


def retrieval_metrics(query_features: Any, gallery_features: Any, query_pids: Any, gallery_pids: Any, *,
                      max_rank: int = 10, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                      device: str | torch.device | None = None) -> dict[str, Any]:
    """Text-to-image retrieval: R1/R5/R10/mAP/mINP in percent, and the CMC curve.

    Cosine similarity of every query (caption) against every gallery image; an image matches
    a query when it has the query's identity; no camera filtering. Queries whose identity is
    absent from the gallery are skipped (``valid_queries`` counts the others).
    """
    device, query, gallery, query_pids, gallery_pids = _prepare(
        query_features, gallery_features, query_pids, gallery_pids, device, memory_budget, max_rank)
    distances = PairwiseDistances(query, gallery, "cosine")
    step = rows_per_chunk(memory_budget, BYTES_PER_ITEM * gallery.shape[0], MAX_ROWS_PER_CHUNK)
    return rank_by_identity(distances.ranking_rows, query_pids, gallery_pids, None, None, max_rank, step)


def reid_metrics(query_features: Any, gallery_features: Any, query_pids: Any, gallery_pids: Any,
                 query_camids: Any, gallery_camids: Any, metric: str = "cosine", max_rank: int = 50,
                 rerank: bool | RerankSettings = False, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 device: str | torch.device | None = None) -> dict[str, Any]:
    """Image re-ID with the Market-1501 protocol: R1/R5/R10/mAP/mINP in percent and the CMC curve.

    For each query, gallery images with the query's identity *and* camera are removed; queries
    left without a match are skipped; AP is the non-interpolated mean of the precision at each
    match. ``metric`` is ``"cosine"`` or ``"euclidean"``; ``rerank=True`` (or a
    :class:`RerankSettings`) ranks by the k-reciprocal re-ranked distance instead. Gallery
    distractors (e.g. Market's pid 0) are ordinary non-matching items; junk images (pid -1)
    should be dropped before, as the dataset readers do.
    """
    check_metric(metric)
    device, query, gallery, query_pids, gallery_pids = _prepare(
        query_features, gallery_features, query_pids, gallery_pids, device, memory_budget, max_rank)
    if (query_camids is None) != (gallery_camids is None):
        raise UsageError("query_camids and gallery_camids must be given together")
    if query_camids is not None:
        query_camids = as_labels(query_camids, "query_camids", query.shape[0], "query_features", device)
        gallery_camids = as_labels(gallery_camids, "gallery_camids", gallery.shape[0], "gallery_features", device)
    step = rows_per_chunk(memory_budget, BYTES_PER_ITEM * gallery.shape[0], MAX_ROWS_PER_CHUNK)
    if rerank:
        from personvl.evaluation.rerank import KReciprocalReranker

        settings = rerank if isinstance(rerank, RerankSettings) else RerankSettings()
        reranker = KReciprocalReranker(query, gallery, metric, settings.k1, settings.k2, settings.lambda_value,
                                       memory_budget=memory_budget)
        rows = reranker.distance_rows
    else:
        rows = PairwiseDistances(query, gallery, metric).ranking_rows
    return rank_by_identity(rows, query_pids, gallery_pids, query_camids, gallery_camids, max_rank, step)


def ranked_gallery(query_features: Any, gallery_features: Any, query_pids: Any, gallery_pids: Any, k: int = 10,
                   metric: str = "cosine", query_camids: Any = None, gallery_camids: Any = None, *,
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, device: str | torch.device | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each query's first ``k`` gallery items in the protocol's order (ties by gallery index)
    and whether each one matches: ``(indices, correct)``, both (queries x k), for the ranking
    grids. With cameras, items of the query's identity and camera are left out, as in
    :func:`reid_metrics`."""
    check_metric(metric)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k must be a positive integer, got {k!r}")
    device, query, gallery, query_pids, gallery_pids = _prepare(
        query_features, gallery_features, query_pids, gallery_pids, device, memory_budget, k)
    cameras = query_camids is not None and gallery_camids is not None
    if cameras:
        query_camids = as_labels(query_camids, "query_camids", query.shape[0], "query_features", device)
        gallery_camids = as_labels(gallery_camids, "gallery_camids", gallery.shape[0], "gallery_features", device)
    distances = PairwiseDistances(query, gallery, metric)
    step = rows_per_chunk(memory_budget, BYTES_PER_ITEM * gallery.shape[0], MAX_ROWS_PER_CHUNK)
    indices, correct = [], []
    for start in range(0, query.shape[0], step):
        stop = min(query.shape[0], start + step)
        rows = distances.ranking_rows(start, stop)
        same = gallery_pids[None, :] == query_pids[start:stop, None]
        if cameras:
            rows.masked_fill_(same & (gallery_camids[None, :] == query_camids[start:stop, None]), float("inf"))
        top = stable_top_k(rows, k)
        indices.append(top.cpu().numpy())
        correct.append(same.gather(1, top).cpu().numpy())
    return np.concatenate(indices), np.concatenate(correct)
