import numpy as np
import pytest

from personvl.evaluation import NoMatchWarning, ranking_metrics


def test_hand_computed_retrieval_with_ties_ordered_by_gallery_index():
    # gallery pids:     1    2    1    3
    similarity = np.array([[0.5, 0.9, 0.5, 0.1],    # query pid 1: order g1(2) g0(1) g2(1) g3 -> matches at ranks 2, 3
                           [0.2, 0.2, 0.2, 0.2]])   # query pid 3: all tied -> index order, match at rank 4
    m = ranking_metrics(similarity, np.array([1, 3]), np.array([1, 2, 1, 3]))
    ap_first = (1 / 2 + 2 / 3) / 2
    ap_second = 1 / 4
    assert m["R1"] == 0.0
    assert m["R5"] == 100.0
    assert m["mAP"] == pytest.approx((ap_first + ap_second) / 2 * 100)
    assert m["mINP"] == pytest.approx((2 / 3 + 1 / 4) / 2 * 100)
    assert m["cmc"][:4] == [0.0, 50.0, 50.0, 100.0]


def test_same_identity_same_camera_is_removed_and_matchless_queries_skipped():
    similarity = np.array([[0.9, 0.8, 0.1],
                           [0.3, 0.2, 0.1]])
    m = ranking_metrics(similarity, np.array([1, 9]), np.array([1, 2, 1]),
                        query_camids=np.array([0, 0]), gallery_camids=np.array([0, 1, 1]))
    # query 0: g0 (same pid, same cam) removed -> g1 (wrong), g2 (match) => rank 2
    assert m["valid_queries"] == 1
    assert m["R1"] == 0.0 and m["cmc"][1] == 100.0
    assert m["mAP"] == pytest.approx(50.0)


def test_no_valid_query_gives_nan_not_a_division_error():
    with pytest.warns(NoMatchWarning):
        m = ranking_metrics(np.ones((1, 2)), np.array([5]), np.array([1, 2]))
    assert m["valid_queries"] == 0 and np.isnan(m["mAP"])
