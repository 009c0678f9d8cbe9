"""k-reciprocal re-ranking against a direct implementation of the classic formulation."""

import numpy as np
import pytest
import torch

from personvl import UsageError
from personvl.evaluation import RerankSettings, k_reciprocal_distances, ranking_metrics, reid_metrics
from personvl.evaluation.distances import PairwiseDistances


def classic_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al.'s published re-ranking, dense, loop by loop."""
    original_dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                                    np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    for i in range(all_num):
        forward = initial_rank[i, :k1 + 1]
        backward = initial_rank[forward, :k1 + 1]
        k_reciprocal = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            candidate_forward = initial_rank[candidate, :int(np.around(k1 / 2.0)) + 1]
            candidate_backward = initial_rank[candidate_forward, :int(np.around(k1 / 2.0)) + 1]
            candidate_reciprocal = candidate_forward[np.where(candidate_backward == candidate)[0]]
            if len(np.intersect1d(candidate_reciprocal, k_reciprocal)) > 2.0 / 3 * len(candidate_reciprocal):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num]
    if k2 != 1:
        V = np.stack([np.mean(V[initial_rank[i, :k2], :], axis=0) for i in range(all_num)])
    inverted = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros((1, all_num), dtype=np.float32)
        non_zero = np.where(V[i, :] != 0)[0]
        for k in non_zero:
            temp_min[0, inverted[k]] += np.minimum(V[i, k], V[inverted[k], k])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def clustered(rng, identities, items, width=12, spread=0.6):
    centres = rng.standard_normal((identities, width))
    pids = rng.integers(0, identities, items)
    return (centres[pids] + spread * rng.standard_normal((items, width))).astype(np.float32), pids


def classic_on_our_distances(query, gallery, metric, **parameters):
    every = torch.from_numpy(np.concatenate([query, gallery]))
    full = PairwiseDistances(every, every, metric).distance_rows(0, every.shape[0]).numpy()
    full = (full + full.T) / 2                      # the classic assumes a symmetric matrix
    q = query.shape[0]
    return classic_re_ranking(full[:q, q:], full[:q, :q], full[q:, q:], **parameters)


@pytest.mark.parametrize("metric, k1, k2, lambda_value", [
    ("euclidean", 20, 6, 0.3), ("cosine", 20, 6, 0.3), ("euclidean", 5, 1, 0.5), ("cosine", 7, 3, 0.1)])
def test_sparse_rerank_equals_the_classic_formula(metric, k1, k2, lambda_value):
    rng = np.random.default_rng(k1 + k2)
    query, _ = clustered(rng, 12, 25)
    gallery, _ = clustered(rng, 12, 110)
    expected = classic_on_our_distances(query, gallery, metric, k1=k1, k2=k2, lambda_value=lambda_value)
    ours = k_reciprocal_distances(query, gallery, metric, k1=k1, k2=k2, lambda_value=lambda_value).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)
    # Re-ranking changes the order: it is not the original distance in disguise.
    original = PairwiseDistances(torch.from_numpy(query), torch.from_numpy(gallery), metric).distance_rows(0, 25)
    assert (np.argsort(ours, 1)[:, :5] != np.argsort(original.numpy(), 1)[:, :5]).any()


def test_reid_metrics_with_rerank_rank_by_the_reranked_distance():
    rng = np.random.default_rng(7)
    query, query_pids = clustered(rng, 15, 30)
    gallery, gallery_pids = clustered(rng, 15, 150)
    query_camids, gallery_camids = rng.integers(0, 3, 30), rng.integers(0, 3, 150)
    expected = classic_on_our_distances(query, gallery, "euclidean")
    metrics = reid_metrics(query, gallery, query_pids, gallery_pids, query_camids, gallery_camids,
                           metric="euclidean", rerank=True)
    reference = ranking_metrics(-expected, query_pids, gallery_pids, query_camids, gallery_camids)
    for key in ("R1", "R5", "R10", "mAP", "mINP", "valid_queries"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-9)
    plain = reid_metrics(query, gallery, query_pids, gallery_pids, query_camids, gallery_camids, metric="euclidean")
    assert metrics["mAP"] != plain["mAP"]


def test_rerank_is_the_same_under_a_tiny_memory_budget():
    rng = np.random.default_rng(8)
    query, _ = clustered(rng, 10, 20)
    gallery, _ = clustered(rng, 10, 90)
    roomy = k_reciprocal_distances(query, gallery, "cosine", k1=6, k2=3)
    tight = k_reciprocal_distances(query, gallery, "cosine", k1=6, k2=3, memory_budget=20_000)
    # Matrix products over blocks of different heights may round the last bit differently.
    torch.testing.assert_close(tight, roomy, rtol=0, atol=5e-7)
    assert torch.equal(torch.argsort(tight, dim=1, stable=True), torch.argsort(roomy, dim=1, stable=True))


def test_rerank_parameters_are_checked():
    features = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(UsageError, match=r"k1 \+ 1 \(21\) exceeds the number of queries plus gallery items \(12\)"):
        k_reciprocal_distances(features, features)
    with pytest.raises(UsageError, match="k2 must be at most k1 \\+ 1"):
        k_reciprocal_distances(features, features, k1=3, k2=5)
    with pytest.raises(UsageError, match="lambda_value must be between 0 and 1"):
        reid_metrics(features, features, [0] * 6, [0] * 6, [0] * 6, [1] * 6,
                     rerank=RerankSettings(k1=3, k2=2, lambda_value=2.0))
