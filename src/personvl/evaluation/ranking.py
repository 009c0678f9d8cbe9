"""Ranking metrics shared by text-to-image retrieval and re-ID: CMC, mAP, mINP.

Ties in similarity are ordered by gallery index (a stable sort), so every figure is
deterministic and matches a full stable argsort of each query's row.
"""

from __future__ import annotations

import numpy as np


def ranking_metrics(
    similarity: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_camids: np.ndarray | None = None,
    gallery_camids: np.ndarray | None = None,
    max_rank: int = 50,
) -> dict[str, float | list[float] | int]:
    """Metrics in percent from a (queries x gallery) similarity matrix (higher = closer).

    With cameras given, the Market-1501 protocol applies: gallery items sharing both identity
    and camera with the query are removed, and queries left without a match are skipped
    (``valid_queries`` says how many counted).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    query_pids = np.asarray(query_pids)
    gallery_pids = np.asarray(gallery_pids)
    num_gallery = similarity.shape[1]
    max_rank = min(max_rank, num_gallery)
    cmc_hits = np.zeros(max_rank, dtype=np.int64)
    average_precisions, inverse_negative_penalties = [], []
    for q in range(similarity.shape[0]):
        order = np.argsort(-similarity[q], kind="stable")
        matches = gallery_pids[order] == query_pids[q]
        if query_camids is not None and gallery_camids is not None:
            keep = ~(matches & (np.asarray(gallery_camids)[order] == query_camids[q]))
            matches = matches[keep]
        match_ranks = np.flatnonzero(matches)  # 0-based positions of the matches
        if match_ranks.size == 0:
            continue
        if match_ranks[0] < max_rank:
            cmc_hits[match_ranks[0]:] += 1
        precision_at_matches = np.arange(1, match_ranks.size + 1) / (match_ranks + 1)
        average_precisions.append(precision_at_matches.mean())
        inverse_negative_penalties.append(match_ranks.size / (match_ranks[-1] + 1))
    valid = len(average_precisions)
    if valid == 0:
        nan = float("nan")
        return {"R1": nan, "R5": nan, "R10": nan, "mAP": nan, "mINP": nan, "cmc": [], "valid_queries": 0}
    cmc = cmc_hits / valid * 100.0
    return {
        "R1": float(cmc[0]),
        "R5": float(cmc[min(4, max_rank - 1)]),
        "R10": float(cmc[min(9, max_rank - 1)]),
        "mAP": float(np.mean(average_precisions) * 100.0),
        "mINP": float(np.mean(inverse_negative_penalties) * 100.0),
        "cmc": [float(v) for v in cmc],
        "valid_queries": valid,
    }
