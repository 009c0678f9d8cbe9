"""Text-to-image and re-ID ranking metrics: hand-computed cases, the tie rule, the fast path
against a full stable argsort, chunking, and bad input."""

import numpy as np
import pytest
import torch

from personvl import UsageError
from personvl.evaluation import NoMatchWarning, ranked_gallery, ranking_metrics, reid_metrics, retrieval_metrics
from personvl.evaluation.ranking import rank_targets, stable_top_k


def argsort_reference(distances, query_pids, gallery_pids, query_camids=None, gallery_camids=None, max_rank=50):
    """The protocol written the obvious way: a full stable argsort of every query's row."""
    average_precisions, inverse_penalties, first_ranks = [], [], []
    for q in range(distances.shape[0]):
        order = np.argsort(distances[q], kind="stable")
        matches = gallery_pids[order] == query_pids[q]
        if query_camids is not None:
            matches = matches[~(matches & (gallery_camids[order] == query_camids[q]))]
        ranks = np.flatnonzero(matches)
        if ranks.size == 0:
            continue
        first_ranks.append(ranks[0])
        average_precisions.append(np.mean(np.arange(1, ranks.size + 1) / (ranks + 1)))
        inverse_penalties.append(ranks.size / (ranks[-1] + 1))
    length = min(max_rank, distances.shape[1])
    cmc = np.array([np.mean(np.array(first_ranks) <= k) * 100 for k in range(length)])
    return {"mAP": np.mean(average_precisions) * 100, "mINP": np.mean(inverse_penalties) * 100,
            "cmc": cmc, "valid_queries": len(first_ranks)}


def assert_same_figures(metrics, reference):
    assert metrics["valid_queries"] == reference["valid_queries"]
    assert metrics["mAP"] == pytest.approx(reference["mAP"], rel=1e-12, abs=1e-12)
    assert metrics["mINP"] == pytest.approx(reference["mINP"], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(metrics["cmc"], reference["cmc"], rtol=0, atol=1e-9)


# --- hand-computed cases --------------------------------------------------------------------

def test_ties_are_ordered_by_gallery_index():
    # One query of identity 1; gallery identities 2 1 2 1 2, every similarity equal except g4.
    similarity = np.array([[0.5, 0.5, 0.5, 0.5, 0.9]])
    metrics = ranking_metrics(similarity, [1], [2, 1, 2, 1, 2])
    # Order: g4 (0.9), then g0 g1 g2 g3 by index -> matches at ranks 3 and 5.
    assert metrics["R1"] == 0.0 and metrics["cmc"][:5] == [0.0, 0.0, 100.0, 100.0, 100.0]
    assert metrics["mAP"] == pytest.approx((1 / 3 + 2 / 5) / 2 * 100)
    assert metrics["mINP"] == pytest.approx(2 / 5 * 100)


def test_reid_removes_same_identity_same_camera_and_keeps_distractors():
    # Query: identity 7, camera 0. Gallery: 7@cam0 (removed), distractor 0@cam1, 7@cam1, 3@cam0.
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]])
    metrics = reid_metrics(query, gallery, [7], [7, 0, 7, 3], [0], [0, 1, 1, 0], metric="euclidean")
    # Distances: g0 0 (removed), g1 0.02, g2 0.13, g3 2 -> the match g2 is second.
    assert metrics["valid_queries"] == 1
    assert metrics["R1"] == 0.0 and metrics["R5"] == 100.0
    assert metrics["mAP"] == pytest.approx(50.0) and metrics["mINP"] == pytest.approx(50.0)
    assert metrics["cmc"] == [0.0, 100.0, 100.0, 100.0]     # as long as the gallery (torchreid)


def test_queries_without_a_match_are_skipped_and_counted():
    similarity = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1]])
    metrics = ranking_metrics(similarity, [1, 9], [1, 2, 1])
    assert metrics["valid_queries"] == 1 and metrics["queries"] == 2
    assert metrics["R1"] == 100.0 and metrics["mAP"] == pytest.approx((1 + 2 / 2) / 2 * 100)


def test_no_query_with_a_match_gives_nan_and_a_warning():
    with pytest.warns(NoMatchWarning, match="no query has a matching gallery item"):
        metrics = retrieval_metrics(np.eye(2), np.eye(2), [5, 6], [1, 2])
    assert metrics["valid_queries"] == 0 and metrics["cmc"] == []
    assert all(np.isnan(metrics[key]) for key in ("R1", "R5", "R10", "mAP", "mINP"))


def test_retrieval_uses_cosine_and_ignores_cameras():
    captions = np.array([[2.0, 0.0], [0.0, 3.0]])
    images = np.array([[0.0, 1.0], [1.0, 0.1], [5.0, 5.0]])
    metrics = retrieval_metrics(captions, images, [1, 2], [2, 1, 1])
    # Caption 0 (identity 1): cosines 0, .995, .707 -> matches g1, g2 at ranks 1, 2: AP 1.
    # Caption 1 (identity 2): cosines 1, .0995, .707 -> match g0 at rank 1.
    assert metrics["R1"] == 100.0 and metrics["mAP"] == pytest.approx(100.0)
    assert metrics["mINP"] == pytest.approx(100.0)


def test_euclidean_and_cosine_can_rank_differently():
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[10.0, 0.0], [0.8, 0.6]])          # g0 same direction but far away
    cosine = reid_metrics(query, gallery, [1], [1, 2], [0], [1, 1], metric="cosine")
    euclidean = reid_metrics(query, gallery, [1], [1, 2], [0], [1, 1], metric="euclidean")
    assert cosine["R1"] == 100.0 and euclidean["R1"] == 0.0


# --- the fast path against a full stable argsort ------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_equals_stable_argsort_with_heavy_ties(dtype):
    rng = np.random.default_rng(0)
    for levels in (2, 7, 1000):
        similarity = rng.integers(0, levels, size=(40, 300)).astype(dtype)
        query_pids, gallery_pids = rng.integers(0, 12, 40), rng.integers(0, 12, 300)
        query_camids, gallery_camids = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
        for cameras in (False, True):
            camids = (query_camids, gallery_camids) if cameras else (None, None)
            metrics = ranking_metrics(similarity, query_pids, gallery_pids, *camids)
            reference = argsort_reference(-similarity, query_pids, gallery_pids, *camids)
            assert_same_figures(metrics, reference)


def test_features_path_equals_stable_argsort_of_the_same_distances():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((30, 16))
    query_pids, gallery_pids = rng.integers(0, 30, 60), rng.integers(0, 30, 500)
    query = (centres[query_pids] + rng.standard_normal((60, 16))).astype(np.float32)
    gallery = (centres[gallery_pids] + rng.standard_normal((500, 16))).astype(np.float32)
    gallery[10:20] = gallery[0]                              # exact duplicates: tied distances
    query_camids, gallery_camids = rng.integers(0, 4, 60), rng.integers(0, 4, 500)
    q, g = torch.from_numpy(query), torch.from_numpy(gallery)
    distances = ((q * q).sum(1)[:, None] + (g * g).sum(1)[None, :]).addmm_(q, g.T, alpha=-2).numpy()
    metrics = reid_metrics(query, gallery, query_pids, gallery_pids, query_camids, gallery_camids, metric="euclidean")
    assert_same_figures(metrics, argsort_reference(distances, query_pids, gallery_pids, query_camids, gallery_camids))
    assert 0 < metrics["mAP"] < 100


def test_rank_targets_counts_items_ahead_exactly():
    rng = np.random.default_rng(2)
    distances = torch.from_numpy(rng.integers(0, 5, size=(8, 50)).astype(np.float32))
    distances[3, 7] = float("inf")                            # left out: ranks after every target
    targets = torch.from_numpy(np.stack([rng.choice(50, 6, replace=False) for _ in range(8)]))
    valid = torch.from_numpy(rng.random((8, 6)) < 0.8)
    ranks, columns, count = rank_targets(distances.clone(), targets, valid)
    for row in range(8):
        order = np.argsort(distances[row].numpy(), kind="stable")
        wanted = [t for t in order if t in set(targets[row][valid[row]].tolist())]
        assert columns[row, :count[row]].tolist() == wanted
        assert ranks[row, :count[row]].tolist() == [int(np.flatnonzero(order == t)[0]) for t in wanted]


def test_chunked_and_unchunked_give_identical_figures():
    rng = np.random.default_rng(3)
    query, gallery = rng.standard_normal((70, 8)), rng.standard_normal((400, 8))
    pids = rng.integers(0, 20, 70), rng.integers(0, 20, 400)
    camids = rng.integers(0, 3, 70), rng.integers(0, 3, 400)
    whole = reid_metrics(query, gallery, *pids, *camids, memory_budget=1 << 30)
    for budget in (1, 20_000, 200_000):                      # 1 row, a few rows, tens of rows
        assert reid_metrics(query, gallery, *pids, *camids, memory_budget=budget) == whole


def test_torch_tensors_and_numpy_arrays_give_the_same_figures():
    rng = np.random.default_rng(4)
    query, gallery = rng.standard_normal((10, 4)).astype(np.float32), rng.standard_normal((30, 4)).astype(np.float32)
    pids = rng.integers(0, 5, 10), rng.integers(0, 5, 30)
    from_numpy = retrieval_metrics(query, gallery, *pids)
    from_torch = retrieval_metrics(torch.from_numpy(query), torch.from_numpy(gallery),
                                   torch.from_numpy(pids[0]), torch.from_numpy(pids[1]))
    assert from_numpy == from_torch


def test_stable_top_k_is_the_head_of_a_stable_argsort():
    rng = np.random.default_rng(5)
    values = rng.integers(0, 4, size=(20, 40)).astype(np.float32)
    top = stable_top_k(torch.from_numpy(values), 7).numpy()
    np.testing.assert_array_equal(top, np.argsort(values, axis=1, kind="stable")[:, :7])


def test_ranked_gallery_lists_the_protocol_order_and_correctness():
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]])
    indices, correct = ranked_gallery(query, gallery, [7], [7, 0, 7, 3], k=2, metric="euclidean",
                                      query_camids=[0], gallery_camids=[0, 1, 1, 0])
    assert indices.tolist() == [[1, 2]] and correct.tolist() == [[False, True]]


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, message", [
    (dict(query_pids=[1, 2, 3]), "query_pids has 3 entries but query_features has 2 rows"),
    (dict(gallery_features=np.zeros((0, 4))), "gallery_features is empty"),
    (dict(query_features=np.array([[np.nan, 0, 0, 0], [0, 0, 0, 0]])), "query_features contains NaN"),
    (dict(gallery_features=np.full((3, 4), np.inf)), "gallery_features contains NaN or infinite"),
    (dict(query_features=np.array([["a"] * 4] * 2)), "query_features must hold numbers"),
    (dict(gallery_pids=np.array([1.0, 2.0, 3.0])), "gallery_pids must be integers"),
    (dict(gallery_features=np.ones((3, 5))), "gallery_features has 5 dimensions but query_features has 4"),
    (dict(query_camids=[0, 0, 1]), "query_camids has 3 entries"),
    (dict(metric="manhattan"), "metric must be one of cosine, euclidean"),
    (dict(max_rank=0), "max_rank must be a positive integer"),
    (dict(memory_budget=-5), "memory_budget must be a positive number of bytes"),
    (dict(query_camids=None), "query_camids and gallery_camids must be given together"),
])
def test_bad_input_names_the_argument(arguments, message):
    call = dict(query_features=np.ones((2, 4)), gallery_features=np.ones((3, 4)), query_pids=[1, 2],
                gallery_pids=[1, 2, 3], query_camids=[0, 1], gallery_camids=[1, 0, 1])
    call.update(arguments)
    with pytest.raises(UsageError, match=message):
        reid_metrics(**call)


def test_similarity_matrix_input_is_checked_too():
    with pytest.raises(UsageError, match="similarity must be 2-D"):
        ranking_metrics(np.ones(3), [1], [1, 2, 3])
    with pytest.raises(UsageError, match=r"gallery_pids has 2 entries but similarity \(columns\) has 3"):
        ranking_metrics(np.ones((1, 3)), [1], [1, 2])


def test_torch_thread_count_is_restored_after_ranking():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        reid_metrics(np.eye(3), np.eye(3), [1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 1, 1])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
